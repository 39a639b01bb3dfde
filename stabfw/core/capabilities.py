"""What a loop can do, declared in one record — and what its metrics measure.

Every analyzer and the runner ask :meth:`SelfConsumingLoop.capabilities` — never
``hasattr`` or ``isinstance`` — whether a loop can take θ back (finite differences, the
retraining map), is differentiable (dense and implicit Jacobians), advances all seeds at
once, scores samples (``top_fraction`` curation) or mixes its training set itself. The
default record is read off the methods a domain implements; a domain whose abilities
depend on its parameters (a functional signature cannot be turned back into a state)
overrides ``capabilities()`` and returns ``dataclasses.replace(super().capabilities(),
...)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

__all__ = ["DIFFERENTIABLE_METHODS", "Capabilities", "MetricInfo"]

#: The methods of the differentiable protocol (see :mod:`stabfw.core.differentiable`).
DIFFERENTIABLE_METHODS = ("loss", "sample", "draw_noise")


@dataclass(frozen=True)
class Capabilities:
    """What a loop can do.

    Attributes
    ----------
    with_theta : bool
        ``with_theta(state, θ)`` (alias ``with_params``) puts a θ back into a state: the
        retraining map, fixed-point solves and finite-difference Jacobians need it.
    differentiable : bool
        ``loss``, ``sample`` and ``draw_noise`` (the ``dense`` and ``implicit`` Jacobians).
    vectorized : bool
        The loop is a :class:`~stabfw.VectorizedLoop` (all seeds in one array operation).
    score : bool
        ``score(batch, state)`` ranks samples (the ``top_fraction`` hook uses it).
    custom_mix : bool
        ``mix(...)`` builds the training set instead of the config's mixing policy.
    figures : bool
        ``report_figures(runs)`` (or the older ``figures(trajectory, out_dir)``) gives domain
        figures for the report.
    """

    with_theta: bool = False
    differentiable: bool = False
    vectorized: bool = False
    score: bool = False
    custom_mix: bool = False
    figures: bool = False

    def to_dict(self) -> dict[str, bool]:
        """The record as a plain dict."""
        return asdict(self)



@dataclass(frozen=True)
class MetricInfo:
    """What one domain metric measures (declared by :meth:`SelfConsumingLoop.metric_info`).

    Attributes
    ----------
    kind : {"diversity", "quality", "error", "other"}
        ``diversity``: a spread of the model's samples (covariance trace, recall, action
        entropy, prediction-interval width) — heading to zero is *collapse*. ``quality``: a
        score of the samples or the model (ROC-AUC, return). ``error``: a distance to the
        truth (MSE, FID, MASE).
    better : {"higher", "lower", None}
        Which direction is an improvement (``None``: neither).
    description : str
        One line for reports, with the unit.
    """

    kind: Literal["diversity", "quality", "error", "other"] = "other"
    better: Literal["higher", "lower"] | None = None
    description: str = ""

    def to_dict(self) -> dict[str, str | None]:
        """The record as a plain dict."""
        return asdict(self)
