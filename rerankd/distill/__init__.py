"""Distillation runs: teach (the teacher over query files), train (students), eval.

See :mod:`rerankd.distill.command` (``rerankd distill``) and docs/distill.md.
"""
