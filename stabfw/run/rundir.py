"""A run directory: one writer at a time, a fingerprint of what decides its numbers, and a
manifest that marks (and checksums) a finished run.

``DIR/.stabfw.lock``
    Held (``flock``) by the one process writing ``DIR``; it names that process (pid, host,
    start time, command). A second run into ``DIR`` is refused while the first lives; a
    lock left by a killed run is detected (its ``flock`` died with it), explained, and
    taken over.
``DIR/manifest.json``
    Written last, when the run's results are complete: the run's fingerprint and the
    SHA-256 of every result file. Its presence is what "finished" means; reading a result
    file checks it against the manifest, so a file changed or truncated afterwards is
    refused, never read into wrong numbers.

The *fingerprint* of a run is the SHA-256 of its resolved loop configuration, the domain's
class and constructor parameters, the contents of the data files the domain reads
(:meth:`~stabfw.SelfConsumingLoop.data_files`) and stabfw's version; checkpoint files and
the manifest carry it, and a resume whose fingerprint differs is refused, saying what
differs.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stabfw._util.atomic import atomic_write, sha256_bytes, sha256_file
from stabfw._util.jsonio import flatten, read_json, to_jsonable, write_json
from stabfw.errors import CheckpointError, RunDirError, short_repr
from stabfw.run.provenance import VERSION

__all__ = ["FORMAT", "LOCK_NAME", "MANIFEST", "RESULT_FILES", "Fingerprint", "RunLock",
           "add_to_manifest", "ensure_dir", "fingerprint", "read_manifest", "verify_file",
           "write_manifest"]

log = logging.getLogger(__name__)

#: Version of the checkpoint and manifest formats.
FORMAT = 2
LOCK_NAME = ".stabfw.lock"
MANIFEST = "manifest.json"
#: The files :meth:`Trajectory.save` writes (the manifest checksums them and summary.json).
RESULT_FILES = ("params.npz", "metrics.csv", "config.yaml")


# --- fingerprint ----------------------------------------------------------------------
def _stable(value: Any) -> Any:
    """A JSON-able value that is the same in every process (no memory addresses)."""
    if callable(value) and not hasattr(value, "get_params"):
        return f"{getattr(value, '__module__', '?')}:{getattr(value, '__qualname__', repr(value))}"
    if isinstance(value, dict):
        return {str(k): _stable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    out = to_jsonable(value)
    if isinstance(out, str) and " at 0x" in out:  # a default object repr
        return f"{type(value).__module__}:{type(value).__qualname__}"
    return out


@dataclass(frozen=True)
class Fingerprint:
    """What decides a run's numbers, and its digest.

    Attributes
    ----------
    record : dict
        ``format``, ``stabfw`` (version), ``loop`` (the resolved config), ``domain``
        (class and parameters) and ``data_files`` (path → SHA-256).
    digest : str
        SHA-256 of ``record`` as canonical JSON.
    """

    record: dict[str, Any]
    digest: str

    def differences(self, other: dict[str, Any], limit: int = 8) -> list[str]:
        """Lines ``field: X there, Y now`` between ``other`` (a stored record) and this."""
        then, now = _leaves(other), _leaves(self.record)
        lines = []
        for key in sorted(set(then) | set(now)):
            a, b = then.get(key, "(absent)"), now.get(key, "(absent)")
            if a == b:
                continue
            if key.startswith("data_files."):
                path = key.removeprefix("data_files.")
                lines.append(f"the data file {path} changed (sha256 {str(a)[:12]}… when the "
                             f"run started, {str(b)[:12]}… now)")
            else:
                lines.append(f"{key}: {short_repr(a, 80)} there, {short_repr(b, 80)} now")
        if len(lines) > limit:
            lines = [*lines[:limit], f"… and {len(lines) - limit} more differences"]
        return lines or ["(the records differ only in form)"]


def _leaves(record: dict[str, Any]) -> dict[str, Any]:
    out = flatten(record)
    # flatten drops lists; compare them whole
    def walk(v: Any, prefix: str) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{prefix}.{k}" if prefix else str(k))
        elif isinstance(v, list):
            out[prefix] = json.dumps(v, sort_keys=True)
    walk(record, "")
    return out


def _data_files(loop: Any) -> dict[str, str]:
    out = {}
    for p in loop.data_files() or []:
        path = Path(p)
        try:
            out[str(path)] = sha256_file(path)
        except OSError as err:
            raise RunDirError(f"domain data file {path}: cannot be read ({err.strerror})",
                              path) from None
    return out


def fingerprint(loop: Any, config: Any) -> Fingerprint:
    """The fingerprint of running ``loop`` under ``config`` (a RetrainConfig)."""
    cls = type(loop)
    record = {
        "format": FORMAT,
        "stabfw": VERSION,
        "loop": _stable(config.model_dump(mode="json", exclude=set(config.EXECUTION_FIELDS))),
        "domain": {"class": f"{cls.__module__}:{cls.__qualname__}",
                   "params": _stable(loop.get_params(deep=False))},
        "data_files": _data_files(loop),
    }
    text = json.dumps(record, sort_keys=True, ensure_ascii=True, allow_nan=False, default=str)
    return Fingerprint(json.loads(text), sha256_bytes(text.encode()))


# --- the directory itself -------------------------------------------------------------
def ensure_dir(path: str | Path) -> Path:
    """Create the run directory ``path`` (and its parents), or say clearly why not.

    Raises
    ------
    RunDirError
        ``path`` is a file, lies under a file, or cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path} is a file, not a directory; choose another output "
                          "directory (--out)", path)
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise RunDirError(f"cannot create {path}: {parent} is a file, not a directory; "
                              "choose another output directory (--out)", path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"cannot create {path}: {err.strerror or err}; choose another output "
                          "directory (--out) or fix its permissions", path) from None
    probe = path / f".stabfw-write-test.{os.getpid()}.tmp"
    try:  # a real write: os.access misses read-only mounts and immutable directories
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"cannot write in {path}: {err.strerror or err}; choose another "
                          "output directory (--out) or fix its permissions", path) from None
    return path


