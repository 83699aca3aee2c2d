"""Budgets for the work a file may ask for, and the memory this process may still use.

A file is untrusted: the sizes it declares (an image's pixels, a stack's planes) are checked
here against a budget *before* the reading or allocating they imply. The budgets have
overrides for the rare real input beyond them: ``NLA_MAX_PIXELS`` (pixels of one image, or of
a support's neighbouring planes together) and ``NLA_MAX_PLANES`` (planes of one input).

``available_memory`` is the one answer to "how much may this process still allocate": the
least of the machine's free memory, the room left under this process's cgroup memory limit
(v2 ``memory.max``, v1 ``memory.limit_in_bytes``, ancestors included) and under its own
``RLIMIT_AS`` and ``RLIMIT_DATA``. Memory checks (``inference.classic.features.check_memory``, the
``.episode`` reader) ask it before their first large allocation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MAX_PIXELS = 2**31  # default budget of one image (Y * X), or of one support's context planes together
MAX_PLANES = 100_000  # default budget of the planes of one input stack
MESSAGE_CHARS = 300  # how much of a file's own text (names, values) an error message repeats
LINE_CHARS = 1000  # the most of another error's text a one-line message passes on

# Where the kernel tells limits (tests point these elsewhere).
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF = Path("/proc/self")
_UNLIMITED_CGROUP = 1 << 60  # cgroup v1 writes "no limit" as a huge page-rounded number


def budget(variable: str, default: int) -> int:
    """The integer in environment variable ``variable``, else ``default``.

    Raises:
        ValueError: naming the variable when it holds anything but a positive integer.
    """
    text = os.environ.get(variable)
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{variable} must be a positive integer, got {brief(text)}")
    return value


def max_pixels() -> int:
    """Pixels one image may have (``NLA_MAX_PIXELS``, default ``MAX_PIXELS``)."""
    return budget("NLA_MAX_PIXELS", MAX_PIXELS)


def max_planes() -> int:
    """Planes one input stack may have (``NLA_MAX_PLANES``, default ``MAX_PLANES``)."""
    return budget("NLA_MAX_PLANES", MAX_PLANES)


def check_planes(n_planes: int, what: str) -> None:
    """Refuse an input declaring more planes than ``max_planes()``.

    Raises:
        ValueError: naming ``what``, its plane count, the limit and the override.
    """
    limit = max_planes()
    if n_planes > limit:
        raise ValueError(
            f"{what} declares {n_planes} planes, more than the limit of {limit}; "
            "set NLA_MAX_PLANES to a larger number to read it anyway"
        )


def brief(value: Any, limit: int = MESSAGE_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters: what an error message may repeat of a
    file's contents (a list of 100,000 class names is not repeated whole)."""
    count = f", {len(value)} in all" if isinstance(value, list | tuple | dict | set) else ""
    return short(repr(value), limit, count)


def short(text: str, limit: int = LINE_CHARS, count: str = "") -> str:
    """``text`` on one line, cut to about ``limit`` characters."""
    text = " ".join(text.split()) if "\n" in text or "\r" in text else text
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters{count})"


# -- memory --------------------------------------------------------------------------------------


def available_memory() -> int | None:
    """Bytes this process may still allocate, or None where nothing can be told (see the module
    docstring): the least of free memory, the cgroup's room and the rlimits' room."""
    known = [room for room in (_free_memory(), _cgroup_room(), *_rlimit_rooms()) if room is not None]
    return max(0, min(known)) if known else None


def _free_memory() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    return _meminfo("MemAvailable")


def _meminfo(field: str) -> int | None:
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _stat(path: Path, field: str) -> int:
    """A counter of a cgroup ``memory.stat`` file (0 when missing)."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == field:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _cgroup_paths() -> tuple[str | None, str | None]:
    """This process's (v2, v1 memory) cgroup paths from /proc/self/cgroup."""
    v2 = v1 = None
    try:
        lines = (PROC_SELF / "cgroup").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2 = parts[2]
        elif "memory" in parts[1].split(","):
            v1 = parts[2]
    return v2, v1


def _ancestors(root: Path, path: str | None) -> list[Path]:
    """``root/path`` and each folder above it up to ``root`` (a limit anywhere above applies)."""
    parts = [p for p in (path or "").split("/") if p]
    return [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _cgroup_room() -> int | None:
    """Bytes left under the tightest memory limit of this process's cgroup and its ancestors;
    reclaimable page cache (inactive files) counts as room."""
    v2, v1 = _cgroup_paths()
    rooms = []
    for folder in _ancestors(CGROUP_ROOT, v2):  # cgroup v2
        limit = _read_int(folder / "memory.max")
        if limit is not None:
            used = _read_int(folder / "memory.current") or 0
            rooms.append(limit - max(0, used - _stat(folder / "memory.stat", "inactive_file")))
    for folder in _ancestors(CGROUP_ROOT / "memory", v1):  # cgroup v1
        limit = _read_int(folder / "memory.limit_in_bytes")
        if limit is not None and limit < _UNLIMITED_CGROUP:
            used = _read_int(folder / "memory.usage_in_bytes") or 0
            rooms.append(limit - max(0, used - _stat(folder / "memory.stat", "total_inactive_file")))
    return min(rooms) if rooms else None


def _rlimit_rooms() -> list[int | None]:
    """Room under RLIMIT_AS (address space) and RLIMIT_DATA (data segment), soft limits."""
    try:
        import resource
    except ImportError:  # Windows
        return []
    rooms: list[int | None] = []
    for name, used_field in (("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")):
        which = getattr(resource, name, None)
        if which is None:
            continue
        soft, _ = resource.getrlimit(which)
        if soft == resource.RLIM_INFINITY or soft < 0:
            continue
        used = _status(used_field)
        if used is None and name == "RLIMIT_AS":
            used = _psutil_vms()
        rooms.append(soft - (used or 0))
    return rooms


def _status(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status, in bytes."""
    try:
        for line in (PROC_SELF / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _psutil_vms() -> int | None:
    try:
        import psutil

        return int(psutil.Process().memory_info().vms)
    except (ImportError, OSError):
        return None
