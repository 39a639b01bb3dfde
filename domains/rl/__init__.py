"""RL-policy domain: gymnasium policies behaviour-cloned on expert demonstrations mixed with
their own rollouts (registered as ``rl``).

Importing this package registers the ``top_return`` curate hook. gymnasium and torch are
imported only when a loop is first used.
"""

from stabfw.domains.rl.curation import top_return
from stabfw.domains.rl.data import Transitions
from stabfw.domains.rl.experts import CartPoleLQRExpert, PendulumSwingUpExpert, Task, make_task
from stabfw.domains.rl.loop import BehaviorCloningLoop
from stabfw.domains.rl.policy import PolicySpec, PolicyState
from stabfw.domains.rl.rollouts import Rollouts, make_runner, rollout

__all__ = [
    "BehaviorCloningLoop",
    "CartPoleLQRExpert",
    "PendulumSwingUpExpert",
    "PolicySpec",
    "PolicyState",
    "Rollouts",
    "Task",
    "Transitions",
    "make_runner",
    "make_task",
    "rollout",
    "top_return",
]
