"""GPU smoke check: every strategy on the hf engine with 7B-sized random models, in minutes.

Builds random-weight Qwen2-7B-Instruct and Mistral-7B-Instruct-v0.3 architectures directly on the
device (no download: dimensions written in, a local byte-level BPE tokenizer, vocabulary sized to
it; see ``bench/_smoke_models.py``), wraps each in rerankd's ``HFEngine`` and runs
sliding_window (20/10), full_ranking, first and icr over ``--queries`` synthetic queries of
``--passages`` passages x ``--words`` words.  It checks that every result is a permutation of
the input ids and prints s/query per strategy and model, and for ICR the peak GPU memory above
what was resident before the call, against the O(query span x prompt) expectation (and, for
contrast, the size of one full prompt x prompt attention matrix).  Random weights write junk, so
generation is capped at ``--max-new-tokens`` (printed).  ``--budget-s`` bounds the whole run: work
predicted to overrun is skipped, and a watchdog prints the report and exits at budget + 20 s.

Needs only torch, transformers, tokenizers, numpy, jinja2, filelock, tqdm and rerankd's own
pure-Python dependencies pydantic (+ pydantic-core, annotated-types, typing-inspection) and
platformdirs; the GPU machine's image lacks the last two, so they travel as wheels (bench/README.md):

    bash bench/gpu_wheels.sh      # once, here: wheels into .whl/ (ignored by git)
    # then, on the GPU machine (the device tool's ``run``, carry [".whl"], timeout_s 420):
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
        .whl/*.whl && export PYTHONPATH=/tmp/site; set -o pipefail; \
        PYTHONUNBUFFERED=1 python3 bench/gpu_smoke.py --device cuda 2>&1 | tee $OUT/gpu_smoke.log

CPU proof (tiny models of the same structure, a few passages; tests/integration/test_gpu_smoke.py):

    python bench/gpu_smoke.py --tiny --device cpu

Exit status: 0 all checks passed; 1 a result was not a permutation (or a strategy raised);
2 a dependency or the device is missing; 3 the budget ran out (partial report);
4 ICR's measured memory was far above the expectation.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

T_START = time.monotonic()
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

NEEDED = {
    "torch": "torch",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "numpy": "numpy",
    "jinja2": "jinja2",
    "filelock": "filelock",
    "tqdm": "tqdm",
    "pydantic": "pydantic",
    "pydantic_core": "pydantic-core",
    "annotated_types": "annotated-types",
    "typing_inspection": "typing-inspection",
    "platformdirs": "platformdirs",
}
"""What the import path of this script (rerankd.engines.hf.engine + the four strategies) needs."""

STRATEGIES = ("sliding_window", "full_ranking", "first", "icr")


def _missing_modules() -> list[str]:
    return [dist for mod, dist in NEEDED.items() if importlib.util.find_spec(mod) is None]


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--tiny", action="store_true", help="tiny models of the same structure (the CPU proof)")
    ap.add_argument("--models", nargs="+", default=["qwen2-7b", "mistral-7b"], choices=["qwen2-7b", "mistral-7b"])
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    ap.add_argument("--queries", type=int, default=None, help="default 2; --tiny 1")
    ap.add_argument("--passages", type=int, default=None, help="per query (default 100; --tiny 22: two windows)")
    ap.add_argument("--words", type=int, default=None, help="per passage (default 100; --tiny 15)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="generation cap (default 32; --tiny 6)")
    ap.add_argument("--vocab", type=int, default=None, help="BPE vocabulary (default 8192; --tiny 1024)")
    ap.add_argument("--budget-s", type=float, default=300.0, help="whole-run time budget in seconds")
    args = ap.parse_args(argv)
    tiny = args.tiny
    defaults = {
        "queries": (1, 2),
        "passages": (22, 100),
        "words": (15, 100),
        "max_new_tokens": (6, 32),
        "vocab": (1024, 8192),
    }
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if tiny else full)
    for name in defaults:
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    missing = _missing_modules()
    if missing:
        print(
            f"gpu_smoke: missing Python package(s): {', '.join(missing)}.\n"
            "The GPU machine's image has torch and transformers but not rerankd's pure-Python deps "
            "pydantic (+ pydantic-core, annotated-types, typing-inspection) and platformdirs: run "
            "`bash bench/gpu_wheels.sh` here, carry .whl, and install them first (bench/README.md).",
            file=sys.stderr,
        )
        return 2
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError:
        device = torch.device("meta")  # refused just below
    if device.type not in ("cuda", "cpu"):
        print(f"gpu_smoke: --device must be cuda, cuda:N or cpu, got {args.device!r}", file=sys.stderr)
        return 2
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            print(
                f"gpu_smoke: --device {args.device} but torch {torch.__version__} sees no CUDA device", file=sys.stderr
            )
            return 2
        if device.index is not None:
            if device.index >= count:
                print(f"gpu_smoke: --device {args.device} but this machine has {count} CUDA device(s)", file=sys.stderr)
                return 2
            torch.cuda.set_device(device)  # so that plain "cuda" tensors and stats mean this one
    from _smoke_run import run_smoke

    return run_smoke(args, device, T_START)


if __name__ == "__main__":
    sys.exit(main())
