"""Evaluate a converted SNN on a labelled data set: accuracy per step and costs.

This is the layer between the simulator (model) and the data (the CLI's
``--data``): it normalises images, runs the QCFS ANN and the SNN in batches,
and summarises accuracy after every stage-2 step t = 1..T together with
spikes, synaptic operations, firing rates and throughput.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .ann import ann_forward
from .neuron import DEFAULT_MASK_EPS
from .simulator import SimResult, Simulator


@dataclass
class Evaluation:
    """Figures of one ``srp-np run``.

    Attributes
    ----------
    tau, T : int
    ann_accuracy : float
        Accuracy of the source QCFS ANN on the same images.
    accuracy : ndarray (T,)
        SNN accuracy after t = 1..T stage-2 steps (latency τ + t).
    result : SimResult
        The simulation (outputs, per-layer spike and synaptic-operation counts).
    ann_logits : ndarray N×K
    y : ndarray N
    seconds : float
        Wall time of the SNN simulation alone.
    """

    tau: int
    T: int
    ann_accuracy: float
    accuracy: np.ndarray
    result: SimResult
    ann_logits: np.ndarray
    y: np.ndarray
    seconds: float
    dtype: str = "float32"
    mask_eps: float = DEFAULT_MASK_EPS
    extra: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return int(self.y.shape[0])

    @property
    def latency(self) -> list:
        return [self.tau + t for t in range(1, self.T + 1)]

    @property
    def images_per_second(self) -> float:
        return self.n_images / self.seconds if self.seconds > 0 else float("inf")

    @property
    def spikes_per_image(self) -> float:
        """Spikes per image over both stages (every spike costs energy)."""
        r = self.result
        return float(sum(r.spikes[k].sum() + r.spikes_stage1[k].sum() for k in r.spikes) / self.n_images)

    @property
    def sops_per_image(self) -> float:
        """Synaptic operations per image over both stages."""
        r = self.result
        return float(sum(r.sops[k].sum() + r.sops_stage1[k].sum() for k in r.sops) / self.n_images)

    def firing_rates(self) -> dict:
        """Spikes per neuron per step (both stages, τ + T steps) for each IF layer."""
        r, steps = self.result, self.tau + self.T
        return {k: float((r.spikes[k].sum() + r.spikes_stage1[k].sum()) / (r.neurons[k] * steps * self.n_images))
                for k in r.spikes}

    def to_dict(self) -> dict:
        """JSON-serialisable summary (the ``--json`` file of ``srp-np run``)."""
        return {
            "tau": self.tau, "T": self.T, "n_images": self.n_images, "dtype": self.dtype, "mask_eps": self.mask_eps,
            "ann_accuracy": self.ann_accuracy,
            "accuracy": [float(a) for a in self.accuracy],
            "latency": self.latency,
            "spikes_per_image": self.spikes_per_image,
            "sops_per_image": self.sops_per_image,
            "firing_rate": self.firing_rates(),
            "images_per_second": self.images_per_second,
            "seconds": self.seconds,
            **self.extra,
        }


def prepare_inputs(model, x_raw) -> np.ndarray:
    """Raw images (uint8 or float in [0, 1]) → normalised float32 model inputs."""
    from .datasets import fit_to_shape, to_float

    return model.preprocess(fit_to_shape(to_float(np.asarray(x_raw)), model.input_shape))


def ann_logits(model, x, batch_size: int = 256) -> np.ndarray:
    """QCFS ANN logits for normalised inputs, in batches (float32 arithmetic)."""
    outs = [ann_forward(model, x[s:s + batch_size], dtype=np.float32) for s in range(0, len(x), batch_size)]
    return np.concatenate(outs).astype(np.float64)


def evaluate(model, x_raw, y, tau: int, T: int, dtype=np.float32, mask_eps: float = DEFAULT_MASK_EPS,
             batch_size: int = 64, progress=None, simulator: Simulator | None = None) -> Evaluation:
    """Run the ANN and the SNN (SRP with ``tau`` stage-1 steps, ``T`` stage-2 steps) on a data set.

    Parameters
    ----------
    model : Model
    x_raw : ndarray
        N×C×H×W raw images (uint8, or float in [0, 1]); padded to the model's input size if smaller.
    y : ndarray
        N integer labels.
    batch_size : int
        Images per simulator call; the result does not depend on it.
    progress : callable, optional
        Called with the number of images finished.
    """
    x = prepare_inputs(model, x_raw)
    y = np.asarray(y)
    sim = simulator or Simulator(model, dtype)
    logits = ann_logits(model, x)
    parts = []
    t0 = time.perf_counter()
    for s in range(0, len(x), batch_size):
        parts.append(sim.run(x[s:s + batch_size], tau, T, mask_eps=mask_eps))
        if progress is not None:
            progress(len(parts[-1].outputs[0]))
    seconds = time.perf_counter() - t0
    res = SimResult.concatenate(parts)
    return Evaluation(tau=int(tau), T=int(T), ann_accuracy=float((logits.argmax(1) == y).mean()),
                      accuracy=res.accuracy(y), result=res, ann_logits=logits, y=y, seconds=seconds,
                      dtype=np.dtype(sim.dtype).name, mask_eps=float(mask_eps))
