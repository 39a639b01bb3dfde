"""Validated configuration: the retraining loop and the run-file schema.

Every section is a pydantic model with ``extra="forbid"``, so an unknown key, a wrong
type or an out-of-range value fails before any work, with the field's dotted path and the
accepted values in the message (:class:`ConfigError`).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

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
from stabfw._util.typecheck import coerced_bools
from stabfw._util.yamlio import load_yaml
from stabfw.core.checks import RESERVED_COLUMNS
from stabfw.core.hooks import check_hook
from stabfw.errors import ConfigError, clip, format_validation_error, short_repr
from stabfw.run.analysis_config import AnalysisConfig
from stabfw.run.registry import make, validate_params
from stabfw.run.sizing import check_size, estimate_size

__all__ = [
    "MAX_LAM",
    "MAX_SEED",
    "MAX_SYNTHETIC",
    "NONFINITE",
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
    "check_run_config",
    "load_config",
    "metric_references",
    "parse_config",
    "parse_quantity",
    "unknown_metrics",
]

#: Policies whose training sets are defined to hold real points (refused with λ = ∞).
_NEEDS_REAL = {
    "fresh_real": "draws fresh real data every generation",
    "accumulate": "keeps the real points beside every past synthetic point",
    "accumulate_subsample": "subsamples the real points together with the synthetic pool",
}
POLICIES = ("fixed_real", "fully_synthetic", "fresh_real", "accumulate", "accumulate_subsample")
Policy = Literal["fixed_real", "fully_synthetic", "fresh_real", "accumulate", "accumulate_subsample"]
HookSpec = str | dict[str, Any] | Callable[..., Any]
NONFINITE = ("stop", "record")

#: The largest finite λ (a larger one is .inf in all but name, and ⌊λn⌋ would overflow).
MAX_LAM = 1e9
#: The most synthetic samples one generation may draw.
MAX_SYNTHETIC = 10**9
#: The largest seed (seeds are stored as signed 64-bit integers).
MAX_SEED = 2**63 - 1


class _Strict(BaseModel):
    # ser_json_inf_nan: a dump keeps λ = ∞ a float (YAML writes .inf; the JSON codec "inf")
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False,
                              ser_json_inf_nan="constants")

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        # pydantic's lax mode reads true as 1.0: refuse a boolean wherever a number belongs
        bad = coerced_bools(cls, data) if isinstance(data, Mapping) else []
        if bad:
            raise ValueError(f"{bad[0]}: expected a number, got a boolean "
                             "(true/false is not 1/0 here)")
        return data


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
    on_nonfinite : {"stop", "record"}
        What a non-finite θ (NaN or ±∞) or a NaN metric of one seed does: ``stop`` that
        seed there (its later generations are NaN and not computed), or ``record`` the
        event and go on (for domains that report divergence as NaN themselves). Either way
        the run's ``events`` (and ``summary.json``, the report) name every seed and
        generation where it happened. A metric of ±∞ (the log-determinant of a singular
        covariance) is a value, not an event.
    workers : int
        Processes that advance the seeds of one run in parallel on the per-seed path
        (``1``: this process): one chunk of seeds per worker, each chunk going on to its
        next generations as soon as its last ones are back, its states kept in that worker
        (a task runs as many generations as fill about 0.25 s). Results are
        bit-identical to ``workers: 1``, and a checkpoint of either resumes exactly with
        the other. On the vectorised path the seeds are split into up to
        ``workers`` batches of at least 2000 seeds, advanced by threads of this process
        (numpy releases the GIL; smaller batches are faster in one): same numbers, and
        ``backend`` does not apply. A domain's ``step_batch`` must then not change the
        loop object.
    backend : {"local", "ray"}
        Where those workers run: loky processes on this machine, or a Ray cluster
        (``address``; default: a local Ray instance, or the one ``ray.init`` started).
    address : str, optional
        The Ray cluster (``"auto"``, ``"ray://host:10001"``) for ``backend: ray``.
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
    on_nonfinite: Literal["stop", "record"] = "stop"
    #: Fields that decide where a run computes, not what: left out of its fingerprint.
    EXECUTION_FIELDS: ClassVar[tuple[str, ...]] = ("workers", "backend", "address")

    workers: int = Field(default=1, ge=1, le=4096)
    backend: Literal["local", "ray"] = "local"
    address: str | None = None

    @field_validator("lam", mode="before")
    @classmethod
    def _parse_inf(cls, v: Any) -> Any:
        return parse_inf(v)

    @field_validator("lam")
    @classmethod
    def _not_nan(cls, v: float | None) -> float | None:
        if v is not None and math.isnan(v):
            raise ValueError("must be a number ≥ 0 or inf, not NaN")
        if v is not None and math.isfinite(v) and v > MAX_LAM:
            raise ValueError(f"a finite λ must be ≤ {MAX_LAM:g} (⌊λ·n⌋ synthetic samples per "
                             f"generation); got {v:g} — use .inf for a fully synthetic loop")
        return v

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int):
            if v < 1:
                raise ValueError(f"a seed count must be ≥ 1, got {v}")
            if v > MAX_SEED:
                raise ValueError(f"a seed count must be ≤ {MAX_SEED}")
            return v
        if not v:
            raise ValueError("an explicit seed list must not be empty")
        first: dict[int, int] = {}
        for i, s in enumerate(v):
            if not 0 <= s <= MAX_SEED:
                raise ValueError(f"seeds must be non-negative integers below 2^63; seed {s} "
                                 f"at position {i} is not")
            if s in first:
                raise ValueError(f"seeds must be distinct; seed {s} appears at positions "
                                 f"{first[s]} and {i} (of {len(v)})")
            first[s] = i
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
        elif math.isinf(self.lam) and self.policy in _NEEDS_REAL:
            raise ValueError(
                f"loop.lam=.inf contradicts policy {self.policy!r}, which "
                f"{_NEEDS_REAL[self.policy]}: with λ = ∞ no real point enters a training "
                "set. Use policy 'fully_synthetic' (or 'fixed_real', the λ → ∞ end of a λ "
                "sweep), or a finite λ")
        if self.subsample_size is not None and self.policy != "accumulate_subsample":
            raise ValueError("loop.subsample_size is only used by policy 'accumulate_subsample'")
        if self.synthetic_size is not None and math.isfinite(self.lam):
            raise ValueError(
                f"loop.synthetic_size is only used when λ is infinite (fully synthetic); with "
                f"λ = {self.lam:g} each generation draws ⌊λ·n⌋ synthetic samples — leave "
                "synthetic_size out, or set lam: .inf")
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
    def n_seeds(self) -> int:
        """Number of replicates (without building the list of seeds)."""
        return self.seeds if isinstance(self.seeds, int) else len(self.seeds)

    @property
    def seed_list(self) -> list[int]:
        """The replicate seeds (a list: mind :attr:`n_seeds` before asking for it)."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def n_synthetic(self, n_real: int) -> int:
        """Synthetic samples drawn per generation for a real set of ``n_real`` points.

        Raises
        ------
        ConfigError
            When that exceeds :data:`MAX_SYNTHETIC`.
        """
        if self.fully_synthetic:
            return self.synthetic_size or n_real
        count = self.lam * n_real + 1e-9
        if count > MAX_SYNTHETIC:
            raise ConfigError(f"loop.lam: λ = {self.lam:g} with n = {n_real} real samples asks "
                              f"for {count:.3g} synthetic samples per generation; at most "
                              f"{MAX_SYNTHETIC:.0e} are allowed (λ ≤ {MAX_SYNTHETIC / n_real:.3g})")
        return math.floor(count)


