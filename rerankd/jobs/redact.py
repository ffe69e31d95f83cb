"""What tenants may see of server internals: error texts without URLs, addresses or worker names.

The worker stores :func:`redact`-ed error texts (the full text goes to its log); the API redacts
again when it shows a record, and shows workers only as :func:`worker_ref` ids.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

__all__ = ["redact", "redact_history", "worker_ref"]

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>)\]]+")
_IPV6 = re.compile(r"\[[0-9a-fA-F.%]*:[0-9a-fA-F:.%]*\](?::\d+)?")
_IPV6_BARE = re.compile(
    r"(?<![\w:])(?:[0-9a-fA-F]{0,4}(?::[0-9a-fA-F]{1,4})*::(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4})*)?"
    r"|(?:[0-9a-fA-F]{1,4}:){5,7}[0-9a-fA-F]{1,4})(?![\w:])"
)
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
# host:port, and a worker's hostname:pid (``name-1.example:8000``, ``gpu-node-3:4711``)
_HOST_PORT = re.compile(r"(?<![\w.:/@-])[a-zA-Z][a-zA-Z0-9_-]*(?:\.[a-zA-Z0-9_-]+)*:\d{1,7}\b(?![.:]\d)")
# urllib3 / requests: ``HTTPConnectionPool(host='vllm-0.internal', port=8000)``
_HOST_KW = re.compile(r"""\b(host|hostname|server)=(['"])[^'"]*\2""")
# names under the suffixes of private DNS (``gpu-3.cluster.local``, ``vllm.svc``, ``db.corp``)
_PRIVATE_NAME = re.compile(
    r"(?<![\w.-])[a-zA-Z0-9_-]+(?:\.[a-zA-Z0-9_-]+)*\.(?:local|internal|intranet|lan|home|corp|svc|cluster)\b(?![\w-])"
)
# absolute file paths of three or more parts (``/home/deploy/models/x/config.json``)
_PATH = re.compile(r"(?<![\w.:/<>-])/(?:[\w.@+-]+/){2,}[\w.@+-]*")
# in history lines, a worker id is a whole word: ``host:pid`` or ``name@host:pid``
_WORKER_WORD = re.compile(r"(?<!\S)([^\s:()]+:\d{1,7})(?=[\s)]|$)")


def redact(text: str, hosts: Iterable[str] = ()) -> str:
    """``text`` with URLs, IP addresses, ``host:port`` pairs, ``host='...'`` values, private DNS
    names (``*.local``, ``*.internal``, ...), absolute file paths and the names in ``hosts`` replaced."""
    text = _URL.sub("<url>", text)
    text = _HOST_KW.sub(lambda m: f"{m.group(1)}=<host>", text)
    text = _PATH.sub("<path>", text)
    text = _IPV6.sub("<address>", text)
    text = _IPV6_BARE.sub("<address>", text)
    text = _IPV4.sub("<address>", text)
    text = _HOST_PORT.sub("<address>", text)
    text = _PRIVATE_NAME.sub("<host>", text)
    for host in hosts:
        if host and len(host) > 2:
            text = re.sub(rf"(?<![\w-]){re.escape(host)}(?![\w-])", "<host>", text)
    return text


def worker_ref(worker_id: str | None) -> str | None:
    """An opaque, stable id for a worker (``wk_`` + 12 hex digits) that names no host or process."""
    if not worker_id:
        return None
    return "wk_" + hashlib.blake2b(worker_id.encode(), digest_size=6, person=b"rerankd-worker").hexdigest()


def redact_history(line: str) -> str:
    """A job history line with worker ids as :func:`worker_ref` ids."""
    return _WORKER_WORD.sub(lambda m: worker_ref(m.group(1)) or "", line)
