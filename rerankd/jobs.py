"""The Redis job record, shared by the API and the worker; it is the truth about a job.

One hash per job (``{prefix}:job:{id}``) holds status, owner, request, result, error,
attempts and timestamps; a list beside it (``...:log``) keeps its transitions.  Every
transition is one Lua script, so it is atomic and uses the server's clock:

``queued -> running``      :meth:`JobStore.claim`: a worker increments ``attempts`` and takes
                           a lease (renewed while it runs).  A redelivered message finds the
                           job running under a live lease (``busy``: try later), finished
                           (``done``: drop it) or running under an expired lease (the worker
                           was lost: claim again, or fail once ``max_attempts`` is spent).
``running -> succeeded|failed|cancelled``  :meth:`JobStore.finish`, only by the worker that
                           holds the current attempt, so a job never records two results.
``queued -> cancelled``    :meth:`JobStore.cancel`; a running job gets ``cancel_requested``
                           and a message on the cancel channel; its worker stops it.
``queued -> expired``      a job nobody waits for any more (a synchronous request that
                           timed out) or past its ``expires_at`` when a worker gets it.

Every terminal transition publishes ``"<id> <status>"`` on ``{prefix}:events``.

Metrics are counters and histograms kept in Redis hashes (``{prefix}:m:*``), written by
any process (API replicas, workers) and read back by the API's ``/metrics``; so numbers
are global, whatever the number of processes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis.asyncio as aioredis
from pydantic import BaseModel

from rerankd.types import RerankRequest, RerankResult

__all__ = [
    "ACTIVE",
    "HISTOGRAMS",
    "TERMINAL",
    "ClaimResult",
    "CreateResult",
    "JobRecord",
    "JobStatus",
    "JobStore",
    "MetricsWriter",
    "body_hash",
    "new_id",
]

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled", "expired"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "expired"})
ACTIVE: frozenset[str] = frozenset({"queued", "running"})

ErrorCode = Literal["invalid_request", "deadline_exceeded", "engine_error", "worker_lost", "cancelled", "expired"]


def new_id(kind: str = "job") -> str:
    """A random, URL-safe id such as ``job_3f9c...``."""
    return f"{kind}_{secrets.token_hex(12)}"


def body_hash(body: Any) -> str:
    """sha256 of a JSON value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _f(v: bytes | str | None) -> float | None:
    if v is None or v in (b"", ""):
        return None
    return float(v)


def _s(v: bytes | str | None) -> str | None:
    if v is None:
        return None
    s = v.decode("utf-8") if isinstance(v, bytes) else v
    return s or None


class JobRecord(BaseModel):
    """A job as stored (decoded)."""

    id: str
    status: JobStatus
    owner: str
    kind: str = "job"
    model: str
    queue: str
    strategy: str
    request: RerankRequest | None = None
    result: RerankResult | None = None
    error: str | None = None
    error_code: str | None = None
    attempts: int = 0
    max_attempts: int = 1
    worker: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    expires_at: float | None = None
    deadline_s: float
    cancel_requested: bool = False
    callback_url: str | None = None
    callback_status: str | None = None
    batch_id: str | None = None
    custom_id: str | None = None

    @classmethod
    def from_hash(cls, h: Mapping[bytes, bytes], with_request: bool = True) -> JobRecord:
        d = {k.decode(): v for k, v in h.items()}
        req = _s(d.get("request")) if with_request else None
        res = _s(d.get("result"))
        return cls(
            id=_s(d["id"]) or "",
            status=_s(d["status"]),  # type: ignore[arg-type]
            owner=_s(d.get("owner")) or "",
            kind=_s(d.get("kind")) or "job",
            model=_s(d.get("model")) or "",
            queue=_s(d.get("queue")) or "",
            strategy=_s(d.get("strategy")) or "",
            request=RerankRequest.model_validate_json(req) if req else None,
            result=RerankResult.model_validate_json(res) if res else None,
            error=_s(d.get("error")),
            error_code=_s(d.get("error_code")),
            attempts=int(_f(d.get("attempts")) or 0),
            max_attempts=int(_f(d.get("max_attempts")) or 1),
            worker=_s(d.get("worker")),
            created_at=_f(d.get("created_at")) or 0.0,
            started_at=_f(d.get("started_at")),
            finished_at=_f(d.get("finished_at")),
            expires_at=_f(d.get("expires_at")),
            deadline_s=_f(d.get("deadline_s")) or 0.0,
            cancel_requested=_s(d.get("cancel_requested")) == "1",
            callback_url=_s(d.get("callback_url")),
            callback_status=_s(d.get("callback_status")),
            batch_id=_s(d.get("batch_id")),
            custom_id=_s(d.get("custom_id")),
        )

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def public(self, include_request: bool = False) -> dict[str, Any]:
        """The job as the API shows it."""
        out: dict[str, Any] = {
            "id": self.id,
            "object": "job",
            "status": self.status,
            "model": self.model,
            "strategy": self.strategy,
            "attempts": self.attempts,
            "worker": self.worker,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "cancel_requested": self.cancel_requested,
            "result": self.result.model_dump(mode="json") if self.result is not None else None,
            "error": ({"code": self.error_code, "message": self.error} if self.error is not None else None),
        }
        if self.callback_url is not None:
            out["callback_url"] = self.callback_url
            out["callback_status"] = self.callback_status
        if self.batch_id is not None:
            out["batch_id"] = self.batch_id
            out["custom_id"] = self.custom_id
        if include_request and self.request is not None:
            out["request"] = self.request.model_dump(mode="json")
        return out


