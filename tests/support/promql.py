"""The PromQL of deploy/grafana and deploy/alerts.yml, and the metric names a Prometheus text exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

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
