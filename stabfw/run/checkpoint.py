"""Per-generation checkpoints that verify themselves: an append-only journal of plain
``.npz`` blocks plus the latest loop state.

``checkpoint/`` holds::

    fingerprint.json     the run's fingerprint record (what decides its numbers)
    gen_000000.npz ...   one block per generation: θ of every seed, that generation's
                         metrics table (a column per array) and a ``__meta__`` entry with
                         the generation, the fingerprint, the events and the SHA-256 of
                         the arrays. Plain numpy: read with ``allow_pickle=False``.
    state.pkl            the fitted states (and pools) of the latest generation, which
                         may be any Python object, so a pickle — behind a header with its
                         length, SHA-256, generation and fingerprint, checked *before*
                         anything is unpickled.

Each generation writes its block, then replaces ``state.pkl``, each file atomically, so a
crash at any instant leaves a consistent checkpoint (blocks past the state's generation
are ignored). Writing costs O(seeds) per generation however long the run. :meth:`load`
checks every file it reads — format, length, checksum, generation, fingerprint — and
raises :class:`~stabfw.errors.CheckpointError` naming the file, what is wrong and how to
recover; a corrupt file is never read into wrong numbers.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from stabfw._util.atomic import atomic_write, sha256_bytes
from stabfw._util.jsonio import dumps, loads
from stabfw.errors import CheckpointError, LoopError, RunError
from stabfw.run.rundir import FORMAT, Fingerprint

__all__ = ["RESTART_HINT", "Checkpoint", "block_digest"]

_MAGIC = b"STABFW-STATE\n"
_META = "__meta__"
#: What every refusal of a checkpoint tells the user to do.
RESTART_HINT = ("start the run again from generation 0 with `stabfw run … --restart` "
                "(run_loop(..., force=True)); the checkpoint is discarded")


def block_digest(theta: np.ndarray, columns: dict[str, np.ndarray]) -> str:
    """SHA-256 over θ and the metric columns of one block (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, arr in [("theta", theta), *columns.items()]:
        arr = np.ascontiguousarray(arr)
        h.update(f"{name}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


class Checkpoint:
    """The checkpoint directory of one run.

    Parameters
    ----------
    directory : path
    fp : Fingerprint
        The fingerprint of the run that writes (or resumes) it.
    """

    def __init__(self, directory: str | Path, fp: Fingerprint):
        self.directory = Path(directory)
        self.fp = fp

    @property
    def _state(self) -> Path:
        return self.directory / "state.pkl"

    @property
    def _fingerprint(self) -> Path:
        return self.directory / "fingerprint.json"

    def _block(self, generation: int) -> Path:
        return self.directory / f"gen_{generation:06d}.npz"

    def exists(self) -> bool:
        """Whether a checkpoint (complete or damaged) is there.

        A run stopped inside generation 0's writes (the fingerprint, perhaps generation 0's
        block, no state yet) recorded no generation: that is no checkpoint, and resuming
        starts from generation 0, whose writes replace those files. Without a state, any
        later block means damage and stays a checkpoint, which :meth:`load` refuses.
        """
        if self._state.exists():
            return True
        return self.directory.is_dir() and any(
            p.name != self._block(0).name for p in self.directory.glob("gen_*"))

    def _rel(self, path: Path) -> str:
        return f"{self.directory.name}/{path.name}"

    # --- writing ------------------------------------------------------------------------
    def save(self, generation: int, state: dict[str, Any], theta: np.ndarray,
             columns: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        """Record ``generation``: its block first, then the state that points past it.

        Parameters
        ----------
        state : dict
            The loop states (pickled): what the next generation starts from.
        theta, columns : θ (n_seeds, d) and the generation's metric columns (numbers).
        info : dict
            JSON-able facts of this generation (events, which seeds stopped).
        """
        digest = block_digest(theta, columns)
        try:
            payload = pickle.dumps({**state, "generation": generation},
                                   protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:  # a lambda, a lock, an open file in a fitted state
            raise LoopError(
                f"the fitted state cannot be pickled at generation {generation} "
                f"({type(err).__name__}: {err}); checkpoints need it. Make the state "
                "picklable, or run without a checkpoint (output.checkpoint: false, or "
                "run_loop without out_dir / with checkpoint=False)", generation=generation,
                method="pickle") from None
        try:
            if generation == 0 or not self._fingerprint.is_file():
                text = dumps({"format": FORMAT, "digest": self.fp.digest,
                              "record": self.fp.record})
                atomic_write(self._fingerprint, lambda f: f.write(text.encode("utf-8")))
            meta = {"format": FORMAT, "generation": generation, "fingerprint": self.fp.digest,
                    "sha256": digest, "columns": list(columns), **info}
            arrays = {"theta": theta, **{f"c{i}": a for i, a in enumerate(columns.values())},
                      _META: np.array(dumps(meta, indent=None))}
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            atomic_write(self._block(generation), lambda f: f.write(buf.getvalue()))
            header = json.dumps({"format": FORMAT, "generation": generation,
                                 "fingerprint": self.fp.digest, "size": len(payload),
                                 "sha256": sha256_bytes(payload), "block_sha256": digest})
            atomic_write(self._state, lambda f: f.write(_MAGIC + header.encode() + b"\n" + payload))
        except OSError as err:
            raise RunError(f"cannot write the checkpoint of generation {generation} in "
                           f"{self.directory}: {err.strerror or err}", generation=generation) from err

    # --- reading ------------------------------------------------------------------------
    def _bad(self, path: Path, what: str) -> CheckpointError:
        return CheckpointError(f"cannot resume: {self._rel(path)} {what}. Nothing was resumed "
                               f"or changed; {RESTART_HINT}", path)

    def check_fingerprint(self) -> None:
        """Refuse when the checkpoint was written by a run of another fingerprint."""
        if not self._fingerprint.is_file():
            raise self._bad(self._fingerprint, "is missing (every checkpoint has one)")
        try:
            stored = loads(self._fingerprint.read_text(encoding="utf-8"))
            digest, record = stored["digest"], stored["record"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise self._bad(self._fingerprint, f"is corrupt ({type(err).__name__})") from None
        if digest != self.fp.digest:
            diff = "\n  ".join(self.fp.differences(record))
            raise CheckpointError(
                f"cannot resume: {self.directory.parent} holds the checkpoint of a different "
                f"configuration:\n  {diff}\nNothing was changed. Resume with the configuration "
                f"(and data) that wrote it, or {RESTART_HINT}, or choose another output "
                "directory (--out)", self.directory)

    def _read_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        path = self._state
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise self._bad(path, "is missing") from None
        if not raw:
            raise self._bad(path, "is empty (0 bytes)")
        if not raw.startswith(_MAGIC):
            raise self._bad(path, "is not a stabfw checkpoint state of this version (no "
                                  "header; corrupt, or written by an older stabfw)")
        head, sep, payload = raw[len(_MAGIC):].partition(b"\n")
        if not sep:
            raise self._bad(path, f"is truncated ({len(raw)} bytes: it ends inside its header)")
        try:
            header = json.loads(head) if sep else None
        except ValueError:
            header = None
        if not isinstance(header, dict) or not {"size", "sha256", "generation"} <= set(header):
            raise self._bad(path, "has a damaged header")
        if header.get("fingerprint") != self.fp.digest:
            raise self._bad(path, "was written by a different run (its fingerprint "
                                  f"{str(header.get('fingerprint'))[:12]}… is not this run's "
                                  f"{self.fp.digest[:12]}…)")
        if len(payload) != header["size"]:
            raise self._bad(path, f"is truncated ({len(payload)} of {header['size']} bytes)")
        if sha256_bytes(payload) != header["sha256"]:
            raise self._bad(path, "is corrupt (its checksum does not match: the file changed "
                                  "after it was written)")
        try:
            state = pickle.loads(payload)
        except Exception as err:
            raise self._bad(path, f"cannot be unpickled ({type(err).__name__}: {err})") from None
        return header, state

    def _read_block(self, t: int) -> dict[str, Any]:
        path = self._block(t)
        if not path.is_file():
            raise self._bad(path, "is missing: the state of a later generation needs the block "
                                  "of every generation before it")
        try:
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
                meta = loads(str(z[_META][()]))
                theta = z["theta"]
                names = list(meta["columns"])
                columns = {n: z[f"c{i}"] for i, n in enumerate(names)}
        except Exception as err:  # zip, npy or JSON damage: all mean the same here
            raise self._bad(path, f"cannot be read ({type(err).__name__}: "
                                  f"{str(err)[:160]})") from None
        if meta.get("fingerprint") != self.fp.digest:
            raise self._bad(path, "was written by a different run (fingerprint "
                                  f"{str(meta.get('fingerprint'))[:12]}…, this run's "
                                  f"{self.fp.digest[:12]}…)")
        if meta.get("generation") != t:
            raise self._bad(path, f"holds generation {meta.get('generation')}, not {t}")
        if block_digest(theta, columns) != meta.get("sha256"):
            raise self._bad(path, "is corrupt (its checksum does not match)")
        return {"thetas": theta, "columns": columns, "info": meta}

    def load(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The latest state and the blocks of generations ``0 .. state["generation"]``, every
        file verified. Blocks past the state's generation (a crash between the two writes)
        are removed.

        Raises
        ------
        CheckpointError
        """
        self.check_fingerprint()
        header, state = self._read_state()
        gen = int(header["generation"])
        blocks = [self._read_block(t) for t in range(gen + 1)]
        if blocks[-1]["info"]["sha256"] != header.get("block_sha256"):
            raise self._bad(self._state, f"does not belong to {self._rel(self._block(gen))} "
                                         "(the block's checksum differs from the one it recorded)")
        for extra in self.directory.glob("gen_*.npz"):
            try:
                if int(extra.stem[4:]) > gen:
                    extra.unlink()
            except ValueError:
                continue
        return state, blocks

    def peek_generation(self) -> int | None:
        """The generation the state reached, from its header alone (None if unreadable)."""
        try:
            with open(self._state, "rb") as f:
                raw = f.read(len(_MAGIC) + 4096)
            head = raw[len(_MAGIC):].partition(b"\n")[0]
            return int(json.loads(head)["generation"]) if raw.startswith(_MAGIC) else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def clear(self) -> None:
        """Remove the checkpoint (after a run finished and its results were written)."""
        shutil.rmtree(self.directory, ignore_errors=True)