@dataclass(frozen=True)
class CreateResult:
    outcome: Literal["created", "existing", "conflict", "full"]
    job_id: str


@dataclass(frozen=True)
class ClaimResult:
    """What a worker got when it tried to claim a job."""

    outcome: Literal["claimed", "busy", "done", "missing", "expired", "exhausted", "cancelled"]
    attempt: int = 0
    retry_in: float = 0.0
    request: RerankRequest | None = None
    deadline_s: float = 0.0
    created_at: float = 0.0
    started_at: float = 0.0
    model: str = ""
    strategy: str = ""
    callback_url: str | None = None


# --------------------------------------------------------------------------- Lua scripts

_NOW = "local _t = redis.call('TIME'); local now = tonumber(_t[1]) + tonumber(_t[2]) / 1000000\n"
_FMT = "local function fmt(x) return string.format('%.6f', x) end\n"
_METRICS = """
local function apply_metrics(base)
  local m = tonumber(ARGV[base] or '0')
  for i = 0, m - 1 do
    local o = base + 1 + 4 * i
    local key = KEYS[tonumber(ARGV[o])]
    if ARGV[o + 2] == 'f' then
      redis.call('HINCRBYFLOAT', key, ARGV[o + 1], ARGV[o + 3])
    else
      redis.call('HINCRBY', key, ARGV[o + 1], ARGV[o + 3])
    end
  end
end
"""

_CREATE = (
    _NOW
    + _FMT
    + _METRICS
    + """
-- KEYS: job, log, queue, idem, metric hashes... ;
-- ARGV: max_depth, ttl, use_idem, idem_hash, id, message, n, k1, v1, ..., then metric ops (see MetricsWriter)
if ARGV[3] == '1' then
  local v = redis.call('GET', KEYS[4])
  if v then
    local sep = string.find(v, '|', 1, true)
    local h = string.sub(v, 1, sep - 1)
    local id = string.sub(v, sep + 1)
    if h == ARGV[4] then return {'existing', id} end
    return {'conflict', id}
  end
end
local maxd = tonumber(ARGV[1])
if maxd >= 0 and redis.call('LLEN', KEYS[3]) >= maxd then return {'full', ''} end
local n = tonumber(ARGV[7])
local args = {}
for i = 1, n do
  args[#args + 1] = ARGV[7 + 2 * i - 1]
  args[#args + 1] = ARGV[7 + 2 * i]
end
redis.call('HSET', KEYS[1], 'id', ARGV[5], 'status', 'queued', 'attempts', '0',
           'created_at', fmt(now), unpack(args))
local ei = redis.call('HGET', KEYS[1], 'expires_in')
if ei then
  redis.call('HSET', KEYS[1], 'expires_at', fmt(now + tonumber(ei)))
  redis.call('HDEL', KEYS[1], 'expires_in')
end
local ttl = tonumber(ARGV[2])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('RPUSH', KEYS[2], fmt(now) .. ' queued')
redis.call('EXPIRE', KEYS[2], ttl)
if ARGV[3] == '1' then redis.call('SET', KEYS[4], ARGV[4] .. '|' .. ARGV[5], 'EX', ttl) end
if ARGV[6] ~= '' then redis.call('LPUSH', KEYS[3], ARGV[6]) end
apply_metrics(8 + 2 * n)
return {'created', ARGV[5]}
"""
)

