"""stabfw: does a model retrained on its own outputs stay healthy or collapse?

The public API (see ``API_SKETCH``): implement :class:`SelfConsumingLoop`, check it
with :func:`check_loop`, run it with :func:`run_loop` under a :class:`RetrainConfig`.
"""

from stabfw.bounds import (
    estimate_alpha,
    estimate_epsilon,
    estimate_L,
    theorem1_condition,
    theorem1_rate,
    theorem2_bound,
)
from stabfw.checks import LoopCheckError, check_loop
from stabfw.config import ConfigError, RetrainConfig, RunConfig, load_config
from stabfw.critical import critical_lambda
from stabfw.fixed_point import FixedPointAnalyzer, RetrainingMap
from stabfw.hooks import register_hook
from stabfw.loop import SelfConsumingLoop, VectorizedLoop
from stabfw.registry import make, register
from stabfw.runner import run_loop
from stabfw.trajectory import Trajectory

__version__ = "0.1.0"


def __getattr__(name: str):
    # JacobianAnalyzer pulls in scipy.sparse.linalg: imported on first use only
    if name == "JacobianAnalyzer":
        from stabfw.jacobian import JacobianAnalyzer

        return JacobianAnalyzer
    raise AttributeError(f"module 'stabfw' has no attribute {name!r}")


__all__ = [
    "ConfigError",
    "FixedPointAnalyzer",
    "JacobianAnalyzer",
    "LoopCheckError",
    "RetrainConfig",
    "RetrainingMap",
    "RunConfig",
    "SelfConsumingLoop",
    "Trajectory",
    "VectorizedLoop",
    "__version__",
    "check_loop",
    "critical_lambda",
    "estimate_L",
    "estimate_alpha",
    "estimate_epsilon",
    "load_config",
    "make",
    "register",
    "register_hook",
    "run_loop",
    "theorem1_condition",
    "theorem1_rate",
    "theorem2_bound",
]
