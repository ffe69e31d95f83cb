"""RabbitMQ for tests: a server, and a vhost of its own per test.

:func:`find_rabbit` picks the server:

1. ``TEST_AMQP_URL`` (``amqp://user:password@host:port/``), managed with the command in
   ``TEST_RABBITMQCTL`` (default ``rabbitmqctl``); not ``RERANKD_*`` names, which the settings
   refuse unless they are settings;
2. else the one on 127.0.0.1:5672 (guest/guest) when ``rabbitmqctl`` may manage it (root);
3. else a private node (:class:`PrivateNode`: ``rabbitmq-server`` of the ``rabbitmq-server``
   package started as a child, its own node name, ports, data and log directories, stopped by pid);
4. else the test is skipped (failed under ``CI``).

Vhosts are created and deleted with ``rabbitmqctl`` (no management plugin needed):
:meth:`Rabbit.vhost` is a context manager giving the vhost's AMQP URL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

from rerankd.launchers.net import free_port, reachable

__all__ = ["PrivateNode", "Rabbit", "find_rabbit"]

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
"""The package's server script that runs as the calling user (``/usr/sbin``'s switches to ``rabbitmq``)."""
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"


@dataclass
class Rabbit:
    """A RabbitMQ server the tests may add vhosts to."""

    host: str
    port: int
    user: str = "guest"
    password: str = "guest"
    ctl: list[str] = field(default_factory=lambda: ["rabbitmqctl"])
    ctl_env: dict[str, str] | None = None
    node: PrivateNode | None = None

    def url(self, vhost: str) -> str:
        return f"amqp://{self.user}:{self.password}@{self.host}:{self.port}/{quote(vhost, safe='')}"

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        out = subprocess.run(
            [*self.ctl, *args], capture_output=True, text=True, timeout=timeout, env=self.ctl_env, check=False
        )
        if out.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: exit {out.returncode}: {out.stderr or out.stdout}")
        return out.stdout

    @contextlib.contextmanager
    def vhost(self, name: str | None = None) -> Iterator[str]:
        """A new vhost (the user has every permission on it), deleted afterwards; yields its URL."""
        name = name or f"rerankd-test-{secrets.token_hex(4)}"
        self.rabbitmqctl("add_vhost", name)
        try:
            self.rabbitmqctl("set_permissions", "-p", name, self.user, ".*", ".*", ".*")
            yield self.url(name)
        finally:
            with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
                self.rabbitmqctl("delete_vhost", name)

    def queue_depths(self, vhost_url: str) -> dict[str, int]:
        """``{queue: ready messages}`` of a vhost (``rabbitmqctl list_queues``)."""
        vhost = unquote(urlsplit(vhost_url).path[1:]) or "/"
        out = self.rabbitmqctl("list_queues", "-q", "-p", vhost, "name", "messages_ready", "--no-table-headers")
        rows = (line.split("\t") for line in out.splitlines() if "\t" in line)
        return {name: int(n) for name, n in rows}


class PrivateNode:
    """A RabbitMQ node of this test run (see the module docstring); :meth:`restart` keeps its data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = f"rerankd-test-{os.getpid()}-{secrets.token_hex(3)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        (root / "enabled_plugins").write_text("[].\n")
        (root / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users.guest = true\n")
        self.env = {
            **os.environ,
            "HOME": str(root),  # the Erlang cookie of the node and of rabbitmqctl
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(root / "log"),
            "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(root / "pid"),
        }

    def rabbit(self) -> Rabbit:
        return Rabbit("127.0.0.1", self.port, ctl=[CTL, "-n", self.name], ctl_env=self.env, node=self)

    def start(self, timeout: float = 120.0) -> None:
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen([SERVER], env=self.env, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not reachable(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (self.root / "server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"private RabbitMQ node did not start:\n{tail}")
            time.sleep(0.3)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM the node's process group (our child's), SIGKILL after ``timeout``."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        deadline = time.monotonic() + timeout  # beam may outlive the launcher script briefly
        while reachable(self.port) and time.monotonic() < deadline:
            time.sleep(0.2)

    def restart(self) -> None:
        self.stop()
        self.start()


def _ctl_works(ctl: list[str]) -> bool:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run([*ctl, "-q", "list_vhosts"], capture_output=True, timeout=60).returncode == 0
    return False


def private_node_available() -> bool:
    return Path(SERVER).exists() and Path(CTL).exists()


def find_rabbit(root: Path) -> tuple[Rabbit, PrivateNode | None]:
    """A server for the tests (see the module docstring); the private node it started, if any."""
    configured = os.environ.get("TEST_AMQP_URL")
    if configured:
        u = urlsplit(configured)
        ctl = shlex.split(os.environ.get("TEST_RABBITMQCTL", "rabbitmqctl"))
        return Rabbit(
            u.hostname or "127.0.0.1", u.port or 5672, u.username or "guest", u.password or "guest", ctl
        ), None
    system = ["rabbitmqctl"]
    if reachable(5672) and shutil.which("rabbitmqctl") and _ctl_works(system):
        return Rabbit("127.0.0.1", 5672, ctl=system), None
    if not private_node_available():
        raise FileNotFoundError("no RabbitMQ: set TEST_AMQP_URL, or install the rabbitmq-server package (make setup)")
    node = PrivateNode(root / f"rabbitmq-{socket.gethostname()}")
    node.start()
    return node.rabbit(), node


@contextlib.contextmanager
def rabbit_for_tests(root: Path, what: str) -> Iterator[Rabbit]:
    """A server for a test module (:func:`find_rabbit`; a private node is stopped afterwards). None
    available: the tests are skipped, or fail under CI (``CI=true``), naming ``what`` needed it."""
    try:
        server, node = find_rabbit(root)
    except (FileNotFoundError, RuntimeError) as e:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI: no RabbitMQ for {what}: {e}")
        pytest.skip(str(e))
    try:
        yield server
    finally:
        if node is not None:
            node.stop()
