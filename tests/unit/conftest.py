"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def redis_url(private_redis_url: str) -> str:
    return private_redis_url
