"""The dashboard and alert rules name only metrics (and labels) a running service exports."""

from __future__ import annotations

import httpx
import pytest

from rerankd.jobs.metrics import COUNTERS
from tests.support.promql import PROMQL_BUILTINS, all_exprs, exported, label_uses, metric_names
from tests.support.stack import Service

pytestmark = pytest.mark.integration


def test_dashboard_and_alerts_name_exported_metrics(service: Service) -> None:
    job = {"query": {"text": "capital"}, "candidates": [{"docid": f"d{i}", "text": f"p {i}"} for i in range(3)]}
    created = httpx.post(f"{service.url}/v1/jobs", json={**job, "model": "tiny"}, headers=service.headers()).json()
    assert service.wait_job(created["id"])["status"] == "succeeded"
    resp = httpx.get(f"{service.url}/metrics", headers=service.metrics_headers(), timeout=30)
    assert resp.status_code == 200
    names = exported(resp.text)
    for name in PROMQL_BUILTINS:
        names[name] = {"job", "instance"}
    # counters of events this test does not cause (rejections, redeliveries) appear once they
    # happen: those are taken from the registry, their labels from the code that counts them
    for name, labels in {"jobs_rejected_total": {"reason", "model"}, "jobs_redelivered_total": {"model"}}.items():
        assert name in COUNTERS
        names.setdefault(f"rerankd_{name}", labels)
    for expr in all_exprs():
        used = metric_names(expr)
        assert used <= set(names), f"{sorted(used - set(names))} not in /metrics (expr {expr!r})"
        # a label used anywhere in the expression belongs to one of its metrics (le: histograms)
        labels = set().union(*(names[n] for n in used)) | {"le", "job", "instance"}
        assert label_uses(expr) <= labels, f"{sorted(label_uses(expr) - labels)} (expr {expr!r})"
