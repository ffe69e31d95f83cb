"""``rerankd distill``: teach -> train -> eval, one resumable command whose stages also run alone.

Work folder layout (``-w WORK``)::

    WORK/teach/NAME.trec (+ .journal.jsonl)   the teacher's run of each query file NAME.jsonl
    WORK/student/                             the student (its card: rerankd-student.json)
    WORK/eval/                                runs and report.json of the held-out evaluation

Every stage skips finished work: teach resumes its journals (through the queue too), train
resumes from its last checkpoint or returns a finished student, eval is cheap and reruns.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from rerankd.extras import MissingExtraError, require

log = logging.getLogger(__name__)

app = typer.Typer(help="Distil an LLM reranker's relevance feedback into a fast student (teach, train, eval).")

_Work = Annotated[Path, typer.Option("-w", "--work", help="Work folder (teach/, student/, eval/).")]


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def teach_output(work: Path, query_file: Path) -> Path:
    """The teacher's run of ``query_file`` in ``work`` (its journal sits beside it)."""
    stem = query_file.name.removesuffix(".gz").removesuffix(".jsonl").removesuffix(".json")
    return work / "teach" / f"{stem}.trec"


def _teach(
    inputs: list[Path],
    work: Path,
    *,
    model: str | None,
    strategy: str,
    param: list[str],
    top_k: int | None,
    limit: int | None,
    queue: bool,
    api_url: str | None,
    api_key: str | None,
    engine: str | None,
    device: str | None,
    concurrency: int | None,
    dtype: str | None = None,
) -> list[Path]:
    from rerankd.cli.reranking import rerank
    from rerankd.runs import journal_path

    journals = []
    for path in inputs:
        out = teach_output(work, path)
        out.parent.mkdir(parents=True, exist_ok=True)
        typer.echo(f"teach: {path} -> {out}", err=True)
        rerank(
            input=path, output=out, strategy=strategy, param=param, model=model, engine=engine, device=device,
            dtype=dtype, engine_option=None, top_k=top_k, limit=limit, fmt="trec", topics=None, collection=None,
            concurrency=concurrency, queue=queue, api_url=api_url, api_key=api_key, restart=False, keep_journal=True,
        )  # fmt: skip
        journals.append(journal_path(out))
    return journals


@app.command("teach")
def teach_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Query files (candidates JSONL) to teach on.")],
    work: _Work,
    model: Annotated[str | None, typer.Option(help="The teacher model (with --queue: the service's name).")] = None,
    strategy: Annotated[str, typer.Option(help="The teacher's strategy.")] = "icr",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Strategy setting key=value.")] = None,
    top_k: Annotated[int | None, typer.Option(min=1, help="Teach on the first K candidates.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N queries of each file.")] = None,
    queue: Annotated[bool, typer.Option("--queue", help="Run the teacher as jobs of a rerankd service.")] = False,
    api_url: Annotated[
        str | None, typer.Option(envvar="RERANKD_API_URL", help="With --queue: the service URL.")
    ] = None,
    api_key: Annotated[str | None, typer.Option(envvar="RERANKD_API_KEY", help="With --queue: API key.")] = None,
    engine: Annotated[str | None, typer.Option(help="In-process engine kind (not with --queue).")] = None,
    device: Annotated[str | None, typer.Option(help="In-process engine device.")] = None,
    dtype: Annotated[
        str | None, typer.Option(help="In-process weights dtype: auto | float32 | bfloat16 | float16.")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Queries at once (jobs in flight).")] = None,
) -> None:
    """Run the teacher over query files; the journals keep its rankings and scores (resumable)."""
    _teach(
        inputs, work, model=model, strategy=strategy, param=param or [], top_k=top_k, limit=limit, queue=queue,
        api_url=api_url, api_key=api_key, engine=engine, device=device, concurrency=concurrency, dtype=dtype,
    )  # fmt: skip


def _journals(work: Path | None, journal: list[Path] | None) -> list[Path]:
    if journal:
        return journal
    if work is None:
        raise _fail("give -w WORK (its teach/ journals) or --journal")
    found = sorted((work / "teach").glob("*.journal.jsonl"))
    if not found:
        raise _fail(f"no teacher journals in {work / 'teach'}: run `rerankd distill teach` first")
    return found


