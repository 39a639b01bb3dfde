"""Experiment trackers: a run's metrics sent to MLflow as it goes.

:class:`MLflowTracker` is a :class:`~stabfw.run.callbacks.RunCallback`: pass it to
:func:`stabfw.run_loop` (``callbacks=[MLflowTracker(...)]``) or name a store in a config's
``output.mlflow`` section, and every run (every cell of a sweep) becomes one MLflow run:
the resolved config as parameters, per generation the mean over seeds of every metric
(step = generation), and at the end the last generation's mean and standard deviation.
Install with ``pip install "stabfw[mlflow]"`` (``mlflow-skinny``: no server needed; a
``file:`` URI or a directory is a local store that ``mlflow ui`` reads).
"""

from __future__ import annotations

import math
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from stabfw._util.filelock import exclusive
from stabfw.errors import ConfigError
from stabfw.run.callbacks import RunCallback

__all__ = ["MLflowTracker", "flat_params"]

_NOT_LOGGED = ("seed", "generation")
_MAX_PARAM = 500  # MLflow refuses longer parameter values


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow parameters: dotted keys, string values."""
    out: dict[str, str] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flat_params(v, key + "."))
        else:
            out[key] = str(v)[:_MAX_PARAM]
    return out


def _store_uri(uri: str) -> str:
    if "://" in uri or uri.startswith(("file:", "databricks")):
        return uri
    return Path(uri).expanduser().resolve().as_uri()  # a plain directory: a local store


class MLflowTracker(RunCallback):
    """Log a run to MLflow, generation by generation.

    Parameters
    ----------
    tracking_uri : str
        ``file:///path``, a directory (a local file store) or a tracking server's URL.
    experiment : str
        MLflow experiment, created when missing.
    run_name : str, optional
    params : mapping, optional
        Logged as parameters (flattened); ``stabfw run`` passes the resolved config.
    tags : mapping, optional
    """

    def __init__(self, tracking_uri: str, experiment: str = "stabfw", run_name: str | None = None,
                 params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None):
        self.tracking_uri = _store_uri(str(tracking_uri))
        self.experiment = experiment
        self.run_name = run_name
        self.params = dict(params or {})
        self.tags = dict(tags or {})
        self.run_id: str | None = None
        self._client: Any = None

    def _connect(self) -> Any:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError('output.mlflow needs MLflow: pip install "stabfw[mlflow]"') from None
        if self.tracking_uri.startswith("file:"):
            # MLflow 3 keeps the file store behind this switch; a local store is the point
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        client = MlflowClient(tracking_uri=self.tracking_uri)
        if not self.tracking_uri.startswith("file:"):
            return client, self._experiment_id(client)
        # sweep cells start in parallel: one creates the experiment, the others find it
        root = Path(urllib.parse.urlparse(self.tracking_uri).path)
        root.mkdir(parents=True, exist_ok=True)
        with exclusive(root / ".stabfw-experiments.lock"):
            return client, self._experiment_id(client)

    def _experiment_id(self, client: Any) -> str:
        exp = client.get_experiment_by_name(self.experiment)
        return exp.experiment_id if exp is not None else client.create_experiment(self.experiment)

    def on_run_start(self, config: Any, seeds: np.ndarray, start_generation: int) -> None:
        client, exp_id = self._connect()
        self._client = client
        run = client.create_run(exp_id, run_name=self.run_name,
                                tags={"stabfw.start_generation": str(start_generation),
                                      **self.tags})
        self.run_id = run.info.run_id
        params = dict(flat_params(self.params))
        params.setdefault("loop.seeds", str(len(seeds)))
        self._log(params=params)

    def _log(self, metrics: Mapping[str, float] | None = None, step: int = 0,
             params: Mapping[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param

        ms = [Metric(k, float(v), 0, step) for k, v in (metrics or {}).items()
              if math.isfinite(float(v))]
        ps = [Param(k, v) for k, v in (params or {}).items()]
        for i in range(0, max(len(ms), len(ps)), 100):  # log_batch takes ≤ 100 params
            self._client.log_batch(self.run_id, metrics=ms[i:i + 100], params=ps[i:i + 100])

    def on_generation(self, generation: int, theta: np.ndarray, metrics: Any) -> None:
        cols = [c for c in getattr(metrics, "columns", []) if c not in _NOT_LOGGED]
        means = {c: metrics[c].mean() for c in cols
                 if np.issubdtype(metrics[c].dtype, np.number)}
        self._log(means, step=int(generation))

    def on_run_end(self, trajectory: Any) -> None:
        m = trajectory.metrics
        last = m[m["generation"] == m["generation"].max()]
        out = {}
        for c in last.columns:
            if c not in _NOT_LOGGED and np.issubdtype(last[c].dtype, np.number):
                out[f"final.{c}.mean"] = last[c].mean()
                out[f"final.{c}.sd"] = last[c].std(ddof=1) if len(last) > 1 else math.nan
        self._log(out, step=int(m["generation"].max()))
        self._client.set_terminated(self.run_id)
