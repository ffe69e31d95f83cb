"""One ``vllm serve`` of SmolLM2 per test process, shared by the vLLM test modules, and a first window."""

from __future__ import annotations

import atexit
from pathlib import Path

from rerankd.launchers.vllm_server import VLLMServer
from rerankd.models.registry import DEFAULT_MODEL
from rerankd.prompts import Passage

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "trec-dl-2019-passage-bm25top100"

SYNTHETIC = [
    "Fleas live for two to three months; the life cycle runs from egg to larva, pupa and adult.",
    "Paris is the capital of France and its largest city.",
    "A flea's life cycle can last from two weeks to eight months depending on temperature.",
    "Dogs need regular baths; shampoo with oatmeal soothes itchy skin.",
    "Cats sleep up to sixteen hours a day.",
    "Adult fleas feed on blood and lay eggs that fall off the host into carpets.",
    "The Eiffel Tower was completed in 1889.",
    "Flea larvae avoid light and feed on organic debris for one to two weeks.",
    "Vacuuming removes flea eggs, larvae and pupae from carpets and furniture.",
    "Python is a programming language used for data science.",
]


def first_window(n: int = 10) -> tuple[str, list[Passage]]:
    """The first DL19 query and its first ``n`` BM25 passages (a synthetic set without the data)."""
    path = DATA / "candidates.jsonl"
    if path.is_file():
        from rerankd.formats.inputs import read_queries

        item = next(iter(read_queries(path)))
        return item.query.text, [Passage(text=c.text, title=c.title) for c in item.candidates[:n]]
    return "how long is life cycle of flea", [Passage(text=t) for t in SYNTHETIC[:n]]


_server: VLLMServer | None = None


def shared_server(model_dir: Path) -> VLLMServer:
    """The ``vllm serve`` of SmolLM2 (float32) for this test process, started once, not waited for."""
    global _server
    if _server is None:
        _server = VLLMServer(
            str(model_dir),
            served_name=DEFAULT_MODEL,
            dtype="float32",
            context_size=4096,
            cpu_kv_cache_gib=0.5,
            max_logprobs=20,
        ).start()
        atexit.register(_server.stop)  # also when this module's tests are deselected
    return _server
