"""The ops of the ``srp-np/1`` graph: one module per op, one registry.

Each op is a frozen dataclass (a *typed node*) that declares, in one place:

* its attributes, their kinds and defaults (:func:`.base.attr`), parsed and checked once
  when a model is built (:func:`parse_node`);
* ``infer_shape``: the per-image output shape from the input shapes and arrays;
* ``dense``: its NumPy semantics on a batch (the ANN, the dense reference simulator and
  the static part of the event-driven simulator all use it);
* ``ann_ops``: its ANN cost per image, ``(MACs, adds)``;
* ``lower``: how the event-driven engine runs it (:mod:`srp_np.engine`); the core ops
  defer to the engine's kernels, a simple op can lower itself through the engine's
  context (``batchnorm2d`` does).

Adding an op is one module here (plus, if it needs one, a kernel): see ``batchnorm2d.py``.
"""
from .base import REGISTRY, Node, parse_node, register
from . import conv2d, linear, avgpool2d, flatten, add, qcfs, batchnorm2d  # noqa: F401  (registers the ops)

#: Op names in the order they are documented.
OPS = tuple(REGISTRY)

__all__ = ["OPS", "REGISTRY", "Node", "parse_node", "register"]