# --- one writer per directory ---------------------------------------------------------
_HELD: dict[Path, list[int]] = {}  # directories this process holds: [thread id, depth]
_HELD_LOCK = threading.Lock()


def _proc_start(pid: int) -> str | None:
    """Start time of process ``pid`` in clock ticks (Linux), to tell a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _holder_text(info: dict[str, Any]) -> str:
    if not info:
        return "a process that left no details"
    cmd = info.get("command")
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started "
            f"{info.get('started_utc', '?')}" + (f" ({short_repr(cmd, 160)[1:-1]})" if cmd else ""))


class RunLock:
    """The lock of one run directory: one writer at a time.

    Re-entrant within one thread (``run_single`` and the ``run_loop`` inside it take it
    once); another thread or process is refused. Use it as a context manager.

    Attributes
    ----------
    stale : dict or None
        The holder of a lock found left behind by a run that died (killed), which this lock
        took over; None when the directory was free.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory).resolve()
        self.path = self.directory / LOCK_NAME
        self.stale: dict[str, Any] | None = None
        self._fd: int | None = None
        self._nested = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> RunLock:
        """Take the lock, or raise :class:`RunDirError` naming the process that holds it."""
        with _HELD_LOCK:
            held = _HELD.get(self.directory)
            if held is not None:
                if held[0] != threading.get_ident():
                    raise RunDirError(f"{self.directory} is in use by another run in this "
                                      "process (another thread); two runs writing one "
                                      "directory would mix their files", self.directory)
                held[1] += 1
                self._nested = True
                return self
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            fcntl = None
        for _ in range(5):  # retry when the file was replaced between open and flock
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise RunDirError(f"cannot create the lock file {self.path}: "
                                  f"{err.strerror or err}", self.directory) from None
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as err:
                    os.close(fd)
                    if err.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                        raise RunDirError(
                            f"{self.directory} is in use by another stabfw run: "
                            f"{_holder_text(self._read())}. Two runs writing one directory "
                            "would mix their files: wait for it to finish, stop it, or choose "
                            "another output directory (--out)", self.directory) from None
                    raise RunDirError(f"cannot lock {self.path}: {err.strerror or err}",
                                      self.directory) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # its holder removed it meanwhile: lock the new file
                os.close(fd)
                continue
            break
        else:  # pragma: no cover - a directory whose lock file keeps changing
            raise RunDirError(f"cannot lock {self.path}: it keeps being replaced", self.directory)
        previous = self._read_fd(fd)
        if previous:
            self.stale = previous
            alive = (previous.get("host") == socket.gethostname() and previous.get("pid")
                     and _proc_start(int(previous["pid"])) == previous.get("proc_start"))
            log.warning("%s: found the lock of an earlier run (%s) that ended without releasing "
                        "it%s; taking it over", self.directory, _holder_text(previous),
                        "" if alive else " (killed or crashed)")
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv), "proc_start": _proc_start(os.getpid())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        with _HELD_LOCK:
            _HELD[self.directory] = [threading.get_ident(), 1]
        return self

    def release(self) -> None:
        """Give the lock back (and remove the lock file)."""
        with _HELD_LOCK:
            if self._nested:
                _HELD[self.directory][1] -= 1
                self._nested = False
                return
            if self._fd is None:
                return
            _HELD.pop(self.directory, None)
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    @staticmethod
    def _read_fd(fd: int) -> dict[str, Any]:
        try:
            data = os.pread(fd, 1 << 16, 0)
            return json.loads(data) if data.strip() else {}
        except (OSError, ValueError):
            return {"pid": "?", "note": "unreadable lock file"}


