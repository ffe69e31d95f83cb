"""The HTTP API (FastAPI): Cohere-compatible rerank, async jobs, batches, health, metrics."""

from rerankd.api.app import create_app

__all__ = ["create_app"]
