"""The execution room: running a study's trials and the evidence commands' long runs, anywhere.

Storage (and its retries through a lost database), the trial runner, local workers and their
supervisor, the one worker-process mechanism for long runs, completion and exit codes, the live view,
and the commands that open a study and run something on it. It reads study definitions and writes
records; the evidence room reads those records and never imports this one.
"""
