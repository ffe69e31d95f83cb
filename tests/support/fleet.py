"""A fleet of "hosts" for failure tests: one API and several workers, each a process tree of its
own (``python -m rerankd.worker`` / ``rerankd.api`` started with ``sys.executable``, in a session
of its own), with its own state directories (``HOME``, ``XDG_*``, ``TMPDIR``) and, where the
kernel lets us (``unshare --uts``: root, or an unprivileged user namespace), its own hostname,
so worker ids (``hostname:pid``) name distinct hosts as in a real deployment.

Network namespaces are not used: a worker in one would need a veth pair and routes to reach
Redis and the API, which is more machinery than these tests are about.

The broker is a :class:`Broker`: ``redis`` (the job store's Redis, the default), or any broker
URL given as ``RERANKD_BROKER_URL`` (e.g. ``amqp://``) to every process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rerankd.jobs.redact import worker_ref
from rerankd.launchers.net import wait_http
from rerankd.launchers.process import ChildSpec, Supervisor, python_child, stop_process
from tests.support.stack import REPO

__all__ = ["FINAL", "Broker", "Event", "Fleet", "Host", "events", "fleet_env", "state_env", "uts_prefix"]

FINAL = {"succeeded", "failed", "cancelled", "expired"}

# Set the hostname inside the new UTS namespace, then become the real command (same pid).
_SETHOST = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execv(sys.argv[2], sys.argv[2:])"


@dataclass(frozen=True)
class Broker:
    """The broker the fleet's processes use: ``url=None`` is the job store's Redis."""

    name: str
    url: str | None = None

    def env(self) -> dict[str, str]:
        return {} if self.url is None else {"RERANKD_BROKER_URL": self.url}


@functools.cache
def uts_prefix() -> tuple[str, ...] | None:
    """The ``unshare`` argv that gives a child a hostname of its own, or ``None`` where the
    kernel or the user's rights allow none (the hosts then share this machine's name)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    for flags in (("--uts",), ("--user", "--map-root-user", "--uts")):
        argv = (unshare, *flags, sys.executable, "-c", _SETHOST)
        probe = [*argv, "rerankd-probe", sys.executable, "-c", "import socket; print(socket.gethostname())"]
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(probe, capture_output=True, text=True, timeout=30)
            if out.returncode == 0 and out.stdout.strip() == "rerankd-probe":
                return argv
    return None


@dataclass(frozen=True)
class Event:
    """One line of a job's history: ``<time> <what> <rest>`` (workers as ``wk_`` ids)."""

    at: float
    what: str
    rest: str

    @property
    def worker(self) -> str:
        """The worker named by a ``running``/``lost``/``succeeded``/``failed`` line."""
        return self.rest.split(" ", 1)[0]


def events(job: Mapping[str, Any]) -> list[Event]:
    out = []
    for line in job["history"]:
        at, what, *rest = line.split(" ", 2)
        out.append(Event(float(at), what, rest[0] if rest else ""))
    return out


@dataclass
class Host:
    """One worker "host": its process, hostname, state directory and log."""

    name: str
    hostname: str
    proc: subprocess.Popen[bytes]
    root: Path
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def worker_id(self) -> str:
        return f"{self.hostname}:{self.pid}"

    @property
    def ref(self) -> str:
        """The worker's opaque id in job records and ``/healthz`` (what API keys see)."""
        return worker_ref(self.worker_id) or ""

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> float:
        """``kill -9``; returns the wall-clock time right after it is dead."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        return time.time()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


def state_env(root: Path) -> dict[str, str]:
    """``HOME``, ``XDG_*`` and ``TMPDIR`` under ``root`` (created): a host's own disk."""
    dirs = {
        "HOME": "home",
        "XDG_CACHE_HOME": "cache",
        "XDG_CONFIG_HOME": "config",
        "XDG_DATA_HOME": "data",
        "XDG_STATE_HOME": "state",
        "TMPDIR": "tmp",
    }
    out = {}
    for var, sub in dirs.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        out[var] = str(root / sub)
    out["HF_HOME"] = str(root / "cache" / "huggingface")
    return out


