"""Running a loop: the config schema, the registry, the mixing policies, THE generation
step and the retraining map built on it, the runner, checkpoints and trajectories."""

from stabfw.run.config import RetrainConfig, RunConfig, load_config, parse_config
from stabfw.run.retraining_map import RetrainingMap
from stabfw.run.runner import run_loop
from stabfw.run.step import GenerationStep, StepResult, replay
from stabfw.run.trajectory import Trajectory

__all__ = [
    "GenerationStep",
    "RetrainConfig",
    "RetrainingMap",
    "RunConfig",
    "StepResult",
    "Trajectory",
    "load_config",
    "parse_config",
    "replay",
    "run_loop",
]
