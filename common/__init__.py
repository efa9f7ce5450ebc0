"""What every room shares and no model owns: user errors, the CLIs' one-line error plumbing, devices.

The lowest layer: ``search.py``, ``studies``, ``trainer`` and ``tts_model`` import it; it imports none
of them.
"""