_TERMINATE = """
local function terminate(status, code, err)
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at', fmt(now), 'error', err, 'error_code', code)
  redis.call('HDEL', KEYS[1], 'lease_until')
  redis.call('RPUSH', KEYS[2], fmt(now) .. ' ' .. status .. ' ' .. err)
  redis.call('PUBLISH', ARGV[4], redis.call('HGET', KEYS[1], 'id') .. ' ' .. status)
end
"""

_CLAIM = (
    _NOW
    + _FMT
    + _TERMINATE
    + """
-- KEYS: job, log ; ARGV: worker, lease_s, default_max_attempts, events_channel
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'queued' and st ~= 'running' then return {'done', st} end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  terminate('cancelled', 'cancelled', 'cancelled on request')
  return {'cancelled'}
end
local att = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
local maxa = tonumber(redis.call('HGET', KEYS[1], 'max_attempts') or ARGV[3])
if st == 'queued' then
  local exp = tonumber(redis.call('HGET', KEYS[1], 'expires_at') or '')
  if exp and now > exp then
    terminate('expired', 'expired', 'not started before its wait deadline')
    return {'expired'}
  end
else
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if lease > now then return {'busy', fmt(lease - now)} end
  if att >= maxa then
    terminate('failed', 'worker_lost', string.format(
      'worker lost during attempt %d of %d; giving up (max attempts %d)', att, maxa, maxa))
    return {'exhausted'}
  end
  redis.call('RPUSH', KEYS[2], fmt(now) .. ' lost ' .. (redis.call('HGET', KEYS[1], 'worker') or ''))
end
att = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'started_at', fmt(now),
           'lease_until', fmt(now + tonumber(ARGV[2])))
redis.call('RPUSH', KEYS[2], fmt(now) .. ' running ' .. ARGV[1] .. ' attempt ' .. att)
local f = redis.call('HMGET', KEYS[1], 'request', 'deadline_s', 'created_at', 'model', 'strategy',
                     'callback_url')
return {'claimed', tostring(att), f[1], f[2], f[3], fmt(now), f[4], f[5], f[6] or ''}
"""
)

_RENEW = (
    _NOW
    + _FMT
    + """
-- KEYS: jobs ; ARGV: worker, lease_s, attempt per job.  Per job: -1 lost, 0 ok, 1 cancel requested
local out = {}
for i, key in ipairs(KEYS) do
  local f = redis.call('HMGET', key, 'status', 'worker', 'attempts', 'cancel_requested')
  if f[1] ~= 'running' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2 + i] then
    out[i] = -1
  else
    redis.call('HSET', key, 'lease_until', fmt(now + tonumber(ARGV[2])))
    if f[4] == '1' then out[i] = 1 else out[i] = 0 end
  end
end
return out
"""
)

_FINISH = (
    _NOW
    + _FMT
    + _METRICS
    + """
-- KEYS: job, log, metric hashes... ;
-- ARGV: worker, attempt, status, events_channel, ttl, result, error, error_code, metric ops
local f = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempts', 'created_at', 'started_at')
if f[1] ~= 'running' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] then return {0} end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished_at', fmt(now), 'result', ARGV[6],
           'error', ARGV[7], 'error_code', ARGV[8])
redis.call('HDEL', KEYS[1], 'lease_until')
local ttl = tonumber(ARGV[5])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('RPUSH', KEYS[2], fmt(now) .. ' ' .. ARGV[3] .. ' ' .. ARGV[1])
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('PUBLISH', ARGV[4], redis.call('HGET', KEYS[1], 'id') .. ' ' .. ARGV[3])
apply_metrics(9)
return {1, f[4], f[5], fmt(now)}
"""
)

