"""docs/settings.md is generated from the settings' fields: it cannot drift from them."""

from __future__ import annotations

from pathlib import Path

from rerankd.config import Settings, env_names
from rerankd.config_docs import default_text, settings_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_docs_settings_table_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == settings_markdown(), (
        "docs/settings.md is out of date: run `python -m rerankd.config_docs`"
    )


def test_every_setting_has_a_row_with_its_default_and_meaning() -> None:
    text = settings_markdown()
    rows = [line for line in text.splitlines() if line.startswith("| `RERANKD_")]
    assert {row.split("`")[1] for row in rows} == env_names()
    assert "| `RERANKD_MAX_DOCUMENTS` | `1000` | Documents per request (413 above). |" in rows
    assert "| `RERANKD_WEBHOOK_RETRY_SCHEDULE_S` | `[5, 30, 120, 600, 3600, 21600]` |" in text
    assert default_text(Settings.model_fields["task_events"]) == "`false`"
    assert default_text(Settings.model_fields["redis_url"]) == "unset"
    assert all(field.description for field in Settings.model_fields.values())
