"""Where and how the UNet runs: device, bf16, channels_last, fused AdamW, torch.compile.

A :class:`Runtime` is resolved once from the domain's options (``"auto"`` picks the fast
GPU settings on CUDA and plain fp32 eager on CPU). A :class:`Workspace` holds the
device-side modules — one fp32 module for training, one (bf16 on GPU) for sampling — and
their compiled callables, built on first use and reused by every fit and every sampling
call of the process, so ``torch.compile`` compiles once. :func:`shared_workspace` keeps
one per architecture, image shape, objective and runtime for the whole process, so the
generations of a run and the cells of a sweep in one worker share the compiled code.
Weights travel in and out as
CPU state dicts; nothing compiled ever enters a (pickled) state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stabfw.domains.diffusion.models import cast_module

__all__ = ["COMPILE_MODES", "Runtime", "Workspace", "clear_workspaces", "resolve_runtime",
           "shared_workspace"]

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune",
                 "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class Runtime:
    """Resolved execution settings.

    Attributes
    ----------
    device : str
        ``"cpu"`` or ``"cuda"`` (or ``"cuda:N"``).
    bf16 : bool
        bf16 autocast for training, bf16 weights for sampling.
    channels_last : bool
        NHWC memory format for the UNet and its inputs.
    compile_mode : str or None
        ``torch.compile`` mode (``None``: eager). ``reduce-overhead`` adds CUDA graphs.
    fused_adam : bool
        ``torch.optim.AdamW(fused=True)``.
    """

    device: str = "cpu"
    bf16: bool = False
    channels_last: bool = False
    compile_mode: str | None = None
    fused_adam: bool = False

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]

    @property
    def cuda_graphs(self) -> bool:
        return self.compile_mode in ("reduce-overhead", "max-autotune")

    def generator(self, seed: int):
        """A torch generator on this device seeded with ``seed``."""
        import torch

        return torch.Generator(device=self.device).manual_seed(int(seed))


def resolve_runtime(device: str = "auto", precision: str = "auto",
                    channels_last: bool | None = None, compile: str = "auto",
                    fused_adam: bool | None = None) -> Runtime:
    """Resolve ``"auto"``/``None`` options against the machine.

    ``auto`` means: on CUDA, bf16 + channels_last + fused AdamW + ``torch.compile``
    (mode ``default``); on CPU, fp32 eager (every option can still be forced on CPU,
    which is how the tests exercise the GPU code paths).
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("domain.device='cuda' but torch sees no CUDA device "
                         f"(torch {torch.__version__}); use device: cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"domain.device: {device!r}; accepted: auto, cpu, cuda, cuda:N")
    gpu = device.startswith("cuda")
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"domain.precision: {precision!r}; accepted: auto, fp32, bf16")
    bf16 = gpu if precision == "auto" else precision == "bf16"
    if compile == "auto":
        mode = "default" if gpu else None
    elif compile == "off":
        mode = None
    elif compile in COMPILE_MODES:
        mode = compile
    else:
        raise ValueError(f"domain.compile: {compile!r}; accepted: auto, {', '.join(COMPILE_MODES)}")
    if mode in ("reduce-overhead", "max-autotune") and not gpu:
        mode = "default"  # CUDA graphs need CUDA; keep the compiled code path on CPU
    return Runtime(device=device, bf16=bf16,
                   channels_last=gpu if channels_last is None else bool(channels_last),
                   compile_mode=mode,
                   fused_adam=gpu if fused_adam is None else bool(fused_adam))