class DomainSpec(BaseModel):
    """``domain:`` section: a registered name and that domain's own parameters."""

    model_config = ConfigDict(extra="allow", ser_json_inf_nan="constants")
    name: str

    @property
    def params(self) -> dict[str, Any]:
        """The domain's parameters (everything but ``name``)."""
        return dict(self.model_extra or {})


class MLflowOutput(_Strict):
    """``output.mlflow:``: log each run (each sweep cell) to an MLflow store."""

    tracking_uri: str = Field(min_length=1, description="file:///path, a directory or a URL")
    experiment: str = Field(default="stabfw", min_length=1)


class OutputConfig(_Strict):
    """``output:`` section: where a run writes and what it writes."""

    dir: str | None = None
    report: bool = True
    checkpoint: bool = True
    progress: bool = True
    mlflow: MLflowOutput | None = None


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
    # where cells run (stabfw.run.backends): auto = local if joblib is installed
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
    """Apply ``key.path=value`` overrides to a raw config dict.

    Each value is parsed as one YAML value (``0.5``, ``.inf``, ``[1, 2]``, ``null``) by the
    strict loader; an empty value is refused (write ``null`` to unset a key), and so is text
    that is not valid YAML. The schema then validates the result as strictly as a file.
    """
    import copy

    out = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key.path=value, got {short_repr(item)}")
        path, _, text = item.partition("=")
        keys = [k for k in path.strip().split(".") if k]
        if not keys:
            raise ConfigError(f"--set has an empty key in {short_repr(item)}")
        if not text.strip():
            raise ConfigError(f"--set {path.strip()}=: the value is empty; give a value (e.g. "
                              f"--set {path.strip()}=0.5), or null to unset the key")
        try:
            value = load_yaml(text)
        except yaml.YAMLError as err:
            first = str(err).strip().splitlines()[0]
            raise ConfigError(f"--set {path.strip()}={short_repr(text)[1:-1]}: not a YAML value "
                              f"({first}); quote strings, write lists as [a, b]") from None
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {path}: {k!r} is not a section")
        node[keys[-1]] = value
    return out


