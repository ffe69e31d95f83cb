"""The ``rerankd`` command line: one module per command group, assembled in :mod:`.app`.

* :mod:`.reranking`: ``rerank`` (local engine or ``--queue``) and ``submit``.
* :mod:`.data`: ``eval`` and ``export``.
* :mod:`.service`: ``up``.
* :mod:`.models`: ``models list`` and ``models pull``.
* :mod:`.demo`: ``demo`` (its stack: :mod:`rerankd.launchers.demo_stack`).
* :mod:`.doctor`: ``doctor`` (the checks: :mod:`rerankd.doctor`).
* ``calibrate`` (:mod:`rerankd.cli.calibrate`) and ``distill`` (:mod:`rerankd.cli.distill`).
"""

from rerankd.cli.app import app, main
from rerankd.cli.reranking import rerank

__all__ = ["app", "main", "rerank"]
