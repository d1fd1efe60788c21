"""Spectral responses h(λ): how much of each Laplacian eigen-direction the head keeps.

Every response is a module with one interface, whatever the solver:

    forward(eigenvalues (B, M), lambda_max (B,)) -> h (B, M), h >= 0

so the solver choice (eigenpairs or a Chebyshev polynomial evaluated at nodes on
[0, λmax]) stays separate from the response (the pygsp habit). ``lambda_max`` is the
spectrum's upper bound (2 for the normalised Laplacians), which maps λ to x = λ / λmax
in [0, 1].

``needs_eigenpairs`` marks responses defined by the eigenvectors' rank rather than by
λ (``truncate``): they cannot be applied through a Chebyshev polynomial.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cheeger.ops.chebyshev import chebyshev_response


class SpectralResponse(nn.Module):
    """Base class: a non-negative function of the eigenvalue."""

    needs_eigenpairs: bool = False

    def forward(self, eigenvalues: Tensor, lambda_max: Tensor) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def _relative(eigenvalues: Tensor, lambda_max: Tensor) -> Tensor:
        """λ / λmax clamped to [0, 1] (solvers return tiny negative rounding values)."""
        if eigenvalues.dim() != 2 or lambda_max.shape != eigenvalues.shape[:1]:
            raise ValueError(
                f"eigenvalues must be (B, M) and lambda_max (B,), found "
                f"{tuple(eigenvalues.shape)} and {tuple(lambda_max.shape)}"
            )
        return (eigenvalues / lambda_max.unsqueeze(-1)).clamp(0.0, 1.0)


class TruncateResponse(SpectralResponse):
    """h = 1 on the first ``keep`` eigenpairs (all returned ones when None), 0 after.

    The classic spectral-clustering embedding. Defined by rank, so it needs eigenpairs.
    """

    needs_eigenpairs = True

    def __init__(self, keep: int | None = None) -> None:
        super().__init__()
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(f"response.keep must be null or an int >= 1, found {keep!r}")
        self.keep = keep

    def forward(self, eigenvalues: Tensor, lambda_max: Tensor) -> Tensor:
        relative = self._relative(eigenvalues, lambda_max)
        keep = relative.shape[-1] if self.keep is None else min(self.keep, relative.shape[-1])
        mask = torch.zeros_like(relative)
        mask[..., :keep] = 1.0
        return mask


class TemperResponse(SpectralResponse):
    """h(λ) = (1 - λ / λmax)^temper, the diffusion-map weighting of the lazy random walk.

    temper = 0 is truncation (h = 1 on every computed pair); larger values damp high
    frequencies; the exponent is fixed (the value sweeps scan).
    """

    def __init__(self, temper: float = 1.0) -> None:
        super().__init__()
        if not (isinstance(temper, (int, float)) and math.isfinite(temper) and temper >= 0):
            raise ValueError(f"response.temper must be a finite number >= 0, found {temper!r}")
        self.temper = float(temper)

    def forward(self, eigenvalues: Tensor, lambda_max: Tensor) -> Tensor:
        return (1.0 - self._relative(eigenvalues, lambda_max)).pow(self.temper)


class HeatResponse(SpectralResponse):
    """h(λ) = exp(-t λ), the heat kernel at time t (in eigenvalue units).

    ``learn=True`` makes t a parameter (stored as log t, so it stays positive; t must
    then be > 0): the segmentation loss picks how far the diffusion reaches.
    """

    def __init__(self, t: float = 5.0, learn: bool = False) -> None:
        super().__init__()
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t >= 0):
            raise ValueError(f"response.t must be a finite number >= 0, found {t!r}")
        if learn and t <= 0:
            raise ValueError(f"response.t must be > 0 with response.learn=true, found {t!r}")
        self.learn = bool(learn)
        if self.learn:
            self.log_t = nn.Parameter(torch.tensor(math.log(t)))
        else:
            self.register_buffer("fixed_t", torch.tensor(float(t)))

    @property
    def t(self) -> Tensor:
        return self.log_t.exp() if self.learn else self.fixed_t

    def forward(self, eigenvalues: Tensor, lambda_max: Tensor) -> Tensor:
        relative = self._relative(eigenvalues, lambda_max)
        t = self.t.to(relative.dtype)
        return torch.exp(-t * relative * lambda_max.unsqueeze(-1))


class LearnedResponse(SpectralResponse):
    """h_θ(λ) = softplus(mlp(x) + Σ_j θ_j T_j(2 x - 1)), x = λ / λmax: positive, learned.

    A small MLP (one hidden tanh layer) captures sharp shapes, the Chebyshev series
    (``order`` coefficients) smooth ones; both start at 0 and the bias makes h = 1
    everywhere at initialisation (the truncation baseline). Trained by the
    segmentation loss through whichever solver applies it.
    """

    def __init__(self, hidden: int = 16, order: int = 8) -> None:
        super().__init__()
        if hidden < 1 or order < 1:
            raise ValueError(
                f"response.hidden and response.order must be >= 1, found {hidden} and {order}"
            )
        self.hidden_layer = nn.Linear(1, hidden)
        self.output_layer = nn.Linear(hidden, 1)
        nn.init.zeros_(self.output_layer.weight)
        # softplus(log(e - 1)) = 1: start from h = 1.
        nn.init.constant_(self.output_layer.bias, math.log(math.e - 1.0))
        self.theta = nn.Parameter(torch.zeros(order))

    def forward(self, eigenvalues: Tensor, lambda_max: Tensor) -> Tensor:
        relative = self._relative(eigenvalues, lambda_max)
        dtype = self.theta.dtype
        hidden = torch.tanh(self.hidden_layer(relative.unsqueeze(-1).to(dtype)))
        mlp = self.output_layer(hidden).squeeze(-1).to(relative.dtype)
        series = chebyshev_response(self.theta.to(relative.dtype), relative, 1.0)
        return F.softplus(mlp + series)
