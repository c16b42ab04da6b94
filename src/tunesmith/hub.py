"""Hugging Face Hub access: only where the user is online, and failing fast where not."""

from __future__ import annotations

import os
import socket

from tunesmith.errors import TunesmithError

HUB_HOST = "huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hub can be reached; False offline (HF_HUB_OFFLINE=1 or no route), within `timeout` s."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def require_hub(what: str, name: str, local_hint: str) -> None:
    """Raise a clear error when `name` would need the Hub and the Hub cannot be reached."""
    if not hub_reachable():
        raise TunesmithError(
            f"{what} '{name}' is not a local path and the Hugging Face Hub ({HUB_HOST}) cannot be reached",
            hint=local_hint,
        )