_CANCEL = (
    _NOW
    + _FMT
    + _TERMINATE
    + """
-- KEYS: job, log ; ARGV: owner, -, -, events_channel, cancel_channel
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return {'missing'} end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'queued' then
  terminate('cancelled', 'cancelled', 'cancelled on request')
  return {'cancelled'}
end
if st == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('RPUSH', KEYS[2], fmt(now) .. ' cancel requested')
  redis.call('PUBLISH', ARGV[5], redis.call('HGET', KEYS[1], 'id'))
  return {'cancelling'}
end
return {'final', st}
"""
)

_EXPIRE_QUEUED = (
    _NOW
    + _FMT
    + _TERMINATE
    + """
-- KEYS: job, log ; ARGV: -, -, -, events_channel
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  terminate('expired', 'expired', 'nobody waited for it any more')
  return 1
end
return 0
"""
)


# --------------------------------------------------------------------------- metrics

HISTOGRAMS: dict[str, tuple[float, ...]] = {
    "job_queue_wait_seconds": (
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
        300,
    ),
    "job_run_seconds": (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    "job_documents": (1, 5, 10, 20, 50, 100, 200, 500, 1000),
}
"""Histogram names and their bucket upper bounds (``+Inf`` implied)."""


def _labels(labels: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(labels.items())), separators=(",", ":"))


@dataclass
class MetricsWriter:
    """Accumulates metric updates and writes them in one pipeline (see :meth:`flush`)."""

    prefix: str
    ops: list[tuple[str, str, str, float, bool]] = field(default_factory=list)

    def inc(self, name: str, labels: Mapping[str, str], value: int = 1) -> None:
        self.ops.append(("c", name, _labels(labels), value, False))

    def observe(self, name: str, labels: Mapping[str, str], value: float) -> None:
        bounds = HISTOGRAMS[name]
        idx = next((i for i, b in enumerate(bounds) if value <= b), len(bounds))
        lab = _labels(labels)
        self.ops.append(("h", name, f"{lab}|b{idx}", 1, False))
        self.ops.append(("h", name, f"{lab}|sum", value, True))
        self.ops.append(("h", name, f"{lab}|count", 1, False))

    def script_args(self, first_key: int) -> tuple[list[str], list[Any]]:
        """``(keys, args)`` that make a job script apply the updates (``apply_metrics``) when
        its transition happens; ``first_key`` is the 1-based index the keys will have."""
        keys: list[str] = []
        args: list[Any] = [len(self.ops)]
        for kind, name, fld, value, is_float in self.ops:
            key = f"{self.prefix}:m:{kind}:{name}"
            if key not in keys:
                keys.append(key)
            args += [first_key + keys.index(key), fld, "f" if is_float else "i", value if is_float else int(value)]
        self.ops.clear()
        return keys, args

    def apply(self, pipe: Any) -> None:
        """Queue the updates on a redis pipeline and forget them."""
        for kind, name, fld, value, is_float in self.ops:
            key = f"{self.prefix}:m:{kind}:{name}"
            if is_float:
                pipe.hincrbyfloat(key, fld, value)
            else:
                pipe.hincrby(key, fld, int(value))
        self.ops.clear()


# --------------------------------------------------------------------------- the store


