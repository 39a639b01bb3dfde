"""Atomic file writes: a reader (or a crash) never sees half a file.

A file is written to a temporary name beside its target (``.NAME.XXXXXXXX.tmp``), flushed
to disk, given the permissions an ordinary ``open()`` would (``0666`` less the user's
umask, so ``0644`` by default; ``mkstemp`` alone gives ``0600``), then renamed over the
target. A process killed in between leaves only the temporary file, which
:func:`clean_temp_files` removes on the next start.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["TMP_SUFFIX", "atomic_write", "clean_temp_files", "file_mode", "load_pickle",
           "save_pickle", "sha256_bytes", "sha256_file"]

TMP_SUFFIX = ".tmp"
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore it (not atomic, hence the lock)
        old = os.umask(0o022)
        os.umask(old)
    return old


def file_mode() -> int:
    """Permissions of a new regular file: ``0o666`` less the umask."""
    return 0o666 & ~_umask()


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # the rename itself is durable only once the directory is synced
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_temp_files(directory: str | Path) -> list[Path]:
    """Remove the temporary files :func:`atomic_write` left in ``directory`` (a process
    killed mid-write); returns what was removed. Call it only while holding the
    directory's lock, so that no live writer's file is taken away."""
    directory = Path(directory)
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for p in entries:
        if p.name.startswith(".") and p.name.endswith(TMP_SUFFIX) and p.is_file():
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                continue
    return removed


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's contents, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def save_pickle(path: str | Path, obj: Any) -> None:
    """Pickle ``obj`` to ``path`` atomically."""
    atomic_write(path, lambda f: pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL))


def load_pickle(path: str | Path) -> Any:
    """Read a pickle written by :func:`save_pickle`."""
    with open(path, "rb") as f:
        return pickle.load(f)
