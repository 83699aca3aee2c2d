"""Checks made before a run starts, so that a run that cannot work fails at once, whole.

- A checkpoint that must be downloaded: refused at once when downloads are off
  (``HF_HUB_OFFLINE=1``) or when the hub cannot be reached within ``PROBE_TIMEOUT`` seconds,
  with the cache folder and how to place the files by hand; no "downloading… 0 %" first.
- A device: only those this machine has (``device.available_devices()``) or "auto".
"""

from __future__ import annotations

import threading
from urllib.parse import urlparse

PROBE_TIMEOUT = 2.0  # seconds; the probe never blocks the GUI longer


def hub_address() -> tuple[str, int]:
    """(host, port) of the Hugging Face endpoint in use (``HF_ENDPOINT`` honoured)."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` seconds.

    Name lookup has no timeout of its own, so the probe runs in a helper thread that is given
    ``timeout`` seconds in all; a slower answer counts as unreachable.
    """
    import socket

    result: dict[str, bool] = {}

    def probe() -> None:
        try:
            with socket.create_connection(hub_address(), timeout=timeout):
                result["ok"] = True
        except Exception:  # noqa: BLE001 - any failure means "not reachable"; the probe never raises
            result["ok"] = False

    thread = threading.Thread(target=probe, daemon=True, name="hub-probe")
    thread.start()
    thread.join(timeout)
    return result.get("ok", False)


def check_download(repo_id: str, reachable=None) -> None:
    """Raise ``CheckpointNotAvailableError`` when ``repo_id`` cannot be downloaded now.

    ``reachable``: the probe (default ``hub_reachable``), replaced in tests.
    """
    from ..hub.model_files import CheckpointNotAvailableError, hub_cache_dir, is_offline, manual_install_hint

    if is_offline():
        reason = "downloads are off (HF_HUB_OFFLINE is set)"
    elif not (reachable or hub_reachable)():
        host, _ = hub_address()
        reason = f"{host} cannot be reached (no network?)"
    else:
        return
    raise CheckpointNotAvailableError(
        f"{repo_id!r} is not in the model cache ({hub_cache_dir()}) and {reason}.\n" + manual_install_hint(repo_id)
    )


def device_choices() -> list[str]:
    """The choice "auto" and the devices this machine has, best first."""
    from ..hub.device import available_devices

    return ["auto", *available_devices()]


def check_device(device: str) -> str:
    """``device`` when this machine has it (``cuda:1`` style allowed), else ValueError."""
    from ..hub.device import resolve_device

    resolve_device(device)  # ValueError: unknown, or not on this machine
    return str(device).lower()
