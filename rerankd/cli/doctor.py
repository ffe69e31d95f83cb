"""``rerankd doctor``: print the install and environment checks of :mod:`rerankd.doctor`."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

from rerankd.doctor import run_checks

__all__ = ["command"]


def command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
    vllm: Annotated[bool, typer.Option("--vllm/--no-vllm", help="Try `import vllm` (slow).")] = True,
) -> None:
    """Check the install and the environment: Python, torch, vllm, cached models, Redis, ports, GPU.

    Exit code 0 when every required check passes (marked *); the others are informational."""
    checks = run_checks(vllm=vllm)
    failed = [c for c in checks if c.required and c.status == "fail"]
    if as_json:
        typer.echo(json.dumps({"ok": not failed, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        colors = {"ok": typer.colors.GREEN, "warn": typer.colors.YELLOW, "fail": typer.colors.RED}
        for c in checks:
            mark = typer.style(f"{c.status:<4}", fg=colors.get(c.status))
            typer.echo(f"{mark} {'*' if c.required else ' '} {c.name:<10}{c.detail}")
            if c.fix and c.status != "ok":
                typer.echo(f"{'':17}fix: {c.fix}")
        n = sum(c.required for c in checks)
        typer.echo(f"required checks (*): {n - len(failed)} of {n} pass")
    raise typer.Exit(1 if failed else 0)
