"""The loop interface and what every layer above builds on.

:class:`SelfConsumingLoop` (and the :class:`VectorizedLoop` mix-in) is what a domain
implements; :class:`Capabilities` is what it can do; :mod:`~stabfw.core.streams` names every
random draw; :mod:`~stabfw.core.hooks` transforms synthetic batches; :func:`check_loop`
tells a domain's author what is wrong.
"""

from stabfw.core.capabilities import Capabilities, MetricInfo
from stabfw.core.checks import CHECKS, check_loop, loop_problems
from stabfw.core.differentiable import DifferentiableLoop, MixedObjective
from stabfw.core.hooks import register_hook, resolve_hook
from stabfw.core.loop import SelfConsumingLoop, VectorizedLoop
from stabfw.core.streams import KeyedGenerator, stream, stream_keys

__all__ = [
    "CHECKS",
    "Capabilities",
    "DifferentiableLoop",
    "KeyedGenerator",
    "MetricInfo",
    "MixedObjective",
    "SelfConsumingLoop",
    "VectorizedLoop",
    "check_loop",
    "loop_problems",
    "register_hook",
    "resolve_hook",
    "stream",
    "stream_keys",
]
