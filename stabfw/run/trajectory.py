"""The result of a run: θ and metrics per seed and generation."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from stabfw._util.atomic import atomic_write
from stabfw.errors import CheckpointError
from stabfw.run.rundir import read_manifest, verify_file

__all__ = ["Trajectory", "nonfinite_summary"]


def _yaml_dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


@dataclass
class Trajectory:
    """θ and metrics of every seed over generations.

    Attributes
    ----------
    params : numpy.ndarray, shape (n_seeds, generations + 1, d)
        θ per seed and generation; generation 0 is θ*, the fit on real data.
    metrics : pandas.DataFrame
        Columns ``seed``, ``generation`` and one column per metric.
    seeds : numpy.ndarray of int
    config : dict
        The resolved configuration (the whole run file when run from one).
    environment : dict
        Package versions, platform and time (see :func:`stabfw.run.provenance.environment`).
    meta : dict
        Run facts: which path ran (vectorised or per seed), wall time, resumes, the run's
        fingerprint, and ``events``: every seed and generation where θ or a metric became
        non-finite (see ``loop.on_nonfinite``).
    """

    params: np.ndarray
    metrics: pd.DataFrame
    seeds: np.ndarray
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # --- views ------------------------------------------------------------------------
    @property
    def theta(self) -> np.ndarray:
        """θ per seed and generation (the same array as :attr:`params`)."""
        return self.params

    @property
    def theta_star(self) -> np.ndarray:
        """θ* per seed, shape (n_seeds, d)."""
        return self.params[:, 0, :]

    @property
    def generations(self) -> int:
        """Number of retraining generations (excluding generation 0)."""
        return self.params.shape[1] - 1

    @property
    def distances(self) -> np.ndarray:
        """‖θ_t − θ*‖ per seed and generation, shape (n_seeds, generations + 1)."""
        return np.linalg.norm(self.params - self.params[:, :1, :], axis=-1)

    def metric(self, name: str) -> np.ndarray:
        """One metric as an array of shape (n_seeds, generations + 1)."""
        if name not in self.metrics.columns:
            raise KeyError(f"no metric {name!r}; have {sorted(self.metric_names)}")
        table = self.metrics.pivot(index="seed", columns="generation", values=name)
        return table.loc[list(self.seeds)].to_numpy(dtype=float)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Non-finite events: ``{"seed", "generation", "what", "action"}`` each (see
        ``loop.on_nonfinite``); empty when every θ and metric stayed finite."""
        return list(self.meta.get("events") or [])

    @property
    def metric_names(self) -> list[str]:
        """Metric columns (everything but ``seed`` and ``generation``)."""
        return [c for c in self.metrics.columns if c not in ("seed", "generation")]

    # --- persistence ------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> Path:
        """Write ``params.npz``, ``metrics.csv`` and ``config.yaml`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)

        def write_npz(f):
            buf = io.BytesIO()
            np.savez_compressed(buf, params=self.params, seeds=self.seeds)
            f.write(buf.getvalue())

        atomic_write(out / "params.npz", write_npz)
        atomic_write(out / "metrics.csv",
                     lambda f: f.write(self.metrics.to_csv(index=False, float_format="%.10g").encode()))
        record = {
            "config": self.config,
            "seeds": [int(s) for s in self.seeds],
            "environment": self.environment,
            "meta": self.meta,
        }
        atomic_write(out / "config.yaml", lambda f: f.write(_yaml_dump(record).encode()))
        return out

    @classmethod
    def load(cls, out_dir: str | Path, verify: bool = True) -> Trajectory:
        """Read a trajectory written by :meth:`save`.

        With ``verify`` (the default) each file is checked against the checksum the run's
        ``manifest.json`` recorded when it finished (when there is one), and a file that
        cannot be parsed is reported by name; either raises
        :class:`~stabfw.errors.CheckpointError` instead of returning wrong numbers.
        """
        out = Path(out_dir)
        for name in ("params.npz", "metrics.csv", "config.yaml"):
            if not (out / name).is_file():
                raise FileNotFoundError(f"{out}: no {name}; is this a finished stabfw run directory?")
        manifest = read_manifest(out) if verify else None
        for name in ("params.npz", "metrics.csv", "config.yaml"):
            verify_file(out, name, manifest)

        def bad(name: str, err: BaseException) -> CheckpointError:
            return CheckpointError(f"{out / name} cannot be read ({type(err).__name__}: "
                                   f"{str(err)[:200]}); the run's results are damaged — "
                                   "restore the file or re-run (stabfw run … --force)", out / name)

        try:
            with open(out / "params.npz", "rb") as f, np.load(f, allow_pickle=False) as z:
                params, seeds = z["params"], z["seeds"]
        except Exception as err:
            raise bad("params.npz", err) from None
        try:
            record = yaml.safe_load((out / "config.yaml").read_text()) or {}
            if not isinstance(record, dict):
                raise ValueError("not a mapping")
        except Exception as err:
            raise bad("config.yaml", err) from None
        try:
            metrics = pd.read_csv(out / "metrics.csv")
        except Exception as err:
            raise bad("metrics.csv", err) from None
        if params.ndim != 3 or seeds.shape != (params.shape[0],):
            raise bad("params.npz", ValueError(f"θ has shape {params.shape}, seeds {seeds.shape}"))
        missing = {"seed", "generation"} - set(metrics.columns)
        if missing or len(metrics) != params.shape[0] * params.shape[1]:
            raise bad("metrics.csv", ValueError(
                f"{len(metrics)} rows and columns {list(metrics.columns)[:6]}; expected "
                f"{params.shape[0] * params.shape[1]} rows with seed and generation"))
        return cls(
            params=params,
            metrics=metrics,
            seeds=seeds,
            config=record.get("config", {}),
            environment=record.get("environment", {}),
            meta=record.get("meta", {}),
        )

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: last-generation statistics of each metric over seeds."""
        last = self.metrics[self.metrics["generation"] == self.generations]
        first = self.metrics[self.metrics["generation"] == 0]
        stats = {}
        for name in self.metric_names:
            v0, vt = first[name].to_numpy(float), last[name].to_numpy(float)
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                # an all-NaN column (a stopped or diverged run) is named in the events
                warnings.simplefilter("ignore", RuntimeWarning)
                stats[name] = {
                    "generation_0_mean": float(np.nanmean(v0)) if v0.size else None,
                    "final_mean": float(np.nanmean(vt)) if vt.size else None,
                    "final_median": float(np.nanmedian(vt)) if vt.size else None,
                    "final_q10": float(np.nanquantile(vt, 0.1)) if vt.size else None,
                    "final_q90": float(np.nanquantile(vt, 0.9)) if vt.size else None,
                }
        out = {
            "n_seeds": int(self.seeds.size),
            "generations": self.generations,
            "dim_theta": int(self.params.shape[-1]),
            "metrics": stats,
            "meta": self.meta,
        }
        events = self.events
        if events:
            out["nonfinite"] = nonfinite_summary(events, self.meta.get("on_nonfinite"))
        return out


def nonfinite_summary(events: list[dict[str, Any]], policy: str | None) -> dict[str, Any]:
    """What a run's non-finite events amount to, with a one-line ``text`` for people."""
    seeds = sorted({e["seed"] for e in events})
    first = min(events, key=lambda e: (e["generation"], e["seed"]))
    what = ", ".join(first["what"])
    action = "stopped there" if policy == "stop" else "recorded, the run went on"
    text = (f"non-finite values in {len(seeds)} seed(s) ({len(events)} event(s)); the first: "
            f"{what} at seed {first['seed']}, generation {first['generation']} — {action} "
            f"(loop.on_nonfinite: {policy})")
    return {"on_nonfinite": policy, "n_events": len(events), "n_seeds": len(seeds),
            "first": first, "text": text}