def _train(journals: list[Path], out: Path, cfg: Any, name: str | None, restart: bool) -> Any:
    from rerankd.distill.data import TeachingDataError, load_teaching
    from rerankd.distill.train import TrainStateError, train_student
    from rerankd.engines.cross_encoder.student import register_student

    try:
        require("train", "rerankd distill train")
        queries = load_teaching(journals)
        card = train_student(queries, out, cfg, restart=restart)
        if name:
            typer.echo(f"registered student {name!r}: {register_student(name, out)}", err=True)
    except (TeachingDataError, TrainStateError, MissingExtraError, ModuleNotFoundError, ValueError) as e:
        raise _fail(str(e)) from None
    typer.echo(
        f"student {out}: {card.kind} ({card.loss}) on {len(card.train_queries)} queries, "
        f"{len(card.heldout_queries)} held out; {card.steps} steps in {card.train_seconds:.1f}s",
        err=True,
    )
    return card


@app.command("train")
def train_cmd(
    work: Annotated[
        Path | None, typer.Option("-w", "--work", help="Work folder (reads teach/, writes student/).")
    ] = None,
    journal: Annotated[
        list[Path] | None, typer.Option("--journal", "-j", help="Teacher journals (else WORK/teach/).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Student folder (default WORK/student).")
    ] = None,
    base: Annotated[str, typer.Option(help="Base: all-minilm-l6-v2 (bundled) or a local folder.")] = "all-minilm-l6-v2",
    kind: Annotated[str, typer.Option(help="cross_encoder | bi_encoder")] = "cross_encoder",
    loss: Annotated[
        str, typer.Option(help="ranknet | lambda | listnet | margin_mse | adr_mse (bi_encoder: margin_mse | kl)")
    ] = "ranknet",
    labels: Annotated[
        str | None, typer.Option(help="rank | score (default: score for margin_mse/kl, else rank)")
    ] = None,
    epochs: Annotated[float, typer.Option(min=0.01)] = 2.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries per step.")] = 4,
    lr: Annotated[float, typer.Option(min=0.0)] = 3e-5,
    max_length: Annotated[int, typer.Option(min=8, help="Tokens per (query, passage) pair.")] = 256,
    docs_per_query: Annotated[
        int | None,
        typer.Option(min=2, help="N documents per query: the teacher's first N/2, the rest spread over its order."),
    ] = None,
    heldout: Annotated[float, typer.Option(min=0.0, max=0.9, help="Fraction of queries held out.")] = 0.2,
    seed: Annotated[int, typer.Option()] = 0,
    save_steps: Annotated[int, typer.Option(min=1, help="Checkpoint every N steps.")] = 20,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    name: Annotated[str | None, typer.Option(help="Register the student under this name.")] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Discard the student folder first.")] = False,
) -> None:
    """Train a student on the teacher's rankings (resumes from its last checkpoint)."""
    from rerankd.distill.train import TrainConfig

    out = output or (work / "student" if work else None)
    if out is None:
        raise _fail("give -w WORK or -o STUDENT")
    try:
        cfg = TrainConfig(
            base=base, kind=kind, loss=loss, labels=labels, epochs=epochs, batch_size=batch_size, lr=lr,
            max_length=max_length, docs_per_query=docs_per_query, heldout=heldout, seed=seed,
            save_steps=save_steps, device=device,
        )  # fmt: skip
    except ValueError as e:
        raise _fail(str(e)) from None
    _train(_journals(work, journal), out, cfg, name, restart)


