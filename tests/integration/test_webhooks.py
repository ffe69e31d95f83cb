"""Webhooks on real parts: Redis, worker processes (whose dispatchers deliver), the API, and a real
HTTP receiver on 127.0.0.1 (allowlisted by ``RERANKD_WEBHOOK_ALLOW_HOSTS`` in conftest.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import redis
from standardwebhooks import Webhook, WebhookVerificationError

from rerankd.config import Settings
from rerankd.jobs import JobStore
from rerankd.jobs.outbox import Outbox
from rerankd.types import RerankRequest
from rerankd.webhooks.dispatcher import Dispatcher
from tests.support.engines import SLEEP_ENGINE
from tests.support.stack import ALICE_WEBHOOK_SECRETS, WEBHOOK_SECRET, Service

pytestmark = pytest.mark.integration


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int = 0  # what the receiver answered (0: still stalled)


@dataclass
class Receiver:
    """A real HTTP server; ``answer(n)`` gives the status of the n-th delivery (1-based), or
    ``(event, status)``: wait for the event, then answer ``status``."""

    url: str
    answer: Callable[[int], int | tuple[threading.Event, int]]
    seen: list[Delivery] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, n: int, timeout: float = 60.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while len(self.seen) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.seen) >= n, f"{len(self.seen)} deliveries, expected {n}"
        return self.seen


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver(url="", answer=lambda n: 204)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            d = Delivery({k.lower(): v for k, v in self.headers.items()}, body)
            with rec.lock:
                rec.seen.append(d)
                what = rec.answer(len(rec.seen))
            if isinstance(what, tuple):
                what[0].wait(60)
                what = what[1]
            d.status = what
            self.send_response(what)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield rec
    server.shutdown()


def _job(**kw: Any) -> dict[str, Any]:
    cands = [{"docid": f"d{i}", "text": f"passage {i}"} for i in range(3)]
    return {"query": {"text": "q"}, "candidates": cands, "model": "slow", **kw}


def _submit(service: Service, owner: str = "alice", **kw: Any) -> dict[str, Any]:
    resp = httpx.post(f"{service.url}/v1/jobs", json=_job(**kw), headers=service.headers(owner), timeout=30)
    assert resp.status_code == 202, resp.text
    return dict(resp.json())


def _wait_callback(service: Service, job_id: str, want: str, owner: str = "alice", timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = service.wait_job(job_id, owner)
        if job.get("callback_status") == want or time.monotonic() > deadline:
            assert job.get("callback_status") == want, job
            return job
        time.sleep(0.05)


def test_callback_retrying_then_delivered_signed_with_both_rotation_secrets(
    service: Service, receiver: Receiver
) -> None:
    hold = threading.Event()
    receiver.answer = lambda n: 500 if n == 1 else (hold, 204)
    job = _submit(service, callback_url=receiver.url)
    receiver.wait_for(2)
    seen = _wait_callback(service, job["id"], "retrying")  # the first attempt got a 500
    # the target's answer is never shown: no text of the view holds it (times and scores are numbers,
    # which may hold the digits 500; history lines start with one)
    texts = [h.split(" ", 1)[1] for h in seen["history"]] + _strings({k: v for k, v in seen.items() if k != "history"})
    assert not any("500" in t for t in texts), texts
    hold.set()  # the second attempt now gets its 204
    done = _wait_callback(service, job["id"], "delivered")
    assert done["status"] == "succeeded"
    first, second = receiver.seen[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == f"msg_{job['id']}"
    assert first.body == second.body
    assert len(second.headers["webhook-signature"].split(" ")) == 2
    for secret in ALICE_WEBHOOK_SECRETS:  # a receiver holding either secret verifies
        event = Webhook(secret).verify(second.body, second.headers)
        assert event["type"] == "job.succeeded" and event["data"]["id"] == job["id"]
        assert event["data"]["result"]["ranking"][0]["docid"] == "d0"
    with pytest.raises(WebhookVerificationError):  # the shared fallback is not alice's
        Webhook(WEBHOOK_SECRET).verify(second.body, second.headers)


def test_callback_of_a_key_without_its_own_secret_uses_the_fallback(service: Service, receiver: Receiver) -> None:
    job = _submit(service, owner="bob", callback_url=receiver.url)
    _wait_callback(service, job["id"], "delivered", owner="bob")
    (d,) = receiver.seen
    assert Webhook(WEBHOOK_SECRET).verify(d.body, d.headers)["data"]["id"] == job["id"]
    with pytest.raises(WebhookVerificationError):
        Webhook(ALICE_WEBHOOK_SECRETS[0]).verify(d.body, d.headers)


def test_callback_failed_after_the_retry_schedule(service: Service, receiver: Receiver) -> None:
    receiver.answer = lambda n: 302  # a redirect is not followed: a failure like any other
    job = _submit(service, callback_url=receiver.url)
    done = _wait_callback(service, job["id"], "failed")
    assert len(receiver.seen) == 4  # the first attempt and the three retries of conftest's schedule
    assert {d.headers["webhook-id"] for d in receiver.seen} == {f"msg_{job['id']}"}
    # tenants see the delivery's outcome, not the target's answer (ids and timings may hold "302")
    shown = json.dumps(
        {k: v for k, v in done.items() if k not in ("id", "result", "created_at", "started_at", "finished_at")}
    )
    assert done["callback_status"] == "failed" and "302" not in shown and "HTTP" not in shown


@pytest.mark.parametrize(
    "url",
    [
        "http://127.1:{port}/hook",
        "http://2130706433:{port}/hook",
        "http://0x7f000001:{port}/hook",
        "http://0177.0.0.1:{port}/hook",
        "http://[::1]:{port}/hook",
        "http://[::ffff:127.0.0.1]:{port}/hook",
        "http://localhost:{port}/hook",
        "http://localhost.:{port}/hook",
        "http://0.0.0.0:{port}/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/hook",
        "http://[fd00::1]/hook",
        "http://user:secret@127.0.0.1:{port}/hook",
        "gopher://127.0.0.1:{port}/",
    ],
)
def test_ssrf_callback_urls_are_refused_with_422(service: Service, url: str) -> None:
    resp = httpx.post(
        f"{service.url}/v1/jobs", json=_job(callback_url=url.format(port=9)), headers=service.headers(), timeout=30
    )
    assert resp.status_code == 422, resp.text
    assert resp.json()["message"].startswith("callback_url: "), resp.text


def test_webhook_delivered_once_after_its_worker_is_killed_mid_delivery(service: Service, receiver: Receiver) -> None:
    stall = threading.Event()
    receiver.answer = lambda n: (stall, 503) if n == 1 else 204
    job = _submit(service, callback_url=receiver.url)
    receiver.wait_for(1)
    key = f"{service.prefix}:job:{job['id']}"
    holder = redis.Redis.from_url(service.redis_url, decode_responses=True).hget(key, "callback_holder")
    assert isinstance(holder, str)
    pid = int(holder.rsplit(":", 1)[1])
    name = next(n for n, p in service.workers.items() if p.pid == pid)
    service.kill_worker(name)  # kill -9 while the receiver holds its request
    try:
        stall.set()
        receiver.wait_for(2, timeout=120)  # another dispatcher takes over once the lease runs out
        done = _wait_callback(service, job["id"], "delivered")
    finally:
        _restart(service, name)
    accepted = [d for d in receiver.seen if 200 <= d.status < 300]
    assert len(accepted) == 1 and len(receiver.seen) == 2
    assert {d.headers["webhook-id"] for d in receiver.seen} == {f"msg_{job['id']}"}
    assert Webhook(ALICE_WEBHOOK_SECRETS[1]).verify(accepted[0].body, accepted[0].headers)["data"]["id"] == job["id"]
    assert done["status"] == "succeeded"
    assert any("callback delivered attempt 2" in h for h in done["history"])


def _restart(service: Service, name: str) -> None:
    """Start again a fixture worker killed by a test (other tests' workers are theirs to start)."""
    known = {
        "smollm2": ("smollm2-135m-instruct", "hf", 2),
        "tiny": (service.tiny_model, "hf", 4),
        "slow": ("slow", SLEEP_ENGINE, 4),
    }
    if name in known:
        model, engine, concurrency = known[name]
        new = service.start_worker(name, model, engine, concurrency=concurrency)
        service.wait_workers([model], pids=[new.pid], timeout=240)


def test_outbox_entry_is_written_with_the_terminal_transition_and_survives_a_lost_dispatcher(
    test_redis: str, receiver: Receiver
) -> None:
    """In-process, on the real Redis: a cancelled queued job's callback enters the outbox with its
    transition; a dispatcher that claims it and dies is replaced after its lease."""
    prefix = f"ob{time.monotonic_ns() % 100000}"

    async def run() -> None:
        store = JobStore.from_url(test_redis, prefix)
        outbox = Outbox(store.r, prefix)
        req = RerankRequest.model_validate({"query": {"text": "q"}, "candidates": [{"docid": "a", "text": "t"}]})
        fields = store.job_fields(
            owner="alice",
            model="m",
            queue=f"{prefix}.m",
            request=req,
            deadline_s=10,
            max_attempts=1,
            callback_url=receiver.url,
        )
        await store.create("job_ob1", fields, ttl_s=60)
        assert await outbox.pending() == 0
        assert (await store.cancel("job_ob1", "alice"))[0] == "cancelled"
        assert await outbox.pending() == 1
        lost = await outbox.claim("dead:1", lease_s=0.3, limit=10, max_attempts=3)
        assert [(c.job_id, c.attempt) for c in lost] == [("job_ob1", 1)]
        assert await outbox.claim("other:2", lease_s=5, limit=10, max_attempts=3) == []  # held
        await asyncio.sleep(0.4)
        settings = Settings(webhook_secrets={"alice": [ALICE_WEBHOOK_SECRETS[0]]}, webhook_allow_hosts="127.0.0.1")
        dispatcher = Dispatcher(store, settings, "other:2")
        (c,) = await dispatcher.outbox.claim("other:2", dispatcher.lease_s, 10, dispatcher.max_attempts)
        assert c.attempt == 2
        assert await dispatcher.deliver(c) == "delivered"
        assert not await outbox.complete("job_ob1", "dead:1", 1, "failed")  # too late: not its any more
        record = await store.get("job_ob1")
        assert record is not None and record.callback_status == "delivered"
        assert await outbox.pending() == 0
        # checked again at delivery: a URL the policy refuses now fails without any connection
        port = receiver.url.split(":")[2].split("/")[0]
        fields["callback_url"] = f"http://127.0.0.2:{port}/hook"
        await store.create("job_ob2", fields, ttl_s=60)
        await store.cancel("job_ob2", "alice")
        (c,) = await dispatcher.outbox.claim("other:2", dispatcher.lease_s, 10, dispatcher.max_attempts)
        assert c.job_id == "job_ob2" and await dispatcher.deliver(c) == "failed"
        await store.r.delete(*[k async for k in store.r.scan_iter(match=f"{prefix}:*")])
        await store.aclose()

    asyncio.run(run())
    (d,) = receiver.seen
    event = Webhook(ALICE_WEBHOOK_SECRETS[0]).verify(d.body, d.headers)
    assert event["type"] == "job.cancelled" and event["data"]["status"] == "cancelled"


def _strings(value: Any) -> list[str]:
    """Every string in a JSON value (keys and leaves), numbers left out."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in [k, *_strings(v)]]
    if isinstance(value, list):
        return [t for v in value for t in _strings(v)]
    return []
