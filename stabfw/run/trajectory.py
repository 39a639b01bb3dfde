"""The result of a run: θ and metrics per seed and generation."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from stabfw._util.atomic import atomic_write

__all__ = ["Trajectory"]


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
        Run facts: which path ran (vectorised or per seed), wall time, resumes.
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
    def load(cls, out_dir: str | Path) -> Trajectory:
        """Read a trajectory written by :meth:`save`."""
        out = Path(out_dir)
        for name in ("params.npz", "metrics.csv", "config.yaml"):
            if not (out / name).is_file():
                raise FileNotFoundError(f"{out}: no {name}; is this a finished stabfw run directory?")
        with np.load(out / "params.npz") as z:
            params, seeds = z["params"], z["seeds"]
        record = yaml.safe_load((out / "config.yaml").read_text())
        return cls(
            params=params,
            metrics=pd.read_csv(out / "metrics.csv"),
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
            with np.errstate(invalid="ignore"):
                stats[name] = {
                    "generation_0_mean": float(np.nanmean(v0)) if v0.size else None,
                    "final_mean": float(np.nanmean(vt)) if vt.size else None,
                    "final_median": float(np.nanmedian(vt)) if vt.size else None,
                    "final_q10": float(np.nanquantile(vt, 0.1)) if vt.size else None,
                    "final_q90": float(np.nanquantile(vt, 0.9)) if vt.size else None,
                }
        return {
            "n_seeds": int(self.seeds.size),
            "generations": self.generations,
            "dim_theta": int(self.params.shape[-1]),
            "metrics": stats,
            "meta": self.meta,
        }

