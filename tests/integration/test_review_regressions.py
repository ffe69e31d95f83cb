"""Regressions found by the issue-12 review, on the real test stack."""

from __future__ import annotations

import re
import socket

import httpx
import pytest

from tests.support.engines import SLEEP_ENGINE
from tests.support.stack import Service

pytestmark = pytest.mark.integration


def test_healthz_shows_tenants_opaque_worker_ids(service: Service) -> None:
    """A tenant's key sees workers as ``wk_...`` ids (as in job records), never ``hostname:pid``."""
    body = httpx.get(f"{service.url}/healthz", headers=service.headers("bob"), timeout=10).json()
    ids = [w["id"] for w in body["workers"]]
    assert ids and all(re.fullmatch(r"wk_[0-9a-f]{12}", i) for i in ids), ids
    assert socket.gethostname() not in str(body) and ":" not in "".join(ids)
    queues = httpx.get(f"{service.url}/v1/queues", headers=service.headers("bob"), timeout=10).json()
    assert {w["id"] for w in queues["workers"]} == set(ids)  # the same ids everywhere
    # The test stack still finds a worker by pid (LocalStack.wait_workers matches the opaque id).
    service.wait_workers(["slow"], pids=[service.workers["slow"].pid], timeout=30)


def test_a_job_popped_by_a_worker_killed_before_it_recorded_the_message_still_runs(service: Service) -> None:
    """SIGSTOP stands for a worker the scheduler has not run yet (a loaded machine): Redis answers
    its pending BRPOP with the new job's message, then the worker is killed before kombu records it
    in ``unacked``.  The reaper's queued index (``LeaseReaper.sweep_lost``) finds the job."""
    import os
    import signal
    import time

    model = "review-popped"  # an alias of the test stack, for this test alone
    worker = service.start_worker("review-popped", model, SLEEP_ENGINE, concurrency=1)
    job: dict[str, str] = {}
    try:
        service.wait_workers([model], pids=[worker.pid], timeout=120)
        time.sleep(1.0)  # idle, blocked in BRPOP
        os.kill(worker.pid, signal.SIGSTOP)
        body = {"model": model, "query": {"text": "q sleep=0.1 please"}, "candidates": [{"docid": "a", "text": "t"}]}
        job = httpx.post(f"{service.url}/v1/jobs", json=body, headers=service.headers(), timeout=30).json()
        time.sleep(0.5)  # Redis has handed the message to the stopped worker's socket
        service.kill_worker("review-popped")
        service.start_worker("review-popped", model, SLEEP_ENGINE, concurrency=1)
        # With the stack's lease (2 s) and reaper (1 s), 10 s + 30 s covers every recovery path.
        done = service.wait_job(job["id"], timeout=40)
        assert done["status"] == "succeeded", done
    finally:
        if job:  # not to count against alice's jobs in flight
            httpx.post(f"{service.url}/v1/jobs/{job['id']}/cancel", headers=service.headers(), timeout=30)
        if "review-popped" in service.workers:
            service.kill_worker("review-popped")
