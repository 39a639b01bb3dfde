"""Validated configuration: the retraining loop and the run-file schema.

Every section is a pydantic model with ``extra="forbid"``, so an unknown key, a wrong
type or an out-of-range value fails before any work, with the field's dotted path and the
accepted values in the message (:class:`ConfigError`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from stabfw._util.numbers import parse_inf
from stabfw.errors import ConfigError, format_validation_error
from stabfw.run.analysis_config import AnalysisConfig
from stabfw.run.registry import validate_params

__all__ = [
    "POLICIES",
    "QUANTITY_KINDS",
    "XSCALES",
    "DomainSpec",
    "OutputConfig",
    "RetrainConfig",
    "RunConfig",
    "StabilityOptions",
    "SweepConfig",
    "apply_overrides",
    "load_config",
    "parse_config",
    "parse_quantity",
]

POLICIES = ("fixed_real", "fully_synthetic", "fresh_real", "accumulate", "accumulate_subsample")
Policy = Literal["fixed_real", "fully_synthetic", "fresh_real", "accumulate", "accumulate_subsample"]
HookSpec = str | dict[str, Any] | Callable[..., Any]


class _Strict(BaseModel):
    # ser_json_inf_nan: a dump keeps λ = ∞ a float (YAML writes .inf; the JSON codec "inf")
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False,
                              ser_json_inf_nan="constants")


class RetrainConfig(_Strict):
    """How the loop retrains: λ, the mixing policy, generations and seeds.

    Parameters
    ----------
    lam : float
        Synthetic-to-real ratio by number of samples: n real and ⌊λn⌋ synthetic points.
        ``inf`` (YAML ``.inf``) is the fully synthetic loop. Defaults to 1, or ``inf``
        for ``policy="fully_synthetic"``.
    policy : str
        ``fixed_real`` (the same real set every generation), ``fully_synthetic``,
        ``fresh_real`` (a new real draw each generation), ``accumulate`` (every synthetic
        point of every past generation is kept) or ``accumulate_subsample`` (accumulate,
        then subsample to ``subsample_size``).
    generations : int
        Number of retraining generations after the real-data fit (generation 0).
    seeds : int or list of int
        A number of replicates (seeds ``0 .. seeds-1``) or the seeds themselves.
    warm_start : bool
        Fine-tune the previous generation (``True``) or fit from scratch.
    synthetic_size : int, optional
        Synthetic samples per generation when λ is infinite (default: the real set's size).
    subsample_size : int, optional
        Training-set size for ``accumulate_subsample`` (default: n + ⌊λn⌋).
    curate, correct : str, dict or callable, optional
        Hooks applied to each synthetic batch before mixing: a registered name, a
        ``{"name": ..., **kwargs}`` mapping, or a callable (see :mod:`stabfw.core.hooks`).
    vectorize : {"auto", "never", "always"}
        Use the domain's all-seeds-at-once path when it has one.
    """

    lam: float | None = Field(default=None, ge=0)
    policy: Policy = "fixed_real"
    generations: int = Field(default=10, ge=1, le=100_000)
    seeds: int | list[int] = 10
    warm_start: bool = True
    synthetic_size: int | None = Field(default=None, ge=1)
    subsample_size: int | None = Field(default=None, ge=1)
    curate: HookSpec | None = None
    correct: HookSpec | None = None
    vectorize: Literal["auto", "never", "always"] = "auto"

    @field_validator("lam", mode="before")
    @classmethod
    def _parse_inf(cls, v: Any) -> Any:
        return parse_inf(v)

    @field_validator("lam")
    @classmethod
    def _not_nan(cls, v: float | None) -> float | None:
        if v is not None and math.isnan(v):
            raise ValueError("must be a number ≥ 0 or inf, not NaN")
        return v

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int):
            if v < 1:
                raise ValueError("a seed count must be ≥ 1")
            return v
        if not v:
            raise ValueError("an explicit seed list must not be empty")
        if any(s < 0 for s in v):
            raise ValueError("seeds must be non-negative integers")
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    @field_validator("curate", "correct")
    @classmethod
    def _check_hook(cls, v: Any) -> Any:
        if isinstance(v, dict) and "name" not in v:
            raise ValueError("a hook mapping needs a 'name' key, e.g. {name: top_fraction, q: 0.5}")
        return v

    @model_validator(mode="after")
    def _resolve_lam(self) -> RetrainConfig:
        if self.lam is None:
            # object.__setattr__: validate_assignment would re-enter this validator
            object.__setattr__(self, "lam", math.inf if self.policy == "fully_synthetic" else 1.0)
        elif self.policy == "fully_synthetic" and math.isfinite(self.lam):
            raise ValueError(
                f"loop.lam={self.lam} contradicts policy 'fully_synthetic' (no real data): "
                "leave lam out or set it to .inf"
            )
        if self.subsample_size is not None and self.policy != "accumulate_subsample":
            raise ValueError("loop.subsample_size is only used by policy 'accumulate_subsample'")
        return self

    @field_serializer("curate", "correct")
    def _ser_hook(self, v: Any) -> Any:
        if callable(v):
            return f"{getattr(v, '__module__', '?')}:{getattr(v, '__qualname__', repr(v))}"
        return v

    # --- derived views ----------------------------------------------------------------
    @property
    def real_fraction(self) -> float:
        """Share of real samples in a fixed-real training set, 1/(1+λ)."""
        return 0.0 if math.isinf(self.lam) else 1.0 / (1.0 + self.lam)

    @property
    def fully_synthetic(self) -> bool:
        """Whether no real data enters the training sets after generation 0."""
        return math.isinf(self.lam)

    @property
    def seed_list(self) -> list[int]:
        """The replicate seeds."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def n_synthetic(self, n_real: int) -> int:
        """Synthetic samples drawn per generation for a real set of ``n_real`` points."""
        if self.fully_synthetic:
            return self.synthetic_size or n_real
        return math.floor(self.lam * n_real + 1e-9)


class DomainSpec(BaseModel):
    """``domain:`` section: a registered name and that domain's own parameters."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="constants")
    name: str

    @property
    def params(self) -> dict[str, Any]:
        """The domain's parameters (everything but ``name``)."""
        return dict(self.model_extra or {})


class OutputConfig(_Strict):
    """``output:`` section: where a run writes and what it writes."""

    dir: str | None = None
    report: bool = True
    checkpoint: bool = True
    progress: bool = True


XSCALES = ("auto", "linear", "log", "inverse", "lam")
QUANTITY_KINDS = ("final", "drift", "rate", "analysis", "verdict")


def parse_quantity(quantity: str) -> tuple[str, str]:
    """``(kind, argument)`` of a stability quantity such as ``final:cov_trace``."""
    kind, _, arg = str(quantity).partition(":")
    if kind == "verdict" and not arg:
        return kind, ""
    if kind not in QUANTITY_KINDS[:-1] or not arg:
        raise ValueError(f"{quantity!r} is not a quantity; use final:<metric>, drift:<metric>, "
                         "rate:<metric>, analysis:<dotted key> or verdict")
    return kind, arg


class StabilityOptions(_Strict):
    """``sweep.stability``: the critical value of one swept axis and the diagrams.

    ``quantity`` (per cell, mean over seeds): ``final:<metric>``, ``drift:<metric>``,
    ``rate:<metric>``, ``analysis:<dotted key>`` or ``verdict``; the critical value is
    where it crosses ``threshold`` along ``axis``, interpolated in ``xscale``
    (``auto``: λ/(1+λ) for ``loop.lam``, else linear).
    """

    axis: str | None = None
    quantity: str | None = None
    threshold: float | None = None
    xscale: Literal["auto", "linear", "log", "inverse", "lam"] = "auto"
    heatmap: str | None = None
    heatmap_axes: list[str] | None = Field(default=None, min_length=2, max_length=2)

    @field_validator("quantity", "heatmap")
    @classmethod
    def _quantity(cls, v: str | None) -> str | None:
        if v is not None:
            parse_quantity(v)
        return v


class SweepConfig(_Strict):
    """``sweep:`` section: a grid over any config fields (dotted paths).

    Example: ``grid: {loop.lam: [0, 0.5, 1, .inf]}``. Cells are the Cartesian product,
    each an ordinary run directory.
    """

    grid: dict[str, list[Any]] = Field(min_length=1)
    # where cells run (stabfw.experiments.backends): auto = local if joblib is installed
    backend: Literal["auto", "serial", "local", "ray"] = "auto"
    workers: int | None = Field(default=None, ge=1)
    address: str | None = None  # a Ray cluster; default: a local Ray instance
    stability: StabilityOptions | None = None

    @field_validator("grid")
    @classmethod
    def _check_grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if "." not in key or key.split(".")[0] not in {"domain", "loop"}:
                raise ValueError(f"grid key {key!r} must be a dotted path under domain. or loop.")
            if not values:
                raise ValueError(f"grid values for {key!r} must not be empty")
        return {k: [parse_inf(x) for x in vals] for k, vals in v.items()}

    def numeric_axes(self) -> list[str]:
        """Swept axes whose values are all numbers (∞ included)."""
        def numeric(values: list[Any]) -> bool:
            return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values)
        return [k for k, vals in self.grid.items() if numeric(vals)]

    @model_validator(mode="after")
    def _check_stability(self) -> SweepConfig:
        st = self.stability
        if st is None:
            return self
        grid = list(self.grid)
        if st.axis is not None:
            if st.axis not in grid:
                raise ValueError(f"stability.axis: {st.axis!r} is not swept; swept: "
                                 f"{', '.join(grid)}")
            if st.axis not in self.numeric_axes():
                raise ValueError(f"stability.axis: {st.axis!r} has non-numeric values "
                                 f"{self.grid[st.axis]}; a critical value needs numbers")
        if st.heatmap_axes is not None and set(st.heatmap_axes) - set(grid):
            raise ValueError(f"stability.heatmap_axes: must be two swept axes, got "
                             f"{st.heatmap_axes!r}")
        return self

    def stability_axis(self) -> str | None:
        """The axis the critical value is sought along: ``stability.axis``, else
        ``loop.lam`` when swept, else the first numeric axis."""
        if self.stability is not None and self.stability.axis is not None:
            return self.stability.axis
        numeric = self.numeric_axes()
        return "loop.lam" if "loop.lam" in numeric else (numeric[0] if numeric else None)