class Workspace:
    """Device modules and compiled callables shared by every fit and sample of a loop.

    Parameters
    ----------
    build : callable
        ``build() -> UNet2DModel`` on CPU (fp32).
    objective : DDPMObjective or EDMObjective
    runtime : Runtime
    """

    def __init__(self, build: Callable[[], Any], objective: Any, runtime: Runtime):
        self.build = build
        self.objective = objective
        self.runtime = runtime
        self._train_model = None
        self._train_loss = None
        self._sample_model = None
        self._sample_net = None
        self.eager_train_loss = None  # the uncompiled functions (for torch._dynamo.explain)
        self.eager_sample_forward = None
        if runtime.device_type == "cuda":
            import torch

            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels

    # --- training ---------------------------------------------------------------------
    def train_model(self, weights: dict[str, Any]):
        """The fp32 training module on the device, holding ``weights`` (copied in)."""
        import torch

        rt = self.runtime
        if self._train_model is None:
            model = self.build().to(rt.device)
            if rt.channels_last:
                model = model.to(memory_format=torch.channels_last)
            self._train_model = model
        self._train_model.load_state_dict(weights)
        self._train_model.train()
        return self._train_model

    def train_loss(self) -> Callable[..., Any]:
        """``loss(x_uint8, flip, eps, aux) -> scalar`` on the training module (compiled once).

        The uint8 → [-1, 1] conversion and the flips are inside, so a compiled step fuses
        them with the noising.
        """
        if self._train_loss is None:
            import torch

            rt, objective, model = self.runtime, self.objective, self._train_model
            if model is None:
                raise RuntimeError("call train_model(weights) before train_loss()")

            def net(x, t):
                return model(x, t).sample

            def loss(xu8, flip, eps, aux):
                x0 = xu8.float() / 127.5 - 1.0
                x0 = torch.where(flip.view(-1, 1, 1, 1), x0.flip(-1), x0)
                if rt.channels_last:
                    x0 = x0.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type=rt.device_type, dtype=torch.bfloat16,
                                    enabled=rt.bf16):
                    return objective.loss(net, x0, eps, aux)

            self.eager_train_loss = loss
            self._train_loss = (torch.compile(loss, mode=rt.compile_mode, dynamic=False)
                                if rt.compile_mode else loss)
        return self._train_loss

    # --- sampling ---------------------------------------------------------------------
    def sample_net(self, weights: dict[str, Any]) -> Callable[..., Any]:
        """``net(x, t) -> tensor`` for sampling: bf16 weights on GPU, eval mode, compiled."""
        import torch

        rt = self.runtime
        if self._sample_model is None:
            model = cast_module(self.build(), rt.device,
                                torch.bfloat16 if rt.bf16 else None)
            if rt.channels_last:
                model = model.to(memory_format=torch.channels_last)
            model.eval().requires_grad_(False)
            self._sample_model = model
            dtype = torch.bfloat16 if rt.bf16 else None

            def forward(x, t):
                y = x if dtype is None else x.to(dtype)
                if rt.channels_last:
                    y = y.contiguous(memory_format=torch.channels_last)
                return model(y, t).sample.float()

            self.eager_sample_forward = forward
            fwd = (torch.compile(forward, mode=rt.compile_mode, dynamic=False)
                   if rt.compile_mode else forward)
            if rt.cuda_graphs:
                def net(x, t):
                    # a CUDA-graph replay overwrites its output buffer: mark the step, copy out
                    torch.compiler.cudagraph_mark_step_begin()
                    return fwd(x, t).clone().to(x.dtype)
            else:
                def net(x, t):
                    return fwd(x, t).to(x.dtype)
            self._sample_net = net
        self._sample_model.load_state_dict(weights)
        return self._sample_net


_SHARED: dict[Any, Workspace] = {}


def shared_workspace(key: Any, build: Callable[[], Any], objective: Any,
                     runtime: Runtime) -> Workspace:
    """The process's :class:`Workspace` for ``key``, built on first request.

    Parameters
    ----------
    key : hashable
        Everything the device modules depend on besides their weights: the architecture,
        the image shape, the objective and the runtime. Equal keys get the same object,
        hence the same compiled callables (one compilation per process).
    build, objective, runtime :
        As for :class:`Workspace`; used only when ``key`` is new.
    """
    ws = _SHARED.get(key)
    if ws is None:
        ws = _SHARED[key] = Workspace(build, objective, runtime)
    return ws


def clear_workspaces() -> None:
    """Forget the process's workspaces (their device memory is freed with them)."""
    _SHARED.clear()
