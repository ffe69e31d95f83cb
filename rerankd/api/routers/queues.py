"""``GET /v1/queues``: queues and workers as the console shows them (any valid key).

Depth of each model's queues by lane (summed per model, and per queue: a model has one queue per
capability, :mod:`rerankd.jobs.routing`), jobs queued / running per model (the counters the job
scripts keep), live workers with heartbeat age and jobs done (workers as opaque ids, as in job
records), cumulative finished jobs per model and status, and jobs finished per minute over the last
:data:`THROUGHPUT_MINUTES` minutes (counted by ``lua/counters.lua`` at each transition).  One pipeline of
fixed size: the cost does not depend on the number of stored jobs.
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import APIRouter

from rerankd.api.openapi import errors
from rerankd.api.routers.deps import Owner, Service
from rerankd.api.schemas import THROUGHPUT_MINUTES, QueuesOut
from rerankd.jobs.quotas import LANE_NAMES
from rerankd.jobs.redact import worker_ref
from rerankd.jobs.routing import CAPABILITIES, model_queues, queue_name, strategies_of
from rerankd.jobs.workers import listed

router = APIRouter(tags=["queues"])


def _f(v: str | None) -> float | None:
    try:
        return float(v) if v else None
    except ValueError:
        return None


@router.get("/v1/queues", response_model=QueuesOut, response_model_exclude_unset=True, responses=errors(401, 503))
async def queues(svc: Service, owner: Owner) -> dict[str, Any]:
    """Queue depths, jobs in flight, live workers and finished counts (global, for operators)."""
    s, store = svc.settings, svc.store
    workers = await store.workers.live()
    models = list(dict.fromkeys([*s.served_models(), *(w.get("model", "") for w in workers)]))
    lengths = await store.lane_depths([q for m in models for q in model_queues(s.key_prefix, m)])
    minute = int(time.time() // 60)
    minutes = list(range(minute - THROUGHPUT_MINUTES + 1, minute + 1))
    done = await store.finished_per_minute(minutes)
    gauges = await store.read_metric_hashes(["g:jobs_by_status"])
    counters, _ = await store.read_metrics()
    by_status: dict[tuple[str, str], int] = {}
    for lab, v in gauges.get("g:jobs_by_status", {}).items():
        d = json.loads(lab)
        by_status[(d.get("model", ""), d.get("status", ""))] = int(v)
    finished: dict[str, dict[str, int]] = {}
    for lab, v in counters.get("jobs_finished_total", {}).items():
        d = json.loads(lab)
        row = finished.setdefault(d.get("model", ""), {})
        row[d.get("status", "")] = row.get(d.get("status", ""), 0) + int(v)
    now = time.time()
    out_queues = []
    reads = {w["id"]: set(listed(w, "queues")) for w in workers}
    for m in models:
        per_queue: list[dict[str, Any]] = []
        total = dict.fromkeys(LANE_NAMES.values(), 0)
        for cap in CAPABILITIES:
            q = queue_name(s.key_prefix, m, cap)
            depth = {LANE_NAMES[lane]: n for lane, n in lengths[q].items()}
            for name, n in depth.items():
                total[name] += n
            per_queue.append(
                {
                    "queue": q,
                    "capability": cap.value,
                    "strategies": strategies_of([cap]),
                    "depth": depth,
                    "workers": sum(1 for w in workers if q in reads[w["id"]]),
                }
            )
        out_queues.append(
            {
                "model": m,
                "queue": queue_name(s.key_prefix, m),
                "depth": total,
                "queued": max(0, by_status.get((m, "queued"), 0)),
                "running": max(0, by_status.get((m, "running"), 0)),
                "workers": sum(1 for w in workers if w.get("model") == m),
                "queues": per_queue,
            }
        )
    out_workers = []
    for w in workers:
        seen, started = _f(w.get("seen")), _f(w.get("started_at"))
        out_workers.append(
            {
                "id": worker_ref(w["id"]),
                "model": w.get("model", ""),
                "engine": w.get("engine", ""),
                "strategies": listed(w, "strategies"),
                "queues": listed(w, "queues"),
                "concurrency": int(w.get("concurrency", "0") or 0),
                "running": int(w.get("running", "0") or 0),
                "done": int(w.get("done", "0") or 0),
                "heartbeat_age_s": round(now - seen, 3) if seen else None,
                "up_s": round(now - started, 1) if started else None,
            }
        )
    throughput = [{"minute": m * 60, "finished": d} for m, d in zip(minutes, done, strict=True)]
    return {"time": now, "queues": out_queues, "workers": out_workers, "finished": finished, "throughput": throughput}