def parse_config(raw: Mapping[str, Any], validate_domain: bool = True) -> RunConfig:
    """Validate a raw mapping as a :class:`RunConfig`.

    With ``validate_domain`` (the default) it also runs every check a run would make
    before its first generation: the domain's parameters (:func:`validate_params`, which
    calls the domain's ``check_params``), the hooks, the metric names the config uses and
    the size estimate (:func:`check_run_config`). ``stabfw validate`` and ``stabfw run``
    both go through here, so they refuse exactly the same configs.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError("invalid configuration: the file must hold a mapping with a 'domain:' key")
    try:
        cfg = RunConfig.model_validate(dict(raw))
    except ValidationError as err:
        raise ConfigError(format_validation_error(err)) from None
    if validate_domain:
        check_run_config(cfg, make(cfg.domain.name, **cfg.domain.params))
    return cfg


def metric_references(cfg: RunConfig) -> dict[str, str]:
    """Metric names the config refers to, each with the field that names it."""
    refs: dict[str, str] = {}
    fp = cfg.analysis.fixed_point if cfg.analysis is not None else None
    for name in (fp.metrics if fp is not None else []):
        refs.setdefault(name, "analysis.fixed_point.metrics")
    st = cfg.sweep.stability if cfg.sweep is not None else None
    if st is not None:
        for key in ("quantity", "heatmap"):
            q = getattr(st, key)
            if q is None:
                continue
            kind, arg = parse_quantity(q)
            if kind in ("final", "drift", "rate"):
                refs.setdefault(arg, f"sweep.stability.{key}")
    return refs


def unknown_metrics(refs: Mapping[str, str], have: Any) -> str | None:
    """The error message for metric names in ``refs`` that are not in ``have`` (or None)."""
    known = set(have) | set(RESERVED_COLUMNS)
    missing = [n for n in refs if n not in known]
    if not missing:
        return None
    lines = [f"  {refs[n]}: no metric {n!r}" for n in missing]
    avail = ", ".join(sorted(known))
    return clip("invalid configuration:\n" + "\n".join(lines) + f"\n  the run's metrics: {avail}")


def check_run_config(cfg: RunConfig, loop: Any) -> None:
    """The checks of a config that need its domain's loop, made before any work.

    * ``loop.curate`` / ``loop.correct``: the hook exists, takes
      ``(batch, *, state, loop, rng, real)`` and the loop has what it needs (``score``);
    * metric names in ``analysis:`` and ``sweep.stability``: against the loop's declared
      :meth:`~stabfw.SelfConsumingLoop.metric_info` (a loop that declares none has its names
      checked after generation 0's metrics, before the other generations run);
    * λ·n within :data:`MAX_SYNTHETIC` and the size estimate (:mod:`stabfw.run.sizing`).

    Raises
    ------
    ConfigError
    """
    if cfg.output.mlflow is not None and importlib.util.find_spec("mlflow") is None:
        raise ConfigError('invalid configuration:\n  output.mlflow: MLflow is not installed; '
                          'pip install "stabfw[mlflow]" (mlflow-skinny), or remove the section')
    for name in ("curate", "correct"):
        spec = getattr(cfg.loop, name)
        if spec is not None:
            try:
                check_hook(spec, loop)
            except (ValueError, TypeError) as err:
                raise ConfigError(f"invalid configuration:\n  loop.{name}: {err}") from None
    _check_methods(cfg, loop)
    declared = loop.metric_info()
    if declared:
        msg = unknown_metrics(metric_references(cfg), declared)
        if msg:
            raise ConfigError(msg)
    hint = loop.size_hint() or {}
    if hint.get("n_real") is not None:
        cfg.loop.n_synthetic(int(hint["n_real"]))  # raises on an absurd λ·n
    check_size(estimate_size(cfg.loop.n_seeds, cfg.loop.generations, hint.get("dim_theta"),
                             len(declared) if declared else None))


def _check_methods(cfg: RunConfig, loop: Any) -> None:
    """Jacobian methods that need the differentiable protocol, on a loop without it."""
    a = cfg.analysis
    if a is None or loop.capabilities().differentiable:
        return
    asked = []
    if a.jacobian is not None:
        asked += [("analysis.jacobian.methods", m) for m in a.jacobian.methods]
    for section in ("lambda_curve", "critical_lambda"):
        o = getattr(a, section)
        if o is not None and getattr(o, "method", None):
            asked.append((f"analysis.{section}.method", o.method))
    if a.solve is not None:
        asked.append(("analysis.solve.method", a.solve.method))
    bad = [(field, m) for field, m in asked if m in ("dense", "implicit", "newton")]
    if bad:
        field, m = bad[0]
        instead = ("'anderson' or 'picard'" if m == "newton"
                   else "'finite_difference', 'empirical' or 'auto'")
        raise ConfigError(
            f"invalid configuration:\n  {field}: {m!r} needs a differentiable domain "
            f"(loss, sample, draw_noise; see stabfw.core.differentiable), which "
            f"{type(loop).__name__} is not; use {instead}")


def load_config(
    path: str | Path, overrides: list[str] | None = None, validate_domain: bool = True
) -> RunConfig:
    """Read, override and validate a YAML run file (duplicated keys are refused)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give a YAML config file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a YAML config is UTF-8 text)") from None
    except yaml.YAMLError as err:
        raise ConfigError(clip(f"{path}: not valid YAML: {err}")) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: the file must hold a mapping with a 'domain:' key, not a "
                          f"{type(raw).__name__}")
    return parse_config(apply_overrides(raw, overrides), validate_domain=validate_domain)