def _eval(
    student: Path,
    out_dir: Path,
    queries: Path | None,
    qrels: Path | None,
    teacher: list[Path],
    top_k: int | None,
    all_queries: bool,
    device: str,
    limit: int | None = None,
) -> dict[str, Any]:
    from rerankd.distill.evaluate import evaluate, report_lines
    from rerankd.engines.cross_encoder.engine import CrossEncoderEngine
    from rerankd.engines.cross_encoder.student import NotAStudentError, read_card, write_card
    from rerankd.formats.inputs import InputFormatError, read_queries
    from rerankd.runs import JournalError, read_results

    try:
        card = read_card(student)
        if card.kind != "cross_encoder":
            raise NotAStudentError(f"{student} is a {card.kind} student; eval serves cross-encoder students")
        journals = teacher or [Path(j) for j in card.teacher.get("journals", [])]
        teacher_results = {r.qid: r for j in journals for r in read_results(j) if r.qid is not None}
        files = [queries] if queries else _query_files(journals)
        wanted = None if (all_queries or queries) else set(card.heldout_queries)
        items = []
        for f in files:
            for it in read_queries(f):
                if wanted is None or it.query.qid in wanted:
                    items.append(type(it)(it.query, it.candidates[:top_k] if top_k else it.candidates))
        items = items[:limit] if limit else items
        if not items:
            raise ValueError("no queries to evaluate (held-out set empty? pass --queries)")
        engine = CrossEncoderEngine.load(str(student), device=device)
    except (NotAStudentError, JournalError, InputFormatError, ValueError, OSError) as e:
        raise _fail(str(e)) from None
    report = evaluate(engine, items, teacher_results, out_dir, qrels=qrels)
    for line in report_lines(report):
        typer.echo(line)
    data = report.as_dict()
    (out_dir / "report.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    card.figures[str(queries or "heldout")] = data["systems"]
    write_card(student, card)
    return data


def _query_files(journals: list[Path]) -> list[Path]:
    files = []
    for j in journals:
        with j.open(encoding="utf-8") as fh:
            head = json.loads(fh.readline())
        files.append(Path(head["inputs"]["input"]))
    return files


@app.command("eval")
def eval_cmd(
    student: Annotated[Path, typer.Argument(help="The student folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for the runs and report.json.")],
    queries: Annotated[Path | None, typer.Option(help="Query file (default: the student's held-out queries).")] = None,
    qrels: Annotated[Path | None, typer.Option(help="TREC qrels: nDCG@10 with paired bootstrap CIs.")] = None,
    teacher: Annotated[
        list[Path] | None, typer.Option(help="Teacher journals on these queries (default: the card's).")
    ] = None,
    top_k: Annotated[int | None, typer.Option(min=1, help="Rerank the first K candidates.")] = None,
    all_queries: Annotated[
        bool, typer.Option("--all-queries", help="Every query of the journals, not only held-out.")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N queries.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
) -> None:
    """Student vs teacher vs first stage: nDCG@10 (with qrels), agreement with the teacher, ms/query."""
    _eval(student, output, queries, qrels, teacher or [], top_k, all_queries, device, limit)


@app.command("run")
def run_cmd(
    inputs: Annotated[list[Path], typer.Argument(help="Query files to teach on.")],
    work: _Work,
    model: Annotated[str | None, typer.Option(help="The teacher model.")] = None,
    strategy: Annotated[str, typer.Option(help="The teacher's strategy.")] = "icr",
    param: Annotated[list[str] | None, typer.Option("--param", "-p", help="Strategy setting key=value.")] = None,
    top_k: Annotated[int | None, typer.Option(min=1, help="Teach on the first K candidates.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N queries of each file.")] = None,
    queue: Annotated[bool, typer.Option("--queue", help="Run the teacher as jobs of a rerankd service.")] = False,
    api_url: Annotated[str | None, typer.Option(envvar="RERANKD_API_URL")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="RERANKD_API_KEY")] = None,
    base: Annotated[str, typer.Option(help="Student base: all-minilm-l6-v2 or a folder.")] = "all-minilm-l6-v2",
    loss: Annotated[str, typer.Option(help="ranknet | lambda | listnet | margin_mse | adr_mse")] = "ranknet",
    epochs: Annotated[float, typer.Option(min=0.01)] = 2.0,
    batch_size: Annotated[int, typer.Option(min=1)] = 4,
    heldout: Annotated[float, typer.Option(min=0.0, max=0.9)] = 0.2,
    seed: Annotated[int, typer.Option()] = 0,
    save_steps: Annotated[int, typer.Option(min=1)] = 20,
    qrels: Annotated[Path | None, typer.Option(help="Qrels of the teaching queries (held-out nDCG@10).")] = None,
    device: Annotated[str, typer.Option(help="Student device.")] = "auto",
    name: Annotated[str | None, typer.Option(help="Register the student under this name.")] = None,
) -> None:
    """All stages: teach, train, eval on the held-out queries.  Rerun after a crash to resume."""
    from rerankd.distill.train import TrainConfig

    try:
        cfg = TrainConfig(
            base=base, loss=loss, epochs=epochs, batch_size=batch_size, heldout=heldout, seed=seed,
            save_steps=save_steps, device=device,
        )  # fmt: skip
    except ValueError as e:
        raise _fail(str(e)) from None
    journals = _teach(
        inputs, work, model=model, strategy=strategy, param=param or [], top_k=top_k, limit=limit, queue=queue,
        api_url=api_url, api_key=api_key, engine=None, device=None, concurrency=None,
    )  # fmt: skip
    _train(journals, work / "student", cfg, name, restart=False)
    if heldout > 0:
        _eval(work / "student", work / "eval", None, qrels, journals, top_k, False, device)
