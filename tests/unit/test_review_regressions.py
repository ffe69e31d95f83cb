"""Regressions found by the issue-12 review (hostile tenant / unlucky operator)."""

from __future__ import annotations

import asyncio

import pytest

from rerankd.webhooks.egress import EgressError, EgressPolicy, parse_callback_url


@pytest.mark.parametrize(
    "url",
    [
        "http://[2606:4700::1%25lo]/hook",  # a public address with a zone id: connect() would use the zone
        "http://[2001:4860:4860::8888%25eth0]:8443/",
        "http://[fe80::1%25eth0]/",
        "http://[::ffff:7f00:1%25x]/",
    ],
)
def test_ipv6_zone_ids_are_refused_in_callback_urls(url: str) -> None:
    with pytest.raises(EgressError, match="zone id"):
        parse_callback_url(url)

    async def resolve() -> None:
        await EgressPolicy(resolver=lambda host, port: asyncio.sleep(0, result=["8.8.8.8"])).resolve(url)

    with pytest.raises(EgressError, match="zone id"):
        asyncio.run(resolve())


def test_the_same_public_ipv6_address_without_a_zone_id_is_allowed() -> None:
    assert str(parse_callback_url("http://[2606:4700::1]/hook").literal) == "2606:4700::1"


def test_hanging_callback_dns_does_not_starve_the_default_executor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Callback hosts whose DNS hangs occupy only the egress resolver's own threads: the loop's
    default executor (which resolves the Redis host on reconnects) stays free."""
    import socket
    import threading

    from rerankd.webhooks import egress

    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host: str, *args: object, **kw: object) -> object:
        if host.endswith(".hang.test"):
            release.wait(30)
            raise socket.gaierror("hung")
        return real(host, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    async def main() -> str:
        loop = asyncio.get_running_loop()
        hanging = [asyncio.ensure_future(egress.system_resolver(f"h{i}.hang.test", 80)) for i in range(64)]
        await asyncio.sleep(0)
        try:  # more hung lookups than the default executor has threads, yet it still serves
            infos = await asyncio.wait_for(loop.getaddrinfo("127.0.0.1", 6379), 20)
            return str(infos[0][4][0])
        finally:
            release.set()
            await asyncio.gather(*hanging, return_exceptions=True)

    assert asyncio.run(main()) == "127.0.0.1"


def test_an_infinite_deadline_is_a_422_not_a_500() -> None:
    """``"deadline_s": 1e999`` (JSON ``Infinity`` after parsing) used to crash ``int(deadline)``."""
    import socket

    from fastapi.testclient import TestClient

    from rerankd.api.app import create_app
    from rerankd.config import Settings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0", redis_timeout_s=0.5)
    job = '{"query": {"text": "q"}, "candidates": [{"docid": "a", "text": "t"}], "deadline_s": %s}'
    with TestClient(create_app(settings), client=("127.0.0.1", 5555)) as client:
        for value in ("1e999", "Infinity", "-Infinity", "NaN"):
            resp = client.post("/v1/jobs", content=job % value, headers={"content-type": "application/json"})
            assert resp.status_code == 422, (value, resp.text)
            assert resp.json()["field"] == "deadline_s"


def test_engine_errors_lose_urllib3_hosts_private_names_and_paths() -> None:
    from rerankd.jobs.redact import redact

    text = (
        "HTTPConnectionPool(host='vllm-0.prod', port=8000): Max retries exceeded; "
        "then gpu-node-3.cluster.local refused; "
        "OSError: [Errno 2] No such file or directory: '/home/deploy/models/llama/config.json'"
    )
    clean = redact(text)
    for secret in ("vllm-0", "gpu-node-3", "cluster.local", "/home/deploy", "llama"):
        assert secret not in clean, clean
    assert clean.startswith("HTTPConnectionPool(host=<host>, port=8000): Max retries exceeded")
    for plain in ("window_size must be between 2 and 100", "documents[0]: 51 characters exceed the limit of 50"):
        assert redact(plain) == plain
