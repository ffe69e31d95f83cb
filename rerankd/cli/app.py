"""The ``rerankd`` typer app (every command registered here) and ``main``."""

from __future__ import annotations

import logging

import typer

from rerankd.cli import calibrate, data, demo, distill, doctor, models, reranking, service
from rerankd.extras import MissingExtraError

__all__ = ["app", "main"]

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LLM listwise reranking.")
app.command("rerank")(reranking.rerank)
app.command("submit")(reranking.submit)
app.command("eval")(data.eval_cmd)
app.command("export")(data.export_cmd)
app.command("up")(service.up)
app.command("demo")(demo.command)
app.command("doctor")(doctor.command)
app.add_typer(models.app, name="models")
app.command("calibrate")(calibrate.command)
app.add_typer(distill.app, name="distill")


def main() -> None:
    """The ``rerankd`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress bar
    try:
        app()
    except MissingExtraError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None
