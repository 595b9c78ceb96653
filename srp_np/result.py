"""The result of a simulation (:class:`SimResult`)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SimResult:
    """Result of :meth:`Simulator.run` for N images.

    Attributes
    ----------
    outputs : ndarray, T×N×K
        ``outputs[t-1]`` is the mean output-node value over the first t
        stage-2 steps; the prediction after t steps is its argmax.
    tau, T : int
    spikes, spikes_stage1 : dict of str to ndarray (N,)
        Per IF layer and image, spikes emitted in stage 2 (after the SRP mask)
        and in stage 1.
    sops, sops_stage1 : dict of str to ndarray (N,)
        Per synaptic node (conv2d, linear, avgpool2d, add) and image,
        synaptic operations: each nonzero time-varying input times its exact fan-out.
    neurons : dict of str to int
        Neurons per IF layer.
    record : dict of str to dict, or None
        With ``record=True``, per IF layer arrays N×shape (C-order like the
        model): ``v_tau``, ``mask``, ``spikes``, ``spikes_stage1``, ``input_sum``.
    seconds : float
        Wall time of the simulation.
    """

    outputs: np.ndarray
    tau: int
    T: int
    spikes: dict = field(default_factory=dict)
    spikes_stage1: dict = field(default_factory=dict)
    sops: dict = field(default_factory=dict)
    sops_stage1: dict = field(default_factory=dict)
    neurons: dict = field(default_factory=dict)
    record: dict | None = None
    seconds: float = 0.0

    def predictions(self) -> np.ndarray:
        """T×N predicted labels after t = 1..T stage-2 steps."""
        return np.argmax(self.outputs, axis=-1)

    def accuracy(self, y) -> np.ndarray:
        """Accuracy after t = 1..T stage-2 steps (array of length T)."""
        return (self.predictions() == np.asarray(y)[None, :]).mean(axis=1)

    @staticmethod
    def concatenate(parts: list) -> "SimResult":
        """Join results of consecutive chunks of images."""
        first = parts[0]
        cat = lambda key: {k: np.concatenate([getattr(p, key)[k] for p in parts]) for k in getattr(first, key)}
        rec = None
        if first.record is not None:
            rec = {k: {a: (None if first.record[k][a] is None else np.concatenate([p.record[k][a] for p in parts]))
                       for a in first.record[k]}
                   for k in first.record}
        return SimResult(outputs=np.concatenate([p.outputs for p in parts], axis=1), tau=first.tau, T=first.T,
                         spikes=cat("spikes"), spikes_stage1=cat("spikes_stage1"), sops=cat("sops"),
                         sops_stage1=cat("sops_stage1"), neurons=dict(first.neurons), record=rec,
                         seconds=sum(p.seconds for p in parts))
