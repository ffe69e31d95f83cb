"""Results, the ICR memory expectation and the printed report of ``bench/gpu_smoke.py``."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from _smoke_models import Spec

from rerankd.engines.hf.attention import batched_context_query_attention

PREFILL_CHUNK = int(inspect.signature(batched_context_query_attention).parameters["chunk_size"].default)
"""Tokens per prefill chunk of the hf engine's ICR pass (its default)."""

FAR_ABOVE = 2.0
"""Measured ICR memory above this multiple of the expectation is flagged."""

GB = 1e9


def fmt_bytes(n: float) -> str:
    """``n`` bytes in GB, MB or kB (decimal units, as nvidia-smi and torch's summaries)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n / 1e3:.1f} kB"


@dataclass
class Row:
    """One strategy on one model: per-query times and checks."""

    model: str
    strategy: str
    seconds: list[float] = field(default_factory=list)
    permutations_ok: int = 0
    failures: list[str] = field(default_factory=list)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    warnings: int = 0
    skipped: int = 0


@dataclass
class IcrMemory:
    """ICR's memory on one model: the prompt's shape and what the device measured."""

    spec: Spec
    dtype_bytes: int
    weights: int
    context_tokens: int = 0
    span_tokens: int = 0
    chunks: int = 1
    resident: int = 0
    """Bytes allocated just before the ICR call (weights and whatever the engine keeps)."""
    peak: int | None = None
    """Peak bytes allocated during the call (``None``: not measurable on this device)."""

    @property
    def measured(self) -> int | None:
        return None if self.peak is None else self.peak - self.resident

    def expectation(self) -> dict[str, int]:
        """Bytes ICR should need on top of the weights, term by term (all O(span x prompt) or less).

        kv: the context's KV cache (2 x layers x kv_heads x head_dim x tokens x dtype bytes);
        rows: the query-span attention rows in float32 for every layer at once (layers x heads x
        span x tokens x 4; an upper bound: the engine keeps one layer's rows at a time);
        prefill: one layer's working set for a prefill chunk (MLP activations, keys/values
        repeated to every head for sdpa, the chunk's mask).
        """
        s = self.spec
        n, q = self.context_tokens, self.span_tokens
        c = min(PREFILL_CHUNK, n)
        b = self.dtype_bytes
        hidden, inter = int(s.dims["hidden_size"]), int(s.dims["intermediate_size"])
        kv = 2 * s.layers * s.kv_heads * s.head_dim * (n + q) * b
        rows = s.layers * s.heads * q * (n + q) * 4
        prefill = c * (3 * inter + 4 * hidden) * b + 2 * s.heads * n * s.head_dim * b + c * n * b
        return {"kv": kv, "rows": rows, "prefill": prefill, "total": kv + rows + prefill}

    def full_matrix(self) -> int:
        """One layer's full prompt x prompt attention (heads x tokens^2 x dtype bytes)."""
        return self.spec.heads * self.context_tokens**2 * self.dtype_bytes

    def flagged(self) -> bool:
        m = self.measured
        return m is not None and m > FAR_ABOVE * self.expectation()["total"]


@dataclass
class Report:
    header: list[str]
    rows: list[Row] = field(default_factory=list)
    icr: dict[str, IcrMemory] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    budget_hit: bool = False

    def row(self, model: str, strategy: str) -> Row:
        for r in self.rows:
            if r.model == model and r.strategy == strategy:
                return r
        r = Row(model, strategy)
        self.rows.append(r)
        return r

    def status(self) -> tuple[int, str]:
        """Exit status and a one-line verdict."""
        bad = [f"{r.model}/{r.strategy}" for r in self.rows if r.failures]
        if bad:
            return 1, f"FAIL: not a permutation or an error in {', '.join(bad)}"
        skipped = sum(r.skipped for r in self.rows)
        if self.budget_hit or skipped:
            return 3, f"PARTIAL: the time budget ran out ({skipped} strategy run(s) skipped); the rest passed"
        flagged = [k for k, m in self.icr.items() if m.flagged()]
        if flagged:
            return 4, f"FLAG: ICR memory far above the O(span x prompt) expectation on {', '.join(flagged)}"
        return 0, "OK: every result is a permutation of its input ids"

    def lines(self, elapsed_s: float) -> list[str]:
        out = ["", "== gpu_smoke report ==", *self.header]
        out.append(
            f"{'model':<11} {'strategy':<15} {'queries':>7} {'s/query':>8} {'calls/q':>7} "
            f"{'prompt tok/q':>12} {'gen tok/q':>9}  permutation check"
        )
        for r in self.rows:
            n = len(r.seconds)
            if n:
                check = f"ok {r.permutations_ok}/{n}" if not r.failures else f"FAILED {len(r.failures)}/{n}"
                out.append(
                    f"{r.model:<11} {r.strategy:<15} {n:>7} {sum(r.seconds) / n:>8.2f} {r.calls / n:>7.1f} "
                    f"{r.prompt_tokens / n:>12.0f} {r.completion_tokens / n:>9.1f}  {check}"
                    + (f" ({r.warnings} parse/fit warnings)" if r.warnings else "")
                )
            elif r.failures:
                out.append(f"{r.model:<11} {r.strategy:<15} {'-':>7}  FAILED: {r.failures[0]}")
            if r.skipped:
                out.append(f"{r.model:<11} {r.strategy:<15} skipped {r.skipped} quer(y/ies): time budget")
            out.extend(f"    {f}" for f in r.failures[:3])
        for key, m in self.icr.items():
            out.extend(_icr_lines(key, m))
        out.extend(self.notes)
        code, verdict = self.status()
        out.append(f"elapsed {elapsed_s:.1f} s; exit {code}; RESULT {verdict}")
        return out


def _icr_lines(key: str, m: IcrMemory) -> list[str]:
    if not m.context_tokens:
        return []
    e = m.expectation()
    s = m.spec
    out = [
        f"ICR memory {key}: context N={m.context_tokens} tokens, query span S={m.span_tokens} tokens"
        + (f" ({m.chunks} chunks)" if m.chunks > 1 else "")
        + f", weights {fmt_bytes(m.weights)} (L={s.layers} H={s.heads} kv={s.kv_heads} hd={s.head_dim})",
        f"  expected O(S x N) = {fmt_bytes(e['total'])}: KV cache 2*L*kv*hd*N*{m.dtype_bytes}B {fmt_bytes(e['kv'])}"
        f" + rows L*H*S*N*4B {fmt_bytes(e['rows'])}"
        f" + one layer's prefill chunk of {min(PREFILL_CHUNK, m.context_tokens)} tokens {fmt_bytes(e['prefill'])}",
    ]
    if m.measured is None:
        out.append("  measured: n/a on this device (torch.cuda.max_memory_allocated needs CUDA)")
    else:
        ratio = m.measured / e["total"] if e["total"] else float("inf")
        verdict = f"FLAG: more than {FAR_ABOVE:g}x the expectation" if m.flagged() else "ok"
        out.append(
            f"  measured peak - resident before the call = {fmt_bytes(m.measured)} "
            f"({ratio:.2f}x expected; peak {fmt_bytes(m.peak or 0)}, resident {fmt_bytes(m.resident)}): {verdict}"
        )
    full = m.full_matrix()
    out.append(
        f"  contrast: one full N x N attention matrix (H*N^2*{m.dtype_bytes}B, one layer) = {fmt_bytes(full)}"
        f"; kept for every layer (as output_attentions does) {fmt_bytes(full * s.layers)}"
    )
    return out
