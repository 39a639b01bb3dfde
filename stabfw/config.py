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

from stabfw.analysis import AnalysisConfig  # light: pydantic only

__all__ = [
    "POLICIES",
    "ConfigError",
    "DomainSpec",
    "OutputConfig",
    "RetrainConfig",
    "RunConfig",
    "SweepConfig",
    "apply_overrides",
    "format_validation_error",
    "load_config",
    "parse_config",
]

POLICIES = ("fixed_real", "fully_synthetic", "fresh_real", "accumulate", "accumulate_subsample")
Policy = Literal["fixed_real", "fully_synthetic", "fresh_real", "accumulate", "accumulate_subsample"]
HookSpec = str | dict[str, Any] | Callable[..., Any]


class ConfigError(ValueError):
    """A configuration is invalid; the message names each bad field."""


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem: ``dotted.field: message (got value)``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix, *e["loc"]) if p != "")
        got = e.get("input")
        shown = "" if isinstance(got, Mapping) or got is None else f" (got {got!r})"
        lines.append(f"  {loc or '<root>'}: {e['msg']}{shown}")
    return "invalid configuration:\n" + "\n".join(lines)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


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
        ``{"name": ..., **kwargs}`` mapping, or a callable (see :mod:`stabfw.hooks`).
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
        if isinstance(v, str) and v.strip().lower() in {"inf", ".inf", "infinity", "+inf"}:
            return math.inf
        return v

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

    model_config = ConfigDict(extra="allow")
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


class SweepConfig(_Strict):
    """``sweep:`` section: a grid over any config fields (dotted paths).

    Example: ``grid: {loop.lam: [0, 0.5, 1, .inf]}``. Cells are the Cartesian product,
    each an ordinary run directory.
    """

    grid: dict[str, list[Any]] = Field(min_length=1)
    # where cells run (stabfw.backends): auto = local if joblib is installed, else serial
    backend: Literal["auto", "serial", "local", "ray"] = "auto"
    workers: int | None = Field(default=None, ge=1)
    address: str | None = None  # a Ray cluster; default: a local Ray instance
    # the critical value and diagram (checked by stabfw.stability.validate_spec)
    stability: dict[str, Any] | None = None

    @field_validator("grid")
    @classmethod
    def _check_grid(cls, v: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in v.items():
            if "." not in key or key.split(".")[0] not in {"domain", "loop"}:
                raise ValueError(f"grid key {key!r} must be a dotted path under domain. or loop.")
            if not values:
                raise ValueError(f"grid values for {key!r} must not be empty")
        return v


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
        from stabfw import registry

        data = self.to_dict()
        data["domain"] = {"name": self.domain.name,
                          **registry.validate_params(self.domain.name, self.domain.params)}
        return data

    def to_dict(self) -> dict[str, Any]:
        """A plain, YAML-safe dict of the resolved config."""
        data = self.model_dump(mode="json", exclude_none=True)
        lam = self.loop.lam
        data["loop"]["lam"] = lam if math.isfinite(lam) else math.inf
        return data


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
        from stabfw import registry

        registry.validate_params(cfg.domain.name, cfg.domain.params)
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
