"""stabfw: does a model retrained on its own outputs stay healthy or collapse?

The public API (see ``API_SKETCH``): implement :class:`SelfConsumingLoop`, check it
with :func:`check_loop`, run it with :func:`run_loop` under a :class:`RetrainConfig`.
"""

from stabfw.checks import LoopCheckError, check_loop
from stabfw.config import ConfigError, RetrainConfig, RunConfig, load_config
from stabfw.hooks import register_hook
from stabfw.loop import SelfConsumingLoop, VectorizedLoop
from stabfw.registry import make, register
from stabfw.runner import run_loop
from stabfw.trajectory import Trajectory

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "LoopCheckError",
    "RetrainConfig",
    "RunConfig",
    "SelfConsumingLoop",
    "Trajectory",
    "VectorizedLoop",
    "__version__",
    "check_loop",
    "load_config",
    "make",
    "register",
    "register_hook",
    "run_loop",
]
