"""Deployment files: parse them and check images, commands, ports and the settings they use."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from rerankd.api.app import create_app
from rerankd.config import Settings, env_names
from rerankd.engines.base import Capability
from rerankd.jobs.quotas import LANES, lane_key
from rerankd.jobs.routing import worker_capabilities, worker_queues

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROOT = DEPLOY.parent


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def _k8s() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(f.read_text()) if d]
    return docs


def _module_of(command: list[str]) -> str:
    assert command[0].startswith("python") and command[1] == "-m", command
    return command[2]


def _dep_name(req: str) -> str:
    return re.split(r"[\[<>=!~ ]", req, maxsplit=1)[0].lower()


def test_every_rerankd_setting_used_is_read_by_the_config() -> None:
    known = env_names()
    used: set[str] = set()
    for f in DEPLOY.rglob("*"):
        if f.is_file():
            used |= set(re.findall(r"RERANKD_[A-Z0-9_]+", f.read_text()))
    assert used, "deploy files use no settings?"
    assert used <= known, f"unknown settings: {sorted(used - known)}"


def test_compose_services() -> None:
    services = _compose()["services"]
    assert {"redis", "api", "flower", "prometheus"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    assert services["redis"]["command"][services["redis"]["command"].index("--appendonly") + 1] == "yes"

    api = services["api"]
    assert api["build"]["target"] == "api" and api["build"]["dockerfile"] == "deploy/Dockerfile"
    assert _module_of(api["command"]) == "rerankd.api" and "8080:8080" in api["ports"]
    assert api["command"][api["command"].index("--port") + 1] == "8080"
    assert api["environment"]["RERANKD_REDIS_URL"] == "redis://redis:6379/0"
    assert "RERANKD_API_KEYS" in api["environment"] and "RERANKD_METRICS_KEY" in api["environment"]

    workers = {n: s for n, s in services.items() if n.startswith("worker")}
    assert len(workers) >= 2
    devices = []
    for svc in workers.values():
        assert svc["build"]["target"] == "worker" and _module_of(svc["command"]) == "rerankd.worker"
        assert svc["environment"]["RERANKD_ENGINE"] == "vllm"
        (reservation,) = svc["deploy"]["resources"]["reservations"]["devices"]
        assert reservation["capabilities"] == ["gpu"] and len(reservation["device_ids"]) == 1
        devices += reservation["device_ids"]
    assert len(set(devices)) == len(devices), "one worker per GPU"

    flower = services["flower"]
    assert "flower" in flower["command"] and "--broker=redis://redis:6379/0" in flower["command"]
    prom = services["prometheus"]
    assert any(v.startswith("./prometheus.yml:") for v in prom["volumes"])
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"][0]["targets"] == ["api:8080"]
    # /metrics needs the metrics key: Prometheus sends it from the compose secret it is given
    secret = job["authorization"]["credentials_file"]
    assert job["authorization"]["type"] == "Bearer" and secret.startswith("/run/secrets/")
    name = secret.removeprefix("/run/secrets/")
    assert name in prom["secrets"] and _compose()["secrets"][name] == {"environment": "RERANKD_METRICS_KEY"}


def test_dockerfile_stages() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = dict(re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)", text, flags=re.M | re.I))
    by_name = {v: k for k, v in stages.items()}
    assert set(by_name) == {"api", "worker"}
    assert by_name["worker"].startswith("vllm/vllm-openai:")
    assert by_name["api"].startswith("python:3.11")
    worker = text.split("AS worker", 1)[1]
    api = text.split("AS api", 1)[1].split("AS worker", 1)[0]
    assert 'pip install ".[vllm,service]"' in worker and '"rerankd.worker"' in worker
    assert '"rerankd.api"' in api and "EXPOSE 8080" in api and 'pip install ".[service]"' in api
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    # the API image gets the base install and the service extra: neither brings torch or an engine
    api_deps = {_dep_name(d) for d in [*project["dependencies"], *extras["service"]]}
    assert {"fastapi", "celery", "redis", "uvicorn"} <= api_deps
    assert not api_deps & {"torch", "transformers", "vllm", "openai", "sentence-transformers"}
    for f in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.M):
        for src in f.split():
            assert (ROOT / src).exists(), src


@pytest.mark.parametrize("module", ["rerankd.api", "rerankd.worker"])
def test_commands_exist(module: str) -> None:
    assert importlib.util.find_spec(f"{module}.__main__") is not None


def test_kubernetes_manifests() -> None:
    docs = _k8s()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "rerankd-api") in kinds and ("Service", "rerankd-api") in kinds
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    prefix = config.get("RERANKD_KEY_PREFIX", Settings.model_fields["key_prefix"].default)

    api = deployments["rerankd-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["image"].startswith("rerankd-api") and _module_of(api["command"]) == "rerankd.api"
    port = api["ports"][0]["containerPort"]
    assert api["command"][api["command"].index("--port") + 1] == str(port)
    assert services["rerankd-api"]["spec"]["ports"][0]["targetPort"] == port
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"  # one PING: cheap enough for a probe
    assert "/readyz" in {r.path for r in create_app(Settings()).routes if hasattr(r, "path")}

    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert scaled
    for so in scaled:
        target = deployments[so["spec"]["scaleTargetRef"]["name"]]
        container = target["spec"]["template"]["spec"]["containers"][0]
        assert container["image"].startswith("rerankd-worker") and _module_of(container["command"]) == "rerankd.worker"
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        env = {e["name"]: e["value"] for e in container["env"]}
        # every lane of every queue the worker reads, as rerankd's routing names them
        queues = worker_queues(prefix, env["RERANKD_MODEL"], _served(env))
        lists = [t["metadata"]["listName"] for t in so["spec"]["triggers"]]
        assert sorted(lists) == sorted(lane_key(q, lane) for q in queues for lane in LANES), so["metadata"]["name"]
        for trigger in so["spec"]["triggers"]:
            assert trigger["type"] == "redis"
            assert config["RERANKD_REDIS_URL"].startswith(f"redis://{trigger['metadata']['address']}/")
    served_models = set(json.loads(config.get("RERANKD_MODELS", "[]")))
    for d in deployments.values():
        for c in d["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e["value"] for e in c.get("env", [])}
            if "RERANKD_MODEL" in env:  # the API accepts every model a worker hosts
                assert env["RERANKD_MODEL"] in served_models | {Settings.model_fields["model"].default}
    for d in docs:
        for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            for e in c.get("env", []):
                assert e["name"] in env_names() or not e["name"].startswith("RERANKD_")


def _gpu_worker_envs() -> list[dict[str, str]]:
    envs = [dict(s["environment"]) for n, s in _compose()["services"].items() if n.startswith("worker")]
    for d in _k8s():
        if d["kind"] == "Deployment" and d["metadata"]["name"].startswith("rerankd-worker"):
            containers = d["spec"]["template"]["spec"]["containers"]
            envs += [{e["name"]: e["value"] for e in c.get("env", [])} for c in containers]
    return envs


VLLM_CAPABILITIES = {
    # what the vllm engine offers per `attention` mode (rerankd/engines/vllm/engine.py)
    "off": {Capability.GENERATE, Capability.LOGPROBS},
    "only": {Capability.ATTENTION, Capability.LOGPROBS},
    "eager": {Capability.GENERATE, Capability.LOGPROBS, Capability.ATTENTION},
    "lazy": {Capability.GENERATE, Capability.LOGPROBS, Capability.ATTENTION},
}


def _served(env: dict[str, str]) -> list[Capability]:
    """The capabilities (hence queues) of a vllm worker: its role, checked against its engine."""
    mode = json.loads(env["RERANKD_ENGINE_OPTIONS"]).get("attention", "lazy")
    return worker_capabilities(env.get("RERANKD_WORKER_ROLE", "auto"), "vllm", VLLM_CAPABILITIES[mode])


def test_both_forms_of_gpu_workers() -> None:
    """(a) workers that serve all four strategies and (b) workers by role, in compose and k8s: each
    role's engine can serve it (scoring: attention=only; generating: attention=off), one GPU each."""
    from rerankd.engines.options import validate_engine_options

    by_role: dict[str, int] = {}
    for env in _gpu_worker_envs():
        role = env.get("RERANKD_WORKER_ROLE", "auto")
        by_role[role] = by_role.get(role, 0) + 1
        served = _served(env)  # raises for a role the engine cannot serve
        options = json.loads(env["RERANKD_ENGINE_OPTIONS"])
        if role == "scoring":
            assert options["attention"] == "only" and Capability.GENERATE not in served
        elif role == "generating":
            assert options["attention"] == "off" and Capability.ATTENTION not in served
        else:
            assert served == [Capability.GENERATE, Capability.LOGPROBS, Capability.ATTENTION]
        if importlib.util.find_spec("vllm") is not None:
            validate_engine_options("vllm", options)
    assert by_role.get("auto", 0) >= 3 and by_role.get("scoring", 0) >= 2 and by_role.get("generating", 0) >= 2
    roles = {n: s for n, s in _compose()["services"].items() if "RERANKD_WORKER_ROLE" in s.get("environment", {})}
    assert roles and all(s.get("profiles") == ["by-role"] for s in roles.values())


