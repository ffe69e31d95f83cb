"""``/metrics``: Prometheus text built from the counters the API and workers keep in Redis.

Workers are separate processes (often on other machines), so nothing is kept in process
memory: every process adds to Redis hashes (:class:`rerankd.jobs.MetricsWriter`) and any API
replica exports the same global totals at scrape time, plus live gauges (queue depth per lane
from LLEN, jobs by status and jobs in flight per key from counters the job scripts keep, live
workers).  Scrape one API replica (or aggregate with ``max``), not all of them summed.  The cost
of a scrape does not depend on the number of stored jobs: it reads a fixed set of hashes.

Tenant names appear only in ``rerankd_jobs_in_flight{key=...}``: the metrics key sees every
key's series, an API key only its own (``render(..., owner=...)``; docs/api.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from rerankd.jobs import HISTOGRAMS, JobStore
from rerankd.jobs.metrics import COUNTERS, GAUGES
from rerankd.jobs.quotas import LANE_NAMES
from rerankd.jobs.workers import listed

_HELP = {
    **COUNTERS,
    "job_queue_wait_seconds": "Time from job creation to the start of its (last) attempt.",
    "job_run_seconds": "Run time of a job's attempt on a worker.",
    "job_documents": "Documents per job.",
}
PREFIX = "rerankd_"


class _Static:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics


def _families(
    counters: dict[str, dict[str, float]],
    histograms: dict[str, dict[str, float]],
    depths: dict[tuple[str, str], int],
    workers: list[dict[str, str]],
    gauges: dict[str, dict[str, float]],
    in_flight: dict[str, int],
    viewer: str | None = None,
) -> list[Metric]:
    out: list[Metric] = []
    for name in GAUGES:
        rows = gauges.get(f"g:{name}", {})
        parsed = [(json.loads(lab), v) for lab, v in rows.items()]
        keys = sorted({k for lab, _ in parsed for k in lab})
        gfam = GaugeMetricFamily(PREFIX + name, GAUGES[name], labels=keys)
        for lab, v in sorted(parsed, key=lambda x: json.dumps(x[0], sort_keys=True)):
            gfam.add_metric([lab.get(k, "") for k in keys], v)
        out.append(gfam)
    flight = GaugeMetricFamily(
        PREFIX + "jobs_in_flight", "Jobs queued or running per API key and kind (quotas).", labels=["key", "kind"]
    )
    for owner, v in sorted(in_flight.items()):
        key, _, kind = owner.partition("|")
        if viewer is None or key == viewer:
            flight.add_metric([key, kind or "interactive"], v)
    out.append(flight)
    for name, rows in sorted(counters.items()):
        parsed = [(json.loads(lab), v) for lab, v in rows.items()]
        keys = sorted({k for lab, _ in parsed for k in lab})
        fam = CounterMetricFamily(PREFIX + name.removesuffix("_total"), _HELP.get(name, name), labels=keys)
        for lab, v in parsed:
            fam.add_metric([lab.get(k, "") for k in keys], v)
        out.append(fam)
    for name, rows in sorted(histograms.items()):
        bounds = HISTOGRAMS.get(name)
        if bounds is None:
            continue
        series: dict[str, dict[str, float]] = {}
        for fld, v in rows.items():
            lab, _, part = fld.rpartition("|")
            series.setdefault(lab, {})[part] = v
        parsed_labels = {lab: json.loads(lab) for lab in series}
        keys = sorted({k for lab in parsed_labels.values() for k in lab})
        hfam = HistogramMetricFamily(PREFIX + name, _HELP.get(name, name), labels=keys)
        for lab, parts in series.items():
            cum = 0.0
            buckets: list[tuple[str, float]] = []
            for i, b in enumerate(bounds):
                cum += parts.get(f"b{i}", 0.0)
                buckets.append((repr(float(b)), cum))
            cum += parts.get(f"b{len(bounds)}", 0.0)
            buckets.append(("+Inf", cum))
            hfam.add_metric([parsed_labels[lab].get(k, "") for k in keys], buckets, sum_value=parts.get("sum", 0.0))
        out.append(hfam)
    depth = GaugeMetricFamily(
        PREFIX + "queue_depth",
        "Messages waiting in a queue (one per model and capability) by lane.",
        labels=["queue", "lane"],
    )
    for (q, lane), d in sorted(depths.items()):
        depth.add_metric([q, lane], d)
    out.append(depth)
    live = GaugeMetricFamily(PREFIX + "workers", "Live workers by model.", labels=["model"])
    running = GaugeMetricFamily(PREFIX + "jobs_running", "Jobs running on live workers.", labels=["model"])
    by_model: dict[str, list[dict[str, str]]] = {}
    for w in workers:
        by_model.setdefault(w.get("model", ""), []).append(w)
    for model, ws in sorted(by_model.items()):
        live.add_metric([model], len(ws))
        running.add_metric([model], sum(int(w.get("running", "0") or 0) for w in ws))
    out += [live, running]
    return out


async def render(store: JobStore, queues: Iterable[str], owner: str | None = None) -> bytes:
    """The Prometheus exposition text of the global metrics; with ``owner``, the per-key series of
    that API key only (other tenants' names are left out)."""
    counters, histograms = await store.read_metrics()
    gauges = await store.read_metric_hashes([f"g:{n}" for n in GAUGES])
    in_flight = await store.in_flight()
    workers = await store.workers.live()
    names = sorted(set(queues) | {q for w in workers for q in listed(w, "queues")})
    lengths = await store.lane_depths(names)
    depths = {(q, LANE_NAMES[lane]): n for q, by_lane in lengths.items() for lane, n in by_lane.items()}
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Static(_families(counters, histograms, depths, workers, gauges, in_flight, owner)))
    return generate_latest(registry)
