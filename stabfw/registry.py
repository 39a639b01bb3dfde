"""Domain registry: names mapped to lazy ``"module:Class"`` strings (gymnasium style).

Built-in domains are listed here; other packages add theirs through the entry-point
group ``stabfw.domains`` (``name = "package.module:Class"``) or at run time with
:func:`register`. Nothing is imported until a domain is used, so ``import stabfw`` stays
light and a domain whose extra is not installed still shows up in ``stabfw list``.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from stabfw.config import ConfigError, format_validation_error

__all__ = ["DomainEntry", "get", "list_domains", "make", "register", "validate_params"]

ENTRY_POINT_GROUP = "stabfw.domains"


@dataclass(frozen=True)
class DomainEntry:
    """A registered domain: its name, where it lives and the extra that installs it."""

    name: str
    target: str
    extra: str | None = None
    summary: str = ""


_BUILTINS = [
    DomainEntry("gaussian", "domains.gaussian:GaussianLoop", None,
                "Gaussian fitted by maximum likelihood (the reference domain)"),
    DomainEntry("toy2d", "domains.toy2d:Toy2DFlowLoop", "toy2d",
                "normalizing flow on 2-D toy densities (two moons, 8 Gaussians, ...)"),
    DomainEntry("rl", "domains.rl:BehaviorCloningLoop", "rl",
                "gymnasium policy behaviour-cloned on expert + own rollouts"),
    DomainEntry("forecasting", "domains.forecasting:ForecastingLoop", "forecasting",
                "sktime forecaster refitted on histories holding its own forecasts"),
    DomainEntry("anomaly", "domains.anomaly:AnomalyLoop", "anomaly",
                "anomaly detector retrained on the data it let through"),
    DomainEntry("diffusion", "domains.diffusion:DiffusionLoop", "diffusion",
                "diffusers UNet retrained on real + its own samples"),
]
_REGISTRY: dict[str, DomainEntry] = {e.name: e for e in _BUILTINS}
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


def params_model(cls: type):
    """A pydantic model of ``cls``'s constructor arguments (``extra="forbid"``).

    A domain may define its own as the class attribute ``Params``; otherwise one is
    derived from the annotated ``__init__`` signature.
    """
    own = getattr(cls, "Params", None)
    if own is not None:
        return own
    fields: dict[str, Any] = {}
    for pname, p in inspect.signature(cls.__init__).parameters.items():
        if pname == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation if p.annotation is not inspect.Parameter.empty else Any
        if isinstance(ann, str):  # from __future__ import annotations
            hints = _resolved_hints(cls)
            ann = hints.get(pname, Any)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[pname] = (ann, default)
    return create_model(f"{cls.__name__}Params", __config__=ConfigDict(
        extra="forbid", arbitrary_types_allowed=True), **fields)


def _resolved_hints(cls: type) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls.__init__, include_extras=True)
    except Exception:
        return {}


def _validated(name: str, params: dict[str, Any]):
    try:
        return params_model(get(name)).model_validate(params)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, prefix="domain")) from None


def validate_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate a domain's parameters; return them with defaults filled in."""
    return _validated(name, params).model_dump()


def make(name: str, **params: Any):
    """Build the domain registered as ``name`` from validated parameters."""
    validated = _validated(name, params)
    # pass what the user gave, validated and coerced, and leave defaults to the class
    return get(name)(**{k: getattr(validated, k) for k in params})
