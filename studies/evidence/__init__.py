"""The evidence about a study: what it found, read from its trial records.

Summary (terminal), report (HTML), plots, the conclusions drawn (lr boundary, rediscovery), the
tables both views print, importances, multi-seed validation, the lr probe and the exported preset.
Everything here reads ``studies.record.TrialRecord``; nothing here runs a study's trials.
"""