class RunConfig(_Strict):
    """A whole run file: ``domain``, ``loop``, ``output`` and optional sections."""

    domain: DomainSpec
    loop: RetrainConfig = Field(default_factory=RetrainConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    analysis: AnalysisConfig | None = None
    sweep: SweepConfig | None = None

    def record(self) -> dict[str, Any]:
        """The resolved run file as results record it: :meth:`to_dict` with the domain's
        defaults filled in."""
        data = self.to_dict()
        data["domain"] = {"name": self.domain.name,
                          **validate_params(self.domain.name, self.domain.params)}
        return data

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-safe dict of the resolved config."""
        return self.model_dump(mode="json", exclude_none=True)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a raw config dict."""
    import copy

    out = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        path, _, text = item.partition("=")
        keys = [k for k in path.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"--set has an empty key in {item!r}")
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {path}: {k!r} is not a section")
        node[keys[-1]] = yaml.safe_load(text) if text.strip() else None
    return out


def parse_config(raw: Mapping[str, Any], validate_domain: bool = True) -> RunConfig:
    """Validate a raw mapping as a :class:`RunConfig` (and the domain's parameters)."""
    if not isinstance(raw, Mapping):
        raise ConfigError("invalid configuration: the file must hold a mapping with a 'domain:' key")
    try:
        cfg = RunConfig.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    if validate_domain:
        validate_params(cfg.domain.name, cfg.domain.params)
    return cfg


def load_config(
    path: str | Path, overrides: list[str] | None = None, validate_domain: bool = True
) -> RunConfig:
    """Read, override and validate a YAML run file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(apply_overrides(raw, overrides), validate_domain=validate_domain)
