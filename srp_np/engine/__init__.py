"""The event-driven engine: a plan per model and batch geometry, executed on the kernels.

* :mod:`.values` — the typed values that flow between nodes (spike maps as bit sets, their
  pools, dense currents, static values);
* :mod:`.plan` — :func:`~.plan.make_plan`, a pure function: static nodes, value kinds,
  fusion (conv → IF, conv → add → IF), buffer lifetimes;
* :mod:`.execute` — :class:`~.execute.Engine`, which lowers each step of a plan onto the
  Numba kernels of :mod:`srp_np.kernels` (or, for an op that lowers itself, onto its
  :meth:`~srp_np.opset.Node.lower`);
* :mod:`.workspace` — reusable aligned buffers with reference counts;
* :mod:`.fold` — graph rewrites that are exact (batch norm folded into the layer before it).

:class:`srp_np.Simulator` is the public entry point.
"""
