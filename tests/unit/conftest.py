"""Fixtures shared by the unit tests."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from rerankd.jobs import JobStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def redis_url(private_redis_url: str) -> str:
    return private_redis_url


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[JobStore]:
    """A job store under a prefix of its own on the private Redis; its keys deleted afterwards."""
    prefix = f"test-{secrets.token_hex(4)}"
    st = JobStore.from_url(redis_url, prefix)
    yield st
    keys = [k async for k in st.r.scan_iter(match=f"{prefix}*")]
    if keys:
        await st.r.delete(*keys)
    await st.aclose()
