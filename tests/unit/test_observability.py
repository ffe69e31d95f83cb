"""deploy/grafana and deploy/alerts.yml: well-formed, wired into compose, naming only exported metrics.

The names are checked here against the metric registry (``rerankd.jobs.metrics`` and the fixed
families of ``rerankd.api.metrics``, rendered by ``render`` against a real Redis); the integration
test ``tests/integration/test_observability.py`` checks them against the ``/metrics`` text of a
running service after a real job, labels included.
"""

from __future__ import annotations

import json
import secrets

import pytest
import yaml

from tests.support.promql import (
    DASHBOARD,
    DEPLOY,
    PROMQL_BUILTINS,
    alert_rules,
    all_exprs,
    exported,
    metric_names,
)


def unknown_names(names: dict[str, set[str]]) -> list[str]:
    missing = []
    for expr in all_exprs():
        for name in metric_names(expr):
            if name not in names:
                missing.append(f"{name} (in {expr!r})")
    return missing


def test_dashboard_and_rules_are_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "rerankd" and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(set(ids)) == len(ids)
    for p in dash["panels"]:
        assert p["datasource"]["uid"] == "prometheus" and p["targets"], p["title"]
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {"RerankdWorkerDown", "RerankdQueueDepthHigh", "RerankdErrorRateHigh", "RerankdRunLatencyP99High"} <= names
    for r in rules:
        assert r["expr"].strip() and r["labels"]["severity"] and r["annotations"]["summary"], r["alert"]
        assert r["expr"].count("(") == r["expr"].count(")"), r["alert"]
    for expr in all_exprs():
        assert metric_names(expr) or "up{" in expr, expr


def test_wired_into_compose() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    prom = services["prometheus"]
    assert "./alerts.yml:/etc/prometheus/alerts.yml:ro" in prom["volumes"]
    assert yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["rule_files"] == ["/etc/prometheus/alerts.yml"]
    grafana = services["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"]}
    assert mounts["./grafana/dashboards"] == "/var/lib/grafana/dashboards"
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/rerankd.yaml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    (source,) = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())["datasources"]
    assert source["uid"] == "prometheus" and source["url"] == "http://prometheus:9090"


@pytest.mark.anyio
async def test_every_named_metric_is_in_the_registry_rendering(private_redis_url: str) -> None:
    """Every registered counter and histogram with one sample, rendered by the real ``render``."""
    url = private_redis_url
    from rerankd.api.metrics import render
    from rerankd.jobs import JobStore
    from rerankd.jobs.metrics import COUNTERS, HISTOGRAMS

    store = JobStore.from_url(url, f"test-obs-{secrets.token_hex(4)}")
    try:
        m = store.metrics()
        for name in COUNTERS:
            m.inc(name, {"model": "m"})
        for name in HISTOGRAMS:
            m.observe(name, {"model": "m"}, 1.0)
        await store.flush_metrics(m)
        text = (await render(store, ["q"])).decode()
    finally:
        keys = [k async for k in store.r.scan_iter(match=f"{store.prefix}*")]
        if keys:
            await store.r.delete(*keys)
        await store.aclose()
    names = exported(text) | {n: set() for n in PROMQL_BUILTINS}
    assert not unknown_names(names), unknown_names(names)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
