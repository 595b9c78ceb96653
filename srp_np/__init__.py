"""srp-np: event-driven CPU simulation of QCFS ANNs converted to IF spiking networks, with SRP.

The public entry points:

* :func:`load_model`, :func:`save_model` — the ``srp-np/1`` model file;
* :class:`Simulator`, :func:`simulate` — the event-driven SNN simulator with
  the two-stage residual-membrane-potential inference (Algorithm 1 of
  Hao et al., AAAI 2023);
* :func:`ann_forward` — the source QCFS ANN;
* :mod:`srp_np.analytic` — closed forms (Eqs. 4, 7, 8, Theorem 1);
* :mod:`srp_np.reference` — the dense reference simulator (the oracle).

Importing srp_np never imports torch.
"""
from .ann import ann_forward
from .errors import SrpError
from .model import Model, load_model, save_model
from .simulator import SimResult, Simulator, simulate

__version__ = "0.1.0"
__all__ = ["Model", "SimResult", "Simulator", "SrpError", "ann_forward", "load_model", "save_model", "simulate",
           "__version__"]
