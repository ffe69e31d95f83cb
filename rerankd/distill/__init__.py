"""Distillation runs: teach (the teacher over query files), train (students), eval.

See :mod:`rerankd.cli.distill` (``rerankd distill``) and docs/distill.md.
"""
