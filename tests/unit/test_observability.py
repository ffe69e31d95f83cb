"""deploy/grafana and deploy/alerts.yml: well-formed, wired into compose, naming only exported metrics.

The names are checked here against the metric registry (``rerankd.jobs.metrics`` and the fixed
families of ``rerankd.api.metrics``, rendered by ``render`` against a real Redis); the integration
test ``tests/integration/test_observability.py`` checks them against the ``/metrics`` text of a
running service after a real job, labels included.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "rerankd.json"
ALERTS = DEPLOY / "alerts.yml"
PROMQL_BUILTINS = {"up"}  # series Prometheus adds itself
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def all_exprs() -> list[str]:
    return dashboard_exprs() + [r["expr"] for r in alert_rules()]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(rerankd_[a-z0-9_]+)\b", expr))


def label_uses(expr: str) -> set[str]:
    """Label names in matchers ``{a="x"}`` and groupings ``by (a, b)`` / ``on (a)``."""
    used: set[str] = set()
    for body in re.findall(r"\{([^}]*)\}", expr):
        used |= set(re.findall(r"([a-z_]+)\s*(?:=~|!~|!=|=)", body))
    for body in re.findall(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)", expr):
        used |= {x.strip() for x in body.split(",") if x.strip()}
    return used


def exported(text: str) -> dict[str, set[str]]:
    """``{sample name: label names}`` of a Prometheus exposition text (families and samples)."""
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        out.setdefault(fam.name, set())
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
            out[fam.name].update(k for k in s.labels if k != "le")
    return out


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
