"""The console's assets: shipped in the package, served at /ui, nothing loaded from elsewhere."""

from __future__ import annotations

import re
from importlib import resources

from fastapi.testclient import TestClient

from rerankd.api.app import create_app
from rerankd.api.routers.ui import ASSETS
from rerankd.config import Settings


def test_assets_are_package_data_and_self_contained() -> None:
    folder = resources.files("rerankd.api").joinpath("ui")
    for name in ASSETS:
        text = folder.joinpath(name).read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), f"{name} loads something from outside the server"
    html = folder.joinpath("index.html").read_text(encoding="utf-8")
    assert 'src="/ui/app.js"' in html and 'href="/ui/style.css"' in html
    assert 'rel="icon" href="data:,"' in html  # no /favicon.ico request (a 404 in the console)


def test_served_without_a_key() -> None:
    client = TestClient(create_app(Settings(api_keys="alice:k1")))  # no lifespan: no Redis needed
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"
    index = client.get("/ui/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in index.headers["content-security-policy"]
    assert client.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/ui/style.css").headers["content-type"].startswith("text/css")
    missing = client.get("/ui/secrets.txt")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert "/ui/" not in client.get("/openapi.json").json()["paths"]