class JobStore:
    """Async access to job records, batches, worker heartbeats and metrics in Redis."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.r: Any = client  # redis-py's typing of replies is too loose to be useful
        self.prefix = prefix
        self.events_channel = f"{prefix}:events"
        self.cancel_channel = f"{prefix}:cancel"
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._finish = client.register_script(_FINISH)
        self._cancel = client.register_script(_CANCEL)
        self._expire = client.register_script(_EXPIRE_QUEUED)

    @classmethod
    def from_url(cls, url: str, prefix: str, timeout_s: float = 5.0, max_connections: int = 64) -> JobStore:
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            max_connections=max_connections,
            health_check_interval=30,
        )
        return cls(client, prefix)

    async def aclose(self) -> None:
        await self.r.aclose()

    # ------------------------------------------------------------------ keys

    def job_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def log_key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:log"

    def idem_key(self, owner: str, key: str) -> str:
        digest = hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()
        return f"{self.prefix}:idem:{digest}"

    def batch_key(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}"

    def batch_items_key(self, batch_id: str) -> str:
        return f"{self.prefix}:batch:{batch_id}:items"

    @property
    def workers_key(self) -> str:
        return f"{self.prefix}:workers"

    def worker_key(self, worker_id: str) -> str:
        return f"{self.prefix}:worker:{worker_id}"

    # ------------------------------------------------------------------ create / read

    @staticmethod
    def job_fields(
        *,
        owner: str,
        model: str,
        queue: str,
        request: RerankRequest,
        deadline_s: float,
        max_attempts: int,
        kind: str = "job",
        callback_url: str | None = None,
        expires_in: float | None = None,
        batch_id: str | None = None,
        custom_id: str | None = None,
    ) -> dict[str, str]:
        """The initial hash fields of a job (besides id, status, attempts, created_at).

        ``expires_in``: seconds after creation past which a worker that gets the job while it
        is still queued marks it ``expired`` instead of running it."""
        fields = {
            "owner": owner,
            "kind": kind,
            "model": model,
            "queue": queue,
            "strategy": request.strategy.name,
            "request": request.model_dump_json(),
            "deadline_s": repr(float(deadline_s)),
            "max_attempts": str(max_attempts),
        }
        if callback_url:
            fields["callback_url"] = callback_url
        if expires_in is not None:  # turned into expires_at with the server's clock
            fields["expires_in"] = f"{expires_in:.6f}"
        if batch_id is not None:
            fields["batch_id"] = batch_id
        if custom_id is not None:
            fields["custom_id"] = custom_id
        return fields

    def _create_args(
        self,
        job_id: str,
        fields: Mapping[str, str],
        ttl_s: int,
        max_depth: int | None,
        idempotency: tuple[str, str, str] | None,
        message: str | None = None,
    ) -> tuple[list[str], list[Any]]:
        queue = self.queue_key(fields["queue"])
        idem = self.idem_key(idempotency[0], idempotency[1]) if idempotency else f"{self.prefix}:idem:-"
        keys = [self.job_key(job_id), self.log_key(job_id), queue, idem]
        flat: list[Any] = []
        for k, v in fields.items():
            flat += [k, v]
        args = [
            -1 if max_depth is None else max_depth,
            ttl_s,
            "1" if idempotency else "0",
            idempotency[2] if idempotency else "",
            job_id,
            message or "",
            len(fields),
            *flat,
        ]
        return keys, args

    def queue_key(self, queue: str) -> str:
        """The Redis list of a broker queue (kombu's redis transport names it after the queue)."""
        return queue

    async def create(
        self,
        job_id: str,
        fields: Mapping[str, str],
        *,
        ttl_s: int,
        max_depth: int | None = None,
        idempotency: tuple[str, str, str] | None = None,
        metrics: MetricsWriter | None = None,
        message: str | None = None,
    ) -> CreateResult:
        """Create a queued job unless the queue is over ``max_depth`` or the idempotency key
        ``(owner, key, body_hash)`` already names a job (same body: ``existing``; other: ``conflict``).
        When the job is created, ``message`` (the broker message that runs it) is pushed on its
        queue and ``metrics`` are applied, atomically with the record."""
        keys, args = self._create_args(job_id, fields, ttl_s, max_depth, idempotency, message)
        if metrics is not None and metrics.ops:
            mkeys, margs = metrics.script_args(len(keys) + 1)
            keys, args = keys + mkeys, args + margs
        out = await self._create(keys=keys, args=args)
        return CreateResult(outcome=out[0].decode(), job_id=out[1].decode())

    async def create_many(self, jobs: Sequence[tuple[str, Mapping[str, str], str | None]], ttl_s: int) -> None:
        """Create many queued jobs ``(id, fields, message)`` in one round trip (no depth check,
        no idempotency)."""
        pipe = self.r.pipeline(transaction=False)
        for job_id, fields, message in jobs:
            keys, args = self._create_args(job_id, fields, ttl_s, None, None, message)
            await self._create(keys=keys, args=args, client=pipe)
        await pipe.execute()

    async def get(self, job_id: str, with_request: bool = True) -> JobRecord | None:
        """The job, or ``None``; ``with_request=False`` leaves ``request`` unset (cheaper)."""
        h = await self.r.hgetall(self.job_key(job_id))
        if not h or b"status" not in h:
            return None
        return JobRecord.from_hash(h, with_request)

    async def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        pipe = self.r.pipeline(transaction=False)
        for j in job_ids:
            pipe.hgetall(self.job_key(j))
        rows = await pipe.execute()
        return [JobRecord.from_hash(h) if h and b"status" in h else None for h in rows]

    async def statuses(self, job_ids: Sequence[str]) -> list[str | None]:
        pipe = self.r.pipeline(transaction=False)
        for j in job_ids:
            pipe.hget(self.job_key(j), "status")
        return [_s(s) for s in await pipe.execute()]

    async def history(self, job_id: str) -> list[str]:
        """The job's transitions, oldest first (``"<time> <event> ..."``)."""
        return [x.decode() for x in await self.r.lrange(self.log_key(job_id), 0, -1)]

    async def queue_depth(self, queue: str) -> int:
        return int(await self.r.llen(self.queue_key(queue)))

    # ------------------------------------------------------------------ transitions

    async def claim(self, job_id: str, worker_id: str, lease_s: float, max_attempts: int) -> ClaimResult:
        out = await self._claim(
            keys=[self.job_key(job_id), self.log_key(job_id)],
            args=[worker_id, lease_s, max_attempts, self.events_channel],
        )
        outcome = out[0].decode()
        if outcome == "busy":
            return ClaimResult(outcome="busy", retry_in=float(out[1]))
        if outcome != "claimed":
            return ClaimResult(outcome=outcome)
        return ClaimResult(
            outcome="claimed",
            attempt=int(out[1]),
            request=RerankRequest.model_validate_json(out[2]),
            deadline_s=float(out[3]),
            created_at=float(out[4]),
            started_at=float(out[5]),
            model=out[6].decode(),
            strategy=out[7].decode(),
            callback_url=_s(out[8]),
        )

    async def renew(self, jobs: Sequence[tuple[str, int]], worker_id: str, lease_s: float) -> list[int]:
        """Extend the leases of ``(job_id, attempt)`` pairs: -1 lost, 0 ok, 1 cancel requested."""
        if not jobs:
            return []
        args: list[Any] = [worker_id, lease_s, *(str(a) for _, a in jobs)]
        out = await self._renew(
            keys=[self.job_key(j) for j, _ in jobs],
            args=args,
        )
        return [int(x) for x in out]

    async def finish(
        self,
        job_id: str,
        worker_id: str,
        attempt: int,
        status: JobStatus,
        *,
        ttl_s: int,
        result: RerankResult | None = None,
        error: str | None = None,
        error_code: ErrorCode | None = None,
        metrics: MetricsWriter | None = None,
    ) -> tuple[float, float, float] | None:
        """Record the outcome of the caller's attempt; ``None`` when it no longer holds the job
        (nothing is written, ``metrics`` included).  Returns ``(created_at, started_at, finished_at)``."""
        args: list[Any] = [
            worker_id,
            str(attempt),
            status,
            self.events_channel,
            ttl_s,
            result.model_dump_json() if result is not None else "",
            error or "",
            error_code or "",
        ]
        keys = [self.job_key(job_id), self.log_key(job_id)]
        if metrics is not None and metrics.ops:
            mkeys, margs = metrics.script_args(len(keys) + 1)
            keys, args = keys + mkeys, args + margs
        out = await self._finish(keys=keys, args=args)
        if int(out[0]) != 1:
            return None
        return float(out[1]), float(out[2]), float(out[3])

    async def cancel(self, job_id: str, owner: str | None) -> tuple[str, str | None]:
        """Cancel for ``owner`` (``None``: anyone).  ``("cancelled"|"cancelling"|"missing", None)``
        or ``("final", status)``."""
        out = await self._cancel(
            keys=[self.job_key(job_id), self.log_key(job_id)],
            args=[owner or "", "", "", self.events_channel, self.cancel_channel],
        )
        return out[0].decode(), (out[1].decode() if len(out) > 1 else None)

    async def expire_if_queued(self, job_id: str) -> bool:
        out = await self._expire(
            keys=[self.job_key(job_id), self.log_key(job_id)], args=["", "", "", self.events_channel]
        )
        return int(out) == 1

    async def set_field(self, job_id: str, name: str, value: str) -> None:
        await self.r.hset(self.job_key(job_id), name, value)

    # ------------------------------------------------------------------ batches

    async def create_batch(
        self, batch_id: str, owner: str, items: Sequence[str], meta: Mapping[str, str], ttl_s: int
    ) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.batch_key(batch_id), mapping={"id": batch_id, "owner": owner, **meta})
        pipe.expire(self.batch_key(batch_id), ttl_s)
        if items:
            pipe.rpush(self.batch_items_key(batch_id), *items)
            pipe.expire(self.batch_items_key(batch_id), ttl_s)
        await pipe.execute()

    async def get_batch(self, batch_id: str) -> tuple[dict[str, str], list[str]] | None:
        pipe = self.r.pipeline(transaction=False)
        pipe.hgetall(self.batch_key(batch_id))
        pipe.lrange(self.batch_items_key(batch_id), 0, -1)
        meta, items = await pipe.execute()
        if not meta:
            return None
        return {k.decode(): v.decode() for k, v in meta.items()}, [i.decode() for i in items]

    # ------------------------------------------------------------------ workers

    async def heartbeat(self, worker_id: str, info: Mapping[str, str], ttl_s: float) -> None:
        pipe = self.r.pipeline(transaction=False)
        key = self.worker_key(worker_id)
        pipe.hset(key, mapping=dict(info))
        pipe.expire(key, max(1, int(ttl_s + 0.999)))
        pipe.zadd(self.workers_key, {worker_id: 0})
        await pipe.execute()

    async def remove_worker(self, worker_id: str) -> None:
        pipe = self.r.pipeline(transaction=False)
        pipe.delete(self.worker_key(worker_id))
        pipe.zrem(self.workers_key, worker_id)
        await pipe.execute()

    async def live_workers(self) -> list[dict[str, str]]:
        """Workers whose heartbeat has not expired (stale ids are pruned)."""
        ids = [i.decode() for i in await self.r.zrange(self.workers_key, 0, -1)]
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        for i in ids:
            pipe.hgetall(self.worker_key(i))
        rows = await pipe.execute()
        live, dead = [], []
        for i, h in zip(ids, rows, strict=False):
            if h:
                live.append({"id": i, **{k.decode(): v.decode() for k, v in h.items()}})
            else:
                dead.append(i)
        if dead:
            await self.r.zrem(self.workers_key, *dead)
        return live

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> MetricsWriter:
        return MetricsWriter(self.prefix)

    async def flush_metrics(self, metrics: MetricsWriter) -> None:
        if not metrics.ops:
            return
        pipe = self.r.pipeline(transaction=False)
        metrics.apply(pipe)
        await pipe.execute()

    async def read_metrics(self) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
        """``(counters, histograms)``: ``{name: {field: value}}`` as written by :class:`MetricsWriter`."""
        names_c = [k.decode() async for k in self.r.scan_iter(match=f"{self.prefix}:m:c:*", count=200)]
        names_h = [k.decode() async for k in self.r.scan_iter(match=f"{self.prefix}:m:h:*", count=200)]
        pipe = self.r.pipeline(transaction=False)
        for k in [*names_c, *names_h]:
            pipe.hgetall(k)
        rows = await pipe.execute()
        out_c: dict[str, dict[str, float]] = {}
        out_h: dict[str, dict[str, float]] = {}
        for key, row in zip([*names_c, *names_h], rows, strict=False):
            kind, name = key.split(":m:", 1)[1].split(":", 1)
            target = out_c if kind == "c" else out_h
            target[name] = {f.decode(): float(v) for f, v in row.items()}
        return out_c, out_h
