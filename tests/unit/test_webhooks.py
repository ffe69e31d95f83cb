"""Webhooks without Redis: the egress policy (SSRF matrix), Standard Webhooks signatures checked
with the ``standardwebhooks`` package, and one delivery over a pinned connection to a real
loopback HTTP server."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from rerankd.config import Settings, check_webhook_secret
from rerankd.webhooks.admission import check_callback
from rerankd.webhooks.delivery import event_body, post_signed
from rerankd.webhooks.egress import EgressError, EgressPolicy, parse_ip_literal
from rerankd.webhooks.signing import SecretBook, signature_header, verify


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


REFUSED = [
    # loopback in every notation
    "http://127.0.0.1/hook",
    "http://127.0.0.1./hook",
    "http://127.1/",
    "http://127.0.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0x7F.0.0.1/",
    "http://0x7f.1/",
    "http://017700000001/",
    "http://0177.0.0.1/",
    "http://127.000.000.001/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]:8080/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::127.0.0.1]/",
    "http://[2002:7f00:1::1]/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://api.localhost/",
    # unspecified
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    # link-local, cloud metadata
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/",
    "http://0xa9fea9fe/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    # private, CGNAT, ULA, site-local
    "http://10.0.0.1/",
    "http://10.1/",
    "http://172.16.5.4/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fd00::1]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",
    "http://[::ffff:10.0.0.1]/",
    # multicast, broadcast, reserved, documentation, benchmarking
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://[ff02::1]/",
    "http://255.255.255.255/",
    "http://240.0.0.1/",
    "http://192.0.2.1/",
    "http://198.51.100.7/",
    "http://203.0.113.9/",
    "http://198.18.0.1/",
    "http://192.0.0.8/",
    "http://[2001:db8::1]/",
    "http://[2001::1]/",
    "http://[100::1]/",
    # not http(s), credentials, no or bad host or port
    "ftp://example.com/x",
    "file:///etc/passwd",
    "gopher://example.com/",
    "http://user:pass@example.com/",
    "http://user@example.com/",
    "http://127.0.0.1\\@example.com/",
    "http:///hook",
    "http://%31%32%37.0.0.1/",
    "http://exa mple.com/",
    "http://example.com:0/",
    "http://1.2.3.999/",
    "http://localhost../",
]

ALLOWED = [
    "http://8.8.8.8/hook",
    "https://93.184.216.34:8443/x?y=1",
    "http://134744072/",  # 8.8.8.8 in decimal: a public address is a public address
    "http://[2606:4700:4700::1111]/",
    "http://[::ffff:8.8.8.8]/",
    "https://hooks.example.com/x",
]


async def _public(host: str, port: int) -> list[str]:
    return {"hooks.example.com": ["93.184.216.34", "2606:2800:220:1::1"]}.get(host, [])


def _resolve(policy: EgressPolicy, url: str) -> tuple[str, ...]:
    return asyncio.run(policy.resolve(url)).addresses


@pytest.mark.parametrize("url", REFUSED)
def test_ssrf_matrix_is_refused(url: str) -> None:
    with pytest.raises(EgressError):
        _resolve(EgressPolicy(resolver=_public), url)


@pytest.mark.parametrize("url", ALLOWED)
def test_public_targets_are_allowed(url: str) -> None:
    assert _resolve(EgressPolicy(resolver=_public), url)


def test_refusals_name_the_reason() -> None:
    policy = EgressPolicy(resolver=_public)
    cases = {
        "http://2130706433/": "is the address 127.0.0.1, which is loopback",
        "http://[::ffff:169.254.169.254]/": "link-local (IPv4 169.254.169.254 inside IPv6)",
        "http://100.64.0.1/": "shared (CGNAT)",
        "http://x.localhost/": "is a loopback name",
        "http://u:p@example.com/": "must not carry credentials",
        "ftp://example.com/": "must be an http(s) URL",
        "http://nowhere.example.com/": "does not resolve",
    }
    for url, needle in cases.items():
        with pytest.raises(EgressError) as e:
            _resolve(policy, url)
        assert needle in str(e.value), (url, str(e.value))


def test_a_name_is_refused_when_any_address_is_forbidden() -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(EgressError, match="resolves to a non-public address"):
        _resolve(EgressPolicy(resolver=mixed), "https://rebind.example.com/")
    # the machine's own name resolves to one of its (non-public) addresses, or not at all
    with pytest.raises(EgressError):
        _resolve(EgressPolicy(), f"http://{socket.gethostname()}/")


def test_ip_literal_notations() -> None:
    assert str(parse_ip_literal("2130706433")) == "127.0.0.1"
    assert str(parse_ip_literal("0x7f000001")) == "127.0.0.1"
    assert str(parse_ip_literal("0177.0.0.1")) == "127.0.0.1"
    assert str(parse_ip_literal("127.1")) == "127.0.0.1"
    assert str(parse_ip_literal("10.1")) == "10.0.0.1"
    assert str(parse_ip_literal("192.168.257")) == "192.168.1.1"
    assert parse_ip_literal("example.com") is None and parse_ip_literal("1.2.3.example") is None
    with pytest.raises(EgressError):
        parse_ip_literal("08.0.0.1")


def test_allowlist_by_host_and_by_network() -> None:
    by_host = EgressPolicy(allow_hosts=["127.0.0.1"], resolver=_public)
    assert _resolve(by_host, "http://127.0.0.1:9/hook") == ("127.0.0.1",)
    for other in ("http://127.1:9/", "http://2130706433:9/", "http://localhost:9/", "http://[::1]:9/"):
        with pytest.raises(EgressError):
            _resolve(by_host, other)
    by_net = EgressPolicy(allow_cidrs=["10.0.0.0/8"], resolver=_public)
    assert _resolve(by_net, "http://10.1.2.3/") == ("10.1.2.3",)
    with pytest.raises(EgressError):
        _resolve(by_net, "http://192.168.0.1/")
    with pytest.raises(EgressError, match="credentials"):  # never allowlisted
        _resolve(by_host, "http://u:p@127.0.0.1/")


def test_settings_validate_per_key_secrets() -> None:
    a, b = new_secret(), new_secret()
    one_string: dict[str, Any] = {"alice": [a, b], "bob": a}  # a single secret may be a plain string
    s = Settings(webhook_secrets=one_string, webhook_secret="shared-text-secret")
    book = SecretBook(s.webhook_secrets, s.webhook_secret)
    assert book.for_owner("alice") == (a, b) and book.for_owner("bob") == (a,)
    assert book.for_owner("carol") == ("shared-text-secret",)
    empty = Settings()
    assert SecretBook(empty.webhook_secrets, empty.webhook_secret).for_owner("alice") == ()
    with pytest.raises(ValueError, match="two during a rotation"):
        Settings(webhook_secrets={"alice": [a, b, new_secret()]})
    with pytest.raises(ValueError, match="24 to 64 bytes"):
        Settings(webhook_secrets={"alice": ["whsec_" + base64.b64encode(b"short").decode()]})
    with pytest.raises(ValueError, match="whsec_"):
        check_webhook_secret("plain")
    with pytest.raises(ValueError, match="webhook_allow_cidrs"):
        Settings(webhook_allow_cidrs="10.0.0.0/8,not-a-net")


def test_check_callback_at_job_creation() -> None:
    s = Settings(webhook_secrets={"alice": [new_secret()]}, webhook_allow_hosts="127.0.0.1")
    asyncio.run(check_callback(s, "alice", "http://127.0.0.1:9/hook"))
    with pytest.raises(ValueError, match=r"^callback_url: host '169\.254\.169\.254' is the address"):
        asyncio.run(check_callback(s, "alice", "http://169.254.169.254/"))
    with pytest.raises(ValueError, match=r"^callback_url: no webhook signing secret .* 'bob'"):
        asyncio.run(check_callback(s, "bob", "http://127.0.0.1:9/hook"))


def test_rotation_signatures_verify_with_standardwebhooks() -> None:
    new, old = new_secret(), new_secret()
    body = event_body("job.succeeded", 1_700_000_000.0, {"id": "job_1"})
    import time

    ts = int(time.time())
    headers = {
        "webhook-id": "msg_job_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": signature_header([new, old], "msg_job_1", ts, body),
    }
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):  # a receiver holding either secret verifies
        assert Webhook(secret).verify(body, headers) == {
            "type": "job.succeeded",
            "timestamp": "2023-11-14T22:13:20Z",
            "data": {"id": "job_1"},
        }
        assert verify(secret, headers, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


class _Receiver(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []
    status: ClassVar[int] = 204

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        _Receiver.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(_Receiver.status)
        if _Receiver.status == 302:
            self.send_header("location", "http://169.254.169.254/")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[int]:
    _Receiver.seen, _Receiver.status = [], 204
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()


def test_delivery_connects_to_the_checked_address_with_the_original_host(receiver: int) -> None:
    async def rebinding(host: str, port: int) -> list[str]:
        rebinding.calls += 1  # type: ignore[attr-defined]
        return ["127.0.0.1"]

    rebinding.calls = 0  # type: ignore[attr-defined]
    policy = EgressPolicy(allow_cidrs=["127.0.0.1/32"], resolver=rebinding)
    secret = new_secret()
    body = event_body("job.failed", 1_700_000_000.0, {"id": "job_2"})

    async def run() -> int:
        target = await policy.resolve(f"http://hooks.example.test:{receiver}/in?x=1")
        return await post_signed(target, body, msg_id="msg_job_2", secrets=[secret], timeout_s=5)

    assert asyncio.run(run()) == 204
    assert rebinding.calls == 1  # type: ignore[attr-defined]
    path, headers, got = _Receiver.seen[0]
    assert path == "/in?x=1" and got == body
    assert headers["host"] == f"hooks.example.test:{receiver}" and headers["webhook-id"] == "msg_job_2"
    assert json.loads(Webhook(secret).verify(got, headers) and got) == json.loads(body)

    _Receiver.status = 302  # a redirect is an answer, never followed
    assert asyncio.run(run()) == 302 and len(_Receiver.seen) == 2


def test_https_keeps_sni_and_verification_on_the_host_name() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    async def run() -> int:
        target = await EgressPolicy(resolver=resolver).resolve("https://hooks.example.com/x")
        return await post_signed(
            target, b"{}", msg_id="m", secrets=[new_secret()], timeout_s=5, transport=httpx.MockTransport(handler)
        )

    assert asyncio.run(run()) == 200
    (req,) = seen
    assert str(req.url) == "https://93.184.216.34/x"
    assert req.headers["host"] == "hooks.example.com"
    assert req.extensions["sni_hostname"] == "hooks.example.com"


@pytest.mark.parametrize(("cert_name", "ok"), [("hooks.example.test", True), ("other.example.test", False)])
def test_https_to_the_pinned_address_verifies_the_host_names_certificate(cert_name: str, ok: bool) -> None:
    """A real TLS server on 127.0.0.1: the client connects there, sends SNI ``hooks.example.test``
    and accepts only a certificate for that name."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(cert_name).configure_cert(server_ctx)
    sni: list[str | None] = []
    server_ctx.sni_callback = lambda sock, name, ctx: sni.append(name)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    _Receiver.seen, _Receiver.status = [], 204
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]

    async def pinned(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    async def run() -> int:
        policy = EgressPolicy(allow_cidrs=["127.0.0.1/32"], resolver=pinned)
        target = await policy.resolve(f"https://hooks.example.test:{port}/tls")
        return await post_signed(target, b"{}", msg_id="m", secrets=[new_secret()], timeout_s=5, verify=client_ctx)

    try:
        if ok:
            assert asyncio.run(run()) == 204
            assert _Receiver.seen[0][1]["host"] == f"hooks.example.test:{port}"
        else:
            with pytest.raises(httpx.ConnectError, match="certificate"):
                asyncio.run(run())
            assert _Receiver.seen == []
        assert sni[0] == "hooks.example.test"
    finally:
        server.shutdown()
