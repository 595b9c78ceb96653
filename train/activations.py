"""Source activations other than QCFS, for SRP on other conversion methods (the paper's Fig. 7).

Every activation converts to an IF neuron with threshold θ = ``up`` (v(0) = θ/2, as srp-np
simulates every IF layer), and is exported as a ``qcfs`` node with that threshold; the file's
``L`` is then only what srp-np's own ANN pass and Theorem 1 use (see :data:`SOURCE_L`).

* ``qcfs`` -- :class:`~srp_np.train.qcfs.QCFS`, Eq. 7 (the paper's source).
* ``tcl``  -- :class:`TCL`, trainable clipping (Ho and Chang, DAC 2021):
  ``a = min(max(y, 0), λ)`` with λ trained by SGD (weight decay on λ is the L2 penalty that
  pulls the clip down); converted with θ = λ.
* ``relu`` -- :class:`ReLUSource`, an OPI-style source (Bu et al., AAAI 2022: plain ReLU ANN,
  v(0) = θ/2): ``a = max(y, 0)``; θ is set after training by :func:`calibrate_thresholds` to a
  high percentile of the layer's positive activations on training images (robust normalisation,
  Rueckauer et al. 2017), not trained.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .qcfs import QCFS

ACTIVATIONS = ("qcfs", "tcl", "relu")
#: Initial clip λ of TCL (trained from there).
TCL_INIT = 4.0
#: ``L`` written into a tcl/relu model file: QCFS with this L equals clip(y, 0, θ) to within θ/(2·SOURCE_L),
#: so srp-np's ANN pass approximates the clipped source; it does not change the SNN.
SOURCE_L = 256
#: Percentile of a ReLU layer's positive activations used as its threshold.
RELU_PERCENTILE = 99.9


class TCL(QCFS):
    """Trainable clipping layer: ``a = min(ReLU(y), λ)``, λ = ``up`` trained.

    Written ``λ − ReLU(λ − ReLU(y))`` so that ∂a/∂λ = 1 where the clip is active (y > λ),
    0 elsewhere, and ∂a/∂y = 1 on 0 < y < λ.
    """

    def __init__(self, L: int = SOURCE_L, up: float = TCL_INIT):
        super().__init__(L, up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up.to(x.dtype)
        return up - F.relu(up - F.relu(x))


class ReLUSource(QCFS):
    """Plain ReLU; ``up`` (the IF threshold after conversion) is calibrated, not trained."""

    def __init__(self, L: int = SOURCE_L, up: float = 1.0):
        super().__init__(L, up)
        self.up.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x)


def make_activation(kind: str):
    """A constructor ``act(L)`` of the activation module ``kind`` (one of :data:`ACTIVATIONS`)."""
    kind = (kind or "qcfs").lower()
    if kind == "qcfs":
        return QCFS
    if kind == "tcl":
        return TCL
    if kind == "relu":
        return ReLUSource
    raise ValueError(f"unknown activation {kind!r}; choose from {', '.join(ACTIVATIONS)}")


@torch.no_grad()
def calibrate_thresholds(model, x, percentile: float = RELU_PERCENTILE, batch_size: int = 256) -> list:
    """Set every :class:`ReLUSource`'s ``up`` to the ``percentile`` of its positive outputs on ``x``.

    ``x`` is already normalised (N×C×H×W tensor); the model runs in eval mode. A layer that never
    fires on ``x`` keeps ``up`` = 1. Returns the thresholds in module order.
    """
    mods = [m for m in model.modules() if isinstance(m, ReLUSource)]
    acts = {id(m): [] for m in mods}
    hooks = [m.register_forward_hook(lambda mod, inp, out: acts[id(mod)].append(out[out > 0].flatten().numpy()))
             for m in mods]
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    out = []
    for m in mods:
        v = np.concatenate(acts[id(m)]) if acts[id(m)] else np.zeros(0)
        th = float(np.percentile(v, percentile)) if v.size else 1.0
        m.up.fill_(max(th, 1e-6))
        out.append(float(m.up))
    return out
