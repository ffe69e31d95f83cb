"""Interactive slots (rerankd/worker/slots.py) and their setting."""

from __future__ import annotations

import threading
import time

import pytest

from rerankd.config import Settings
from rerankd.worker.slots import BatchSlots


def test_batch_jobs_take_at_most_concurrency_minus_reserved() -> None:
    slots = BatchSlots(concurrency=3, reserved=1, poll_s=0.01)
    assert slots.acquire(lambda: False) and slots.acquire(lambda: False)
    assert slots.running == 2
    asked: list[int] = []

    def upper_waiting() -> bool:
        asked.append(1)
        return len(asked) >= 3

    assert slots.acquire(upper_waiting) is False  # handed back once upper-lane work waits
    assert slots.running == 2 and len(asked) == 3


def test_a_parked_batch_job_runs_when_a_slot_frees() -> None:
    slots = BatchSlots(concurrency=2, reserved=1, poll_s=0.01)
    assert slots.acquire(lambda: False)
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(slots.acquire(lambda: False)))
    t.start()
    time.sleep(0.05)
    assert got == []
    slots.release()
    t.join(5)
    assert got == [True] and slots.running == 1


def test_reserved_must_leave_a_batch_slot() -> None:
    with pytest.raises(ValueError, match=r"interactive slots \(2\) must be below the worker's concurrency \(2\)"):
        BatchSlots(concurrency=2, reserved=2)
    assert BatchSlots(concurrency=1, reserved=0).limit == 1


def test_setting_defaults_and_errors() -> None:
    assert Settings(worker_concurrency=8).reserved_slots == 1
    assert Settings(worker_concurrency=1).reserved_slots == 0  # batches still run on a one-job worker
    assert Settings(worker_concurrency=4, interactive_slots=0).reserved_slots == 0
    with pytest.raises(ValueError, match="RERANKD_INTERACTIVE_SLOTS=4 must be below RERANKD_WORKER_CONCURRENCY=4"):
        Settings(worker_concurrency=4, interactive_slots=4)
