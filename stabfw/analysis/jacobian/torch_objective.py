"""The torch machinery of the differentiable Jacobian methods (``dense`` and ``implicit``):
the mixed objective of one generation with its derivatives, conjugate gradients, the
Jacobi diagonal and the Newton polish of the fitted point.

References
----------
Pearlmutter, "Fast exact multiplication by the Hessian", Neural Computation 6(1), 1994.
Hestenes & Stiefel, "Methods of conjugate gradients", J. Res. NBS 49, 1952. Saad,
*Iterative Methods for Sparse Linear Systems*, 2nd ed., SIAM 2003, §9.2. Bekas,
Kokiopoulou & Saad, "An estimator for the diagonal of a matrix", Appl. Numer. Math. 57,
2007.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stabfw.core.differentiable import MixedObjective

__all__ = ["TorchObjective", "conjugate_gradients", "jacobi_diagonal", "newton_polish"]


class TorchObjective:
    """The mixed objective of one generation and its derivatives, as torch closures.

    Parameters
    ----------
    loop : a differentiable loop
    G : RetrainingMap
    x : numpy.ndarray
        The generating θ.
    n_synthetic : int, optional
        Noise draws for the synthetic part (default: the map's ⌊λn⌋).
    """

    def __init__(self, loop: Any, G: Any, x: np.ndarray, n_synthetic: int | None):
        import torch

        self.torch = torch
        w_real, w_syn = G.weights
        m = G.n_synthetic if n_synthetic is None else int(n_synthetic)
        if m < 1 and w_syn > 0:
            raise ValueError("n_synthetic must be ≥ 1")
        noise = loop.draw_noise(m, G.streams("generate")) if w_syn > 0 else None
        real = None if G.config.fully_synthetic else G.real
        self.H = MixedObjective(loop, real, noise, w_real, w_syn)
        self.n_synthetic = m if w_syn > 0 else 0
        self.x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        self.gradf = torch.func.grad(self.H.__call__, argnums=0)
        self.n_hvp = self.n_cvp = self.n_ctvp = 0

    def t(self, v: Any):
        """``v`` as a float64 tensor."""
        return self.torch.as_tensor(np.asarray(v, dtype=np.float64))

    def value(self, th) -> float:
        with self.torch.no_grad():
            return float(self.H(th, self.x))

    def grad(self, th):
        return self.gradf(th, self.x)

    def hvp(self, th, v):
        """A v at (th, x) by forward-over-reverse (used while polishing th)."""
        self.n_hvp += 1
        return self.torch.func.jvp(lambda a: self.gradf(a, self.x), (th,), (v,))[1]

    def linearize(self, th) -> None:
        """Record ∇_θ' H at (th, x) once, with its graph, for fast A v, C v and Cᵀ u.

        Each product is then one or two backward passes through the stored graph
        (Pearlmutter's double-backward trick) instead of a fresh trace of the model.
        """
        torch = self.torch
        self._th = th.detach().clone().requires_grad_(True)
        self._xs = self.x.detach().clone().requires_grad_(True)
        value = self.H(self._th, self._xs)
        (self._g,) = torch.autograd.grad(value, self._th, create_graph=True)
        self._u0 = torch.zeros_like(self._g, requires_grad=True)
        (self._w,) = torch.autograd.grad(self._g, self._xs, self._u0, create_graph=True,
                                          allow_unused=True)
        if self._w is None:
            raise ValueError("the mixed objective does not depend on the generating θ "
                             "(no synthetic data?): C = 0")

    def hvp_lin(self, v):
        """A v at the linearised point."""
        self.n_hvp += 1
        return self.torch.autograd.grad(self._g, self._th, v, retain_graph=True)[0]

    def cvp_lin(self, v):
        """C v at the linearised point."""
        self.n_cvp += 1
        return self.torch.autograd.grad(self._w, self._u0, v, retain_graph=True)[0]

    def ctvp_lin(self, u):
        """Cᵀ u at the linearised point."""
        self.n_ctvp += 1
        return self.torch.autograd.grad(self._g, self._xs, u, retain_graph=True)[0]

    def hessian(self, th, chunk: int):
        """A at (th, x), densely."""
        return self.torch.func.jacrev(lambda a: self.gradf(a, self.x), chunk_size=chunk)(th)

    def counts(self) -> dict[str, int]:
        """Products applied so far."""
        return {"n_hvp": self.n_hvp, "n_cvp": self.n_cvp, "n_ctvp": self.n_ctvp}


def conjugate_gradients(apply_A, b, tol: float, maxiter: int, precond=None):
    """Preconditioned conjugate gradients on torch vectors; returns (x, iters, neg_curv).

    References
    ----------
    Hestenes & Stiefel, J. Res. NBS 49, 1952; Saad, *Iterative Methods for Sparse Linear
    Systems*, 2nd ed., SIAM 2003, §9.2 (preconditioned CG).
    """
    import torch

    x = torch.zeros_like(b)
    r = b.clone()
    bn = float(torch.linalg.vector_norm(b))
    if bn == 0:
        return x, 0, False
    z = r / precond if precond is not None else r
    p = z.clone()
    rz = float(r @ z)
    neg = False
    for it in range(1, maxiter + 1):
        Ap = apply_A(p)
        pAp = float(p @ Ap)
        if pAp <= 0:
            neg = True
            if it == 1:
                return b / max(float(torch.linalg.vector_norm(b)), 1e-300), it, neg
            break
        a = rz / pAp
        x = x + a * p
        r = r - a * Ap
        if float(torch.linalg.vector_norm(r)) <= tol * bn:
            return x, it, neg
        z = r / precond if precond is not None else r
        rz_new = float(r @ z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, maxiter, neg


def jacobi_diagonal(T: TorchObjective, d: int, seed: int, n_probes: int = 64):
    """diag(A): exact from d products up to d = 256, a Hutchinson estimate above.

    References
    ----------
    Bekas, Kokiopoulou & Saad, "An estimator for the diagonal of a matrix", Appl. Numer.
    Math. 57, 2007.
    """
    torch = T.torch
    if d <= 256:
        eye = torch.eye(d, dtype=torch.float64)
        diag = torch.stack([T.hvp_lin(eye[i])[i] for i in range(d)])
    else:
        gen = torch.Generator().manual_seed(seed)
        acc = torch.zeros(d, dtype=torch.float64)
        for _ in range(n_probes):
            z = torch.randint(0, 2, (d,), generator=gen, dtype=torch.float64) * 2 - 1
            acc += z * T.hvp_lin(z)
        diag = acc / n_probes
    floor = max(float(diag.abs().mean()) * 1e-3, 1e-12)
    return diag.detach().abs().clamp_min(floor)


def newton_polish(T: TorchObjective, theta0: np.ndarray, tol: float, max_iter: int,
                  solve) -> tuple:
    """Newton steps with a backtracking line search until max|∇H| ≤ tol.

    Returns ``(θ, max|∇H|, iterations)``.
    """
    th = T.t(theta0)
    g = T.grad(th)
    it = 0
    for it in range(1, max_iter + 1):
        if float(g.abs().max()) <= tol:
            it -= 1
            break
        step = -solve(th, g)
        f0, slope = T.value(th), float(g @ step)
        if slope >= 0:  # not a descent direction (negative curvature): gradient step
            step, slope = -g, -float(g @ g)
        s = 1.0
        # below ~1e-12 the predicted decrease is lost in rounding of H: take the full step
        if abs(slope) > 1e-12 * max(1.0, abs(f0)):
            while s > 1e-10 and T.value(th + s * step) > f0 + 1e-4 * s * slope:
                s *= 0.5
        th = th + s * step
        g = T.grad(th)
    return th, float(g.abs().max()), it