def test_gpu_workers_serve_all_four_strategies() -> None:
    """vllm workers of form (a): generation and logprobs, plus ICR attention started with the
    worker, on the vLLM version the ICR plugin supports, their GPU shares within the budget."""
    from rerankd.engines.options import validate_engine_options
    from rerankd.engines.vllm.icr import SUPPORTED_VLLM_VERSIONS
    from rerankd.engines.vllm.memory import plan_shares

    envs = [e for e in _gpu_worker_envs() if e.get("RERANKD_WORKER_ROLE", "auto") in ("auto", "all")]
    assert len(envs) >= 3
    for env in envs:
        assert env["RERANKD_ENGINE"] == "vllm"
        options = json.loads(env["RERANKD_ENGINE_OPTIONS"])
        assert options["attention"] == "eager"
        plan = plan_shares(
            attention="eager",
            attention_max_models=options.get("attention_max_models", 2),
            **{k: options[k] for k in ("gpu_memory_utilization", "attention_gpu_memory_utilization") if k in options},
        )
        assert plan.generation is not None and plan.attention is not None and plan.total <= plan.budget + 1e-9
        if importlib.util.find_spec("vllm") is not None:  # the option names are VLLMEngine.load's
            validate_engine_options("vllm", options)
    image = re.search(r"^FROM\s+vllm/vllm-openai:v(\S+)\s+AS\s+worker", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert image is not None and image.group(1) in SUPPORTED_VLLM_VERSIONS
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["vllm"]
    assert f"vllm=={image.group(1)}" in extra  # the image's vLLM is the one the extra pins


@pytest.mark.parametrize("total_gib", [24.0, 79.2, 139.8])  # L4 / A10, H100 80GB, H200
def test_every_gpu_workers_shares_pass_vllms_start_up_rule(total_gib: float) -> None:
    """Each GPU worker of both forms, with its engine options, starts every engine it may run
    (all early-exit depths) on an idle GPU by vLLM's rule, as the worker checks at start-up."""
    from rerankd.engines.vllm.memory import GIB, GPUMemory, check_shares, plan_shares

    idle = GPUMemory(free_bytes=int((total_gib - 0.6) * GIB), total_bytes=int(total_gib * GIB))
    envs = _gpu_worker_envs()
    assert {e.get("RERANKD_WORKER_ROLE", "auto") for e in envs} >= {"auto", "scoring", "generating"}
    for env in envs:
        options = json.loads(env["RERANKD_ENGINE_OPTIONS"])
        keys = ("gpu_memory_budget", "gpu_memory_utilization", "attention_gpu_memory_utilization")
        plan = plan_shares(
            attention=options.get("attention", "lazy"),
            attention_max_models=options.get("attention_max_models", 2),
            **{k: options[k] for k in keys if k in options},
        )
        assert len(check_shares(plan, idle)) == len(plan.engines()) >= 1
    # each compose GPU worker plans for a GPU of its own: no two share a device
    devices = [
        d
        for n, svc in _compose()["services"].items()
        if n.startswith("worker")
        for r in svc["deploy"]["resources"]["reservations"]["devices"]
        for d in r["device_ids"]
    ]
    assert len(devices) == len(set(devices)) >= 4
