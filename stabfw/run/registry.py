"""Domain registry: names mapped to lazy ``"module:Class"`` strings (gymnasium style).

Built-in domains are listed here; other packages add theirs through the entry-point
group ``stabfw.domains`` (``name = "package.module:Class"``) or at run time with
:func:`register`. Nothing is imported until a domain is used, so ``import stabfw`` stays
light and a domain whose extra is not installed still shows up in ``stabfw list``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from pydantic import ValidationError

from stabfw._util.typecheck import coerced_bools
from stabfw.core.parameters import params_model
from stabfw.errors import ConfigError, format_validation_error

__all__ = ["BUILTINS", "DomainEntry", "get", "is_builtin", "is_loaded", "list_domains", "make",
           "params_model", "register", "validate_loop", "validate_params"]

ENTRY_POINT_GROUP = "stabfw.domains"


@dataclass(frozen=True)
class DomainEntry:
    """A registered domain: its name, where it lives and the extra that installs it."""

    name: str
    target: str
    extra: str | None = None
    summary: str = ""


BUILTINS = (
    DomainEntry("gaussian", "stabfw.domains.gaussian:GaussianLoop", None,
                "Gaussian fitted by maximum likelihood (the reference domain)"),
    DomainEntry("toy2d", "stabfw.domains.toy2d:Toy2DFlowLoop", "toy2d",
                "normalizing flow on 2-D toy densities (two moons, 8 Gaussians, ...)"),
    DomainEntry("rl", "stabfw.domains.rl:BehaviorCloningLoop", "rl",
                "gymnasium policy behaviour-cloned on expert + own rollouts"),
    DomainEntry("forecasting", "stabfw.domains.forecasting:ForecastingLoop", "forecasting",
                "sktime forecaster refitted on histories holding its own forecasts"),
    DomainEntry("anomaly", "stabfw.domains.anomaly:AnomalyLoop", "anomaly",
                "anomaly detector retrained on the data it let through"),
    DomainEntry("diffusion", "stabfw.domains.diffusion:DiffusionLoop", "diffusion",
                "diffusers UNet retrained on real + its own samples"),
)
_REGISTRY: dict[str, DomainEntry] = {e.name: e for e in BUILTINS}
_CLASSES: dict[str, type] = {}
_ENTRY_POINTS_LOADED = False


def register(name: str, target: str | type, *, extra: str | None = None, summary: str = "",
             overwrite: bool = False) -> None:
    """Register a domain under ``name``.

    Parameters
    ----------
    name : str
        The name used in ``domain: {name: ...}``.
    target : str or type
        ``"module:Class"`` (imported lazily) or the class itself.
    """
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"domain {name!r} is already registered ({_REGISTRY[name].target})")
    if isinstance(target, type):
        _CLASSES[name] = target
        target = f"{target.__module__}:{target.__qualname__}"
    _REGISTRY[name] = DomainEntry(name, target, extra, summary)


def _load_entry_points() -> None:
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            origin = ep.dist.name if ep.dist else "?"
            _REGISTRY[ep.name] = DomainEntry(ep.name, ep.value, None, f"from {origin}")


def is_builtin(name: str) -> bool:
    """Whether ``name`` is one of the domains that ship with stabfw."""
    return any(e.name == name for e in BUILTINS)


def is_loaded(name: str) -> bool:
    """Whether the class of domain ``name`` is known in this process already."""
    return name in _CLASSES


def list_domains() -> list[DomainEntry]:
    """Every registered domain, built-ins first."""
    _load_entry_points()
    return list(_REGISTRY.values())


def get(name: str) -> type:
    """The domain class registered as ``name`` (imported on first use)."""
    _load_entry_points()
    if name in _CLASSES:
        return _CLASSES[name]
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"domain.name: unknown domain {name!r}; registered: {known}")
    entry = _REGISTRY[name]
    module_name, _, attr = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        hint = f" — install it with: pip install 'stabfw[{entry.extra}]'" if entry.extra else ""
        raise ConfigError(f"domain {name!r} cannot be imported ({err}){hint}") from err
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    _CLASSES[name] = obj
    return obj


def _bool_errors(model: Any, params: dict[str, Any], prefix: str) -> None:
    bad = coerced_bools(model, params, prefix)
    if bad:
        raise ConfigError("invalid configuration:\n" + "\n".join(
            f"  {p}: expected a number, got a boolean (true/false is not 1/0 here)"
            for p in bad[:12]))


def _validated(name: str, params: dict[str, Any]):
    model = params_model(get(name))
    _bool_errors(model, params, "domain")
    try:
        return model.model_validate(params)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, prefix="domain")) from None


def _checked(loop: Any) -> Any:
    """``loop`` after its own up-front checks (:meth:`SelfConsumingLoop.check_params`)."""
    try:
        loop.check_params()
    except ConfigError:
        raise
    except (ValueError, TypeError, OSError) as err:  # a domain that raised the plain kind
        raise ConfigError(f"domain: {type(loop).__name__}.check_params: {err}") from None
    return loop


def _build(name: str, params: dict[str, Any], validated: Any) -> Any:
    # pass what the user gave, validated and coerced, and leave defaults to the class
    return get(name)(**{k: getattr(validated, k) for k in params})


def validate_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate a domain's parameters — the schema, then the domain's own
    :meth:`~stabfw.SelfConsumingLoop.check_params` — and return them with defaults filled in."""
    validated = _validated(name, params)
    _checked(_build(name, params, validated))
    return validated.model_dump()


def validate_loop(loop: Any) -> Any:
    """Check a loop built directly in Python as a config's ``domain:`` section would be:
    its stored constructor arguments against the parameter schema, then
    :meth:`~stabfw.SelfConsumingLoop.check_params`. Returns ``loop``."""
    try:
        model = params_model(type(loop))
    except Exception:  # a signature pydantic cannot model: the domain's own checks only
        return _checked(loop)
    params = loop.get_params(deep=False)
    _bool_errors(model, params, "domain")
    try:
        model.model_validate(params)
    except ValidationError as err:
        # arguments a loop does not store under their own name cannot be checked here
        real = [e for e in err.errors() if e.get("type") != "missing"]
        if real:
            raise ConfigError(format_validation_error(err, prefix="domain")) from None
    return _checked(loop)


def make(name: str, **params: Any):
    """Build the domain registered as ``name`` from validated parameters."""
    return _checked(_build(name, params, _validated(name, params)))
