"""stabfw: does a model retrained on its own outputs stay healthy or collapse?

The public API (see the README): implement :class:`SelfConsumingLoop`, check it with
:func:`check_loop`, run it with :func:`run_loop` under a :class:`RetrainConfig`, and study
it with :class:`FixedPointAnalyzer`, :class:`JacobianAnalyzer`, the bounds of Theorems 1
and 2 and :func:`critical_lambda`. The loop interface and the runner are imported with
the package; the analyzers (scipy.sparse, and torch for the differentiable methods) on
first use.
"""

from importlib import import_module
from typing import Any

from stabfw.core.capabilities import Capabilities, MetricInfo
from stabfw.core.checks import check_loop
from stabfw.core.hooks import register_hook
from stabfw.core.loop import SelfConsumingLoop, VectorizedLoop
from stabfw.errors import ConfigError, LoopCheckError, StabfwError
from stabfw.run.config import RetrainConfig, RunConfig, load_config
from stabfw.run.provenance import VERSION as __version__
from stabfw.run.registry import make, register
from stabfw.run.retraining_map import RetrainingMap
from stabfw.run.runner import run_loop
from stabfw.run.step import GenerationStep, replay
from stabfw.run.trajectory import Trajectory

# name -> module, imported on first access (PEP 562)
_LAZY = {
    "FixedPointAnalyzer": "stabfw.analysis.fixed_point",
    "FixedPointResult": "stabfw.analysis.fixed_point",
    "FixedPointSolution": "stabfw.analysis.solvers",
    "JacobianAnalyzer": "stabfw.analysis.jacobian",
    "JacobianOperator": "stabfw.analysis.jacobian",
    "JacobianResult": "stabfw.analysis.jacobian",
    "Spectrum": "stabfw.analysis.spectra",
    "CriticalLambda": "stabfw.analysis.critical",
    "CriticalValue": "stabfw.analysis.critical",
    "critical_lambda": "stabfw.analysis.critical",
    "critical_value": "stabfw.analysis.critical",
    "estimate_L": "stabfw.analysis.bounds",
    "estimate_alpha": "stabfw.analysis.bounds",
    "estimate_epsilon": "stabfw.analysis.bounds",
    "gaussian_mean_theorem2_constants": "stabfw.analysis.bounds",
    "theorem1_condition": "stabfw.analysis.bounds",
    "theorem1_rate": "stabfw.analysis.bounds",
    "theorem1_report": "stabfw.analysis.bounds",
    "theorem2_bound": "stabfw.analysis.bounds",
    "analyze_run": "stabfw.analysis.pipeline",
    "run_config": "stabfw.experiments.runfile",
    "run_sweep": "stabfw.experiments.sweep",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'stabfw' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "Capabilities",
    "ConfigError",
    "CriticalLambda",
    "CriticalValue",
    "FixedPointAnalyzer",
    "FixedPointResult",
    "FixedPointSolution",
    "GenerationStep",
    "JacobianAnalyzer",
    "JacobianOperator",
    "JacobianResult",
    "LoopCheckError",
    "MetricInfo",
    "RetrainConfig",
    "RetrainingMap",
    "RunConfig",
    "SelfConsumingLoop",
    "Spectrum",
    "StabfwError",
    "Trajectory",
    "VectorizedLoop",
    "__version__",
    "analyze_run",
    "check_loop",
    "critical_lambda",
    "critical_value",
    "estimate_L",
    "estimate_alpha",
    "estimate_epsilon",
    "gaussian_mean_theorem2_constants",
    "load_config",
    "make",
    "register",
    "register_hook",
    "replay",
    "run_config",
    "run_loop",
    "run_sweep",
    "theorem1_condition",
    "theorem1_rate",
    "theorem1_report",
    "theorem2_bound",
]
