"""What every command module shares: the error exit."""

from __future__ import annotations

import typer

__all__ = ["fail"]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` in red on stderr; the ``typer.Exit`` to raise."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)
