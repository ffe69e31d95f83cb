"""The check of a job's ``callback_url`` when the job is created (it is checked again at delivery)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rerankd.webhooks.egress import EgressError, EgressPolicy
from rerankd.webhooks.signing import SecretBook

if TYPE_CHECKING:
    from rerankd.config import Settings

__all__ = ["check_callback"]


async def check_callback(settings: Settings, owner: str, url: str) -> None:
    """``ValueError`` naming ``callback_url`` and the reason unless ``owner`` has a signing secret
    and ``url`` passes the egress policy (its host resolved now)."""
    if not SecretBook(settings.webhook_secrets, settings.webhook_secret).for_owner(owner):
        raise ValueError(
            f"callback_url: no webhook signing secret is configured for API key {owner!r} "
            "(RERANKD_WEBHOOK_SECRETS, or the fallback RERANKD_WEBHOOK_SECRET)"
        )
    try:
        await EgressPolicy.from_settings(settings).resolve(url)
    except EgressError as e:
        raise ValueError(f"callback_url: {e}") from None
