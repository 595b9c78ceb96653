"""QCFS activation (quantization-clip-floor-shift), Eq. 7 of the SRP paper.

    QCFS(y) = lambda * clip(floor(L * y / lambda + 1/2) / L, 0, 1)

``lambda`` (``up``) is one trainable scalar per activation layer.  The forward
pass follows the authors' code (``QCFS`` in hzc1208/ANN2SNN_SRP, ``MyFloor`` in
putshua/SNN_conversion_QCFS) operation by operation::

    x = x / up;  x = floor(x * L + 0.5) / L  (straight-through gradient);
    x = clamp(x, 0, 1);  x = x * up

so the gradient with respect to ``up`` is the one of their implementation.  The
initial value of ``up`` is 8.0 as in ANN2SNN_SRP's ``QCFS(up=8., t=32)``
(``MyFloor`` of the QCFS repository defaults to 4.0); it is only the starting
point, lambda is trained.  ``srp-np train`` additionally keeps lambda >= 0.01
after each step (see ``srp_np.train.train.LAMBDA_MIN``).  The parameter is named ``up`` and has
shape ``[1]`` exactly as in the authors' code so their state_dicts load.
"""
from __future__ import annotations

import torch
from torch import nn

DEFAULT_LAMBDA = 8.0


class _FloorSTE(torch.autograd.Function):
    """floor() in the forward pass, identity gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x):  # noqa: D401
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output


floor_ste = _FloorSTE.apply


class QCFS(nn.Module):
    """Quantization-clip-floor-shift activation with trainable threshold ``up``."""

    def __init__(self, L: int = 4, up: float = DEFAULT_LAMBDA):
        super().__init__()
        if int(L) < 1:
            raise ValueError(f"L must be >= 1, got {L}")
        self.L = int(L)
        self.up = nn.Parameter(torch.tensor([float(up)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            # mixed precision: the quantisation is computed in float32 (a half-precision
            # x/up·L + 1/2 would put many values on the wrong side of a floor)
            x = x.float()
        up = self.up.to(x.dtype)
        x = x / up
        x = floor_ste(x * self.L + 0.5) / self.L
        x = torch.clamp(x, 0, 1)
        return x * up

    @property
    def threshold(self) -> float:
        return float(self.up.detach().reshape(-1)[0])

    def extra_repr(self) -> str:
        return f"L={self.L}, up={self.threshold:.4f}"
