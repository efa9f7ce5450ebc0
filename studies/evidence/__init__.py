"""The evidence about a study: what it found, read from its trial records.

Summary (terminal), report (HTML), plots, the conclusions drawn (lr boundary, rediscovery), the
tables both views print, importances, multi-seed validation, the lr probe, the margin to the lr edge and
the fp16 headroom (the seed's question answered first), and the exported preset.
Everything here reads ``studies.record.TrialRecord``; nothing here runs a study's trials.
"""