@dataclass
class Fleet:
    """An API and worker hosts sharing ``env`` (each with its own state under ``root``)."""

    env: dict[str, str]
    root: Path
    keys: Mapping[str, str]
    """API key per owner (``RERANKD_API_KEYS`` of ``env``)."""
    url: str = ""
    hosts: dict[str, Host] = field(default_factory=dict)
    supervisor: Supervisor = field(default_factory=Supervisor)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _http: httpx.Client | None = None

    @property
    def http(self) -> httpx.Client:
        """One keep-alive client to the API (a new connection per request costs ~50 ms)."""
        if self._http is None:
            self._http = httpx.Client(base_url=self.url, timeout=30)
        return self._http

    @property
    def separate_hostnames(self) -> bool:
        return uts_prefix() is not None

    def _start(self, name: str, module: str, args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        prefix = uts_prefix()
        argv = python_child(module, args)
        if prefix is not None:
            argv = [*prefix, name, *argv]
        spec = ChildSpec(name, lambda: argv, env=env, cwd=REPO, log_path=self.root / f"{name}.log", restart=False)
        proc = self.supervisor.start(spec)
        self.procs.append(proc)
        return proc

    def start_api(self, port: int) -> subprocess.Popen[bytes]:
        env = {**self.env, **state_env(self.root / "api")}
        proc = self._start("api", "rerankd.api", ["--port", str(port)], env)
        self.url = f"http://127.0.0.1:{port}"
        wait_http(f"{self.url}/healthz", proc, timeout=120)
        return proc

    def start_worker(self, name: str, model: str, engine: str, concurrency: int = 4) -> Host:
        root = self.root / name
        env = {
            **self.env,
            **state_env(root),
            "RERANKD_MODEL": model,
            "RERANKD_ENGINE": engine,
            "RERANKD_WORKER_CONCURRENCY": str(concurrency),
        }
        proc = self._start(name, "rerankd.worker", ["--hostname", f"{name}@%h"], env)
        hostname = name if self.separate_hostnames else socket.gethostname()
        host = Host(name, hostname, proc, root, self.root / f"{name}.log")
        self.hosts[name] = host
        return host

    def headers(self, owner: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[owner]}"}

    def live_refs(self) -> set[str]:
        owner = next(iter(self.keys))
        resp = self.http.get("/healthz", headers=self.headers(owner), timeout=10)
        return {str(w["id"]) for w in resp.json().get("workers") or []}

    def wait_live(self, hosts: Iterable[Host], timeout: float = 180.0) -> None:
        """Wait until every host's worker heartbeats (as its own ``hostname:pid``)."""
        want = {h.ref: h for h in hosts}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for h in want.values():
                if h.proc.poll() is not None:
                    raise RuntimeError(f"worker {h.name} exited ({h.proc.returncode}):\n{h.text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                if set(want) <= self.live_refs():
                    return
            time.sleep(0.3)
        raise TimeoutError(f"workers not live after {timeout:.0f}s: {sorted(h.name for h in want.values())}")

    def submit(self, owner: str, query: str, key: str | None = None, model: str | None = None) -> str:
        """``POST /v1/jobs`` (one candidate); returns the accepted job's id."""
        body: dict[str, Any] = {"query": {"text": query}, "candidates": [{"docid": "a", "text": "x"}]}
        if model:
            body["model"] = model
        headers = {**self.headers(owner), **({"Idempotency-Key": key} if key else {})}
        resp = self.http.post("/v1/jobs", json=body, headers=headers)
        assert resp.status_code == 202, resp.text
        return str(resp.json()["id"])

    def job(self, owner: str, job_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/v1/jobs/{job_id}?include=history", headers=self.headers(owner))
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def wait(
        self, jobs: Mapping[str, str], until: Iterable[str] = FINAL, timeout: float = 60.0
    ) -> dict[str, dict[str, Any]]:
        """Poll ``{job_id: owner}`` until every job is in ``until`` (or ``timeout``); their records."""
        until = set(until)
        deadline = time.monotonic() + timeout
        while True:
            out = {j: self.job(owner, j) for j, owner in jobs.items()}
            if all(r["status"] in until for r in out.values()) or time.monotonic() > deadline:
                return out
            time.sleep(0.3)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGCONT (a paused host) and SIGTERM every process, SIGKILL what is left after ``timeout``."""
        if self._http is not None:
            self._http.close()
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.terminate()
        for proc in self.procs:
            stop_process(proc, timeout)
        for child in self.supervisor.children.values():
            if child.log_fh is not None:
                child.log_fh.close()
        self.supervisor.children.clear()


def fleet_env(**settings: str) -> dict[str, str]:
    """This process's environment without ``RERANKD_*``, with the repo importable and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RERANKD_")}
    return {**env, "PYTHONPATH": str(REPO), **settings}
