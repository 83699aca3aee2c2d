"""One run per output name, and exclusive locks for read-modify-write of shared files.

**Claims.** A run claims every name it will write before it writes anything (``claimed``): the
file ``<output>.claim`` beside the output, which holds the run's process id, host, start time and
command. It is created exclusively (written to a hidden temporary file, then hard-linked to its
name, which fails when the name is taken; an ``O_CREAT | O_EXCL`` create where a file system has
no hard links), so of two runs that want one name, one gets it and the other stops with
``OutputClaimed`` naming the output, the other run and the claim file. While the run lives it
holds an exclusive ``flock`` on its claim; the kernel drops that lock when the process dies
however it dies, so a claim whose lock can be taken was left by a dead run: it is taken over and
the ``Claim`` carries a note saying so. Without ``fcntl`` (Windows) the process id tells instead:
a claim made on this host by a process that is gone is taken over. The claims are removed when the
run ends (an error, a cancel or Ctrl-C included).

**Locks.** ``locked(path)`` holds an exclusive lock on ``<path>.lock`` (``fcntl.flock``; without
``fcntl`` an exclusive-create lock file, retried) around a read-modify-write of ``path``, e.g.
the model registry's ``models.json``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: process ids and exclusive creates instead
    fcntl = None  # type: ignore[assignment]

CLAIM_SUFFIX = ".claim"
LOCK_SUFFIX = ".lock"
ATTEMPTS = 20  # claims that vanish or are taken over while we look, before giving up
LOCK_TIMEOUT_S = 60.0
STALE_LOCK_S = 600.0  # without fcntl: a lock file this old was left by a dead process


class OutputClaimed(FileExistsError):
    """Another run that is still alive writes this output (the message names it and the claim)."""


@dataclass
class Claim:
    """A held claim: ``path`` the claim file of ``target``; ``note`` says when a dead run's claim was taken over."""

    target: Path
    path: Path
    fd: int | None
    note: str | None = None

    def release(self) -> None:
        """Remove the claim file (when it is still this claim's) and drop the lock."""
        if self.fd is None:
            return
        try:
            if _same_file(self.fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(self.fd)
            self.fd = None


def claim_path(target: str | os.PathLike) -> Path:
    """The claim file of an output: ``<output>.claim`` beside it."""
    return Path(os.fspath(target) + CLAIM_SUFFIX)


def claim(target: str | os.PathLike) -> Claim:
    """Claim ``target`` for this process (see the module docstring).

    Raises:
        OutputClaimed: a live run holds it (one line naming the output, that run and the claim file).
        OSError: the claim file cannot be written (the folder is read-only, the disk is full).
    """
    target = Path(target)
    path = claim_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    note = None
    for _ in range(ATTEMPTS):
        fd = _create(path)
        if fd is not None:
            return Claim(target, path, fd, note)
        note = _remove_if_stale(target, path) or note
    raise OutputClaimed(f"{target}: its claim {path} keeps changing hands; is another run starting on it?")


@contextmanager
def claimed(targets: Iterable[str | os.PathLike]) -> Iterator[list[Claim]]:
    """Claim every target (all or none) for the ``with`` block; the claims are released at its end.

    A ``Claim`` whose ``note`` is set took over the claim of a run that died.
    """
    held: list[Claim] = []
    try:
        seen = set()
        for target in targets:
            key = os.path.abspath(os.fspath(target))
            if key not in seen:
                seen.add(key)
                held.append(claim(target))
        yield held
    finally:
        for item in reversed(held):
            item.release()


def _record() -> bytes:
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": command[:200],
    }
    return json.dumps(record).encode()


def _create(path: Path) -> int | None:
    """A new claim file at ``path``, locked and complete before it appears; None when ``path`` exists."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    keep = False
    try:
        os.write(handle, _record())
        if hasattr(os, "fchmod"):
            os.fchmod(handle, 0o644)  # others may read who holds it
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: never held by anyone else
        try:
            os.link(temporary, path)
        except FileExistsError:
            return None
        except OSError:  # no hard links here (FAT, some network shares): an exclusive create
            return _create_exclusive(path)
        keep = True
        return handle
    finally:
        if not keep:
            os.close(handle)
        Path(temporary).unlink(missing_ok=True)


def _create_exclusive(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    except FileExistsError:
        return None
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, _record())
    return fd


def _remove_if_stale(target: Path, path: Path) -> str | None:
    """Remove the claim at ``path`` when the run that made it is dead (return a note); raise
    ``OutputClaimed`` when it lives; None when the claim vanished meanwhile (try again)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:  # unreadable: someone else's, and we cannot tell whether it lives
        raise OutputClaimed(_claimed_message(target, path, {})) from None
    try:
        record = _read(fd)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise OutputClaimed(_claimed_message(target, path, record)) from None
            alive = False
        else:
            alive = record.get("host") != socket.gethostname() or _pid_alive(record.get("pid"))
        if alive:
            raise OutputClaimed(_claimed_message(target, path, record))
        if not _same_file(fd, path):
            return None  # replaced meanwhile: look again
        path.unlink(missing_ok=True)
    finally:
        os.close(fd)
    who = f"process {record.get('pid', '?')} on {record.get('host', '?')}"
    return f"took over the claim of {target} left by {who} (started {record.get('started', '?')}), no longer running"


def _claimed_message(target: Path, path: Path, record: dict) -> str:
    who = f"process {record.get('pid', '?')} on {record.get('host', '?')}, since {record.get('started', '?')}"
    return (
        f"{target} is being written by another run ({who}); wait for it to end or choose another output; "
        f"if no run is writing it, delete {path}"
    )


def _read(fd: int) -> dict:
    try:
        record = json.loads(os.pread(fd, 4096, 0) if hasattr(os, "pread") else os.read(fd, 4096))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)


def _pid_alive(pid) -> bool:
    """Whether process ``pid`` of this host runs (True when it cannot be told)."""
    if not isinstance(pid, int) or pid <= 0:
        return True
    try:
        import psutil

        return psutil.pid_exists(pid)
    except ImportError:
        pass
    if os.name != "posix":  # os.kill would end the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


@contextmanager
def locked(path: str | os.PathLike, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (created beside ``path``) for the ``with`` block.

    Raises:
        TimeoutError: another process held it for ``timeout`` seconds (naming the lock file).
    """
    lock = Path(os.fspath(path) + LOCK_SUFFIX)
    lock.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    if fcntl is not None:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    _wait_or_fail(lock, deadline, timeout)
            yield
        finally:
            os.close(fd)  # drops the lock; the lock file stays for the next one
        return
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            break
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
                    lock.unlink(missing_ok=True)
                    continue
            except OSError:
                continue
            _wait_or_fail(lock, deadline, timeout)
    try:
        yield
    finally:
        os.close(fd)
        lock.unlink(missing_ok=True)


def _wait_or_fail(lock: Path, deadline: float, timeout: float) -> None:
    if time.monotonic() > deadline:
        raise TimeoutError(f"{lock} was held by another process for over {timeout:.0f} s; try again later")
    time.sleep(0.02)