# --- the manifest of a finished run ---------------------------------------------------
def read_manifest(directory: str | Path) -> dict[str, Any] | None:
    """The manifest of a finished run in ``directory``, or None when there is none.

    Raises
    ------
    CheckpointError
        When the manifest itself is unreadable.
    """
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt ({short_repr(str(err), 120)[1:-1]}); the run's "
                              "results cannot be verified. Re-run it with --force", path) from None
    if not isinstance(manifest, dict) or "files" not in manifest or "fingerprint" not in manifest:
        raise CheckpointError(f"{path} is not a stabfw manifest; re-run with --force", path)
    return manifest


def write_manifest(directory: str | Path, fp: Fingerprint, names: list[str]) -> None:
    """Write the manifest: ``fp`` and the SHA-256 of each named file (the finished mark)."""
    directory = Path(directory)
    files = {n: sha256_file(directory / n) for n in names if (directory / n).is_file()}
    write_json(directory / MANIFEST, {"format": FORMAT, "fingerprint": fp.digest,
                                      "record": fp.record, "files": files})


def add_to_manifest(directory: str | Path, names: list[str]) -> None:
    """Record (again) the SHA-256 of files written or rewritten after the run finished
    (``summary.json``, by ``stabfw analyze``). A no-op without a manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        return
    for n in names:
        if (directory / n).is_file():
            manifest["files"][n] = sha256_file(directory / n)
    text = json.dumps(to_jsonable(manifest), indent=2, ensure_ascii=False)
    atomic_write(directory / MANIFEST, lambda f: f.write(text.encode("utf-8")))


def verify_file(directory: str | Path, name: str, manifest: dict[str, Any] | None) -> None:
    """Check ``directory/name`` against its SHA-256 in ``manifest`` (when it lists it).

    Raises
    ------
    CheckpointError
        Missing, or changed since the run wrote it.
    """
    path = Path(directory) / name
    if manifest is None or name not in manifest.get("files", {}):
        return
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (the run's manifest lists it); re-run the run "
                              "with --force to write it again", path)
    if sha256_file(path) != manifest["files"][name]:
        raise CheckpointError(
            f"{path} does not match the checksum recorded when the run finished: it was "
            "changed, truncated or corrupted since. Its numbers cannot be trusted; restore it "
            "or re-run the run (stabfw run … --force)", path)
