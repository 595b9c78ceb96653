"""Exact counts behind every figure of ``run``, ``sweep``, ``analyze`` and ``report``.

Every figure these commands print is a ratio of integers over the images
evaluated: accuracy after t steps is (correct predictions after t steps) / N,
spikes per image is (Σ spikes) / N, a case fraction is (neurons·images in the
case) / (neurons·images), and so on. The counts below hold the numerators and
denominators as Python integers, so that the counts of disjoint parts of a data
set add up *exactly* to the counts of the whole (no floating-point sums), and a
figure computed from summed counts is bit-for-bit the figure of a single run.
This is what makes sharded runs (:mod:`srp_np.shard`), the result store
(:mod:`srp_np.store`) and the Dask engine (:mod:`srp_np.distributed`) exact.

Plain (unsharded) runs compute their figures through the same functions, so
there is one definition of each figure.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import SrpError


def _ints(d: dict) -> dict:
    return {str(k): int(v) for k, v in d.items()}


def _add_dicts(a: dict, b: dict, what: str) -> dict:
    if list(a) != list(b):
        raise SrpError(f"cannot add counts: the parts have different {what} ({sorted(set(a) ^ set(b))[:3]})")
    return {k: a[k] + b[k] for k in a}


@dataclass
class RunCounts:
    """Integer counts of one simulation setting (τ, T) over a set of images.

    Attributes
    ----------
    tau, T : int
    n_images : int
        N, the images counted.
    correct : list of int, length T
        ``correct[t-1]`` = #{images whose prediction after t stage-2 steps equals the label};
        accuracy after t steps = ``correct[t-1] / N``.
    ann_correct : int or None
        Images the QCFS ANN classifies correctly (None where no ANN pass was made).
    spikes, spikes_stage1 : dict of str to int
        Per IF layer, Σ over images of the spikes of stage 2 (after the mask) and stage 1.
    sops, sops_stage1 : dict of str to int
        Per synaptic node, Σ over images of the synaptic operations of each stage.
    neurons : dict of str to int
        Neurons per IF layer (a constant of the model, not summed).
    """

    tau: int
    T: int
    n_images: int
    correct: list
    ann_correct: int | None = None
    spikes: dict = field(default_factory=dict)
    spikes_stage1: dict = field(default_factory=dict)
    sops: dict = field(default_factory=dict)
    sops_stage1: dict = field(default_factory=dict)
    neurons: dict = field(default_factory=dict)

    @classmethod
    def from_result(cls, res, y=None, ann_logits=None) -> "RunCounts":
        """Counts of a :class:`srp_np.simulator.SimResult` (labels ``y`` for the accuracy counts)."""
        n = int(res.outputs.shape[1])
        if y is None:
            correct = [0] * int(res.T)
        else:
            correct = [int(c) for c in (res.predictions() == np.asarray(y)[None, :]).sum(axis=1)]
        ann = None
        if ann_logits is not None and y is not None:
            ann = int((np.asarray(ann_logits).argmax(1) == np.asarray(y)).sum())
        tot = lambda d: {k: int(np.asarray(v, dtype=np.int64).sum()) for k, v in d.items()}
        return cls(tau=int(res.tau), T=int(res.T), n_images=n, correct=correct, ann_correct=ann,
                   spikes=tot(res.spikes), spikes_stage1=tot(res.spikes_stage1), sops=tot(res.sops),
                   sops_stage1=tot(res.sops_stage1), neurons=_ints(res.neurons))

    def __add__(self, other: "RunCounts") -> "RunCounts":
        if (self.tau, self.T) != (other.tau, other.T):
            raise SrpError(f"cannot add counts of τ={self.tau}, T={self.T} and τ={other.tau}, T={other.T}")
        if self.neurons != other.neurons:
            raise SrpError("cannot add counts of different models (IF layers differ)")
        ann = None if self.ann_correct is None or other.ann_correct is None else self.ann_correct + other.ann_correct
        return RunCounts(tau=self.tau, T=self.T, n_images=self.n_images + other.n_images,
                         correct=[a + b for a, b in zip(self.correct, other.correct)], ann_correct=ann,
                         spikes=_add_dicts(self.spikes, other.spikes, "IF layers"),
                         spikes_stage1=_add_dicts(self.spikes_stage1, other.spikes_stage1, "IF layers"),
                         sops=_add_dicts(self.sops, other.sops, "synaptic nodes"),
                         sops_stage1=_add_dicts(self.sops_stage1, other.sops_stage1, "synaptic nodes"),
                         neurons=dict(self.neurons))

    # ---- figures (each a ratio of the integers above)
    def accuracy(self) -> np.ndarray:
        """Accuracy after t = 1..T: ``correct[t-1] / N``."""
        n = self.n_images
        return np.array([c / n if n else 0.0 for c in self.correct], dtype=np.float64)

    @property
    def ann_accuracy(self) -> float:
        return (self.ann_correct / self.n_images) if (self.n_images and self.ann_correct is not None) else 0.0

    @property
    def spikes_per_image(self) -> float:
        """(Σ_layers Σ_images spikes of both stages) / N."""
        return sum(self.spikes[k] + self.spikes_stage1[k] for k in self.spikes) / self.n_images

    @property
    def sops_per_image(self) -> float:
        """(Σ_nodes Σ_images synaptic operations of both stages) / N."""
        return sum(self.sops[k] + self.sops_stage1[k] for k in self.sops) / self.n_images

    def firing_rates(self) -> dict:
        """Per IF layer: spikes (both stages) / (neurons · (τ + T) · N)."""
        steps = self.tau + self.T
        return {k: (self.spikes[k] + self.spikes_stage1[k]) / (self.neurons[k] * steps * self.n_images)
                for k in self.spikes}

    def spikes_mean(self, name: str, stage1: bool = False) -> float:
        """Mean spikes per image of one IF layer (0 when the layer has none)."""
        d = self.spikes_stage1 if stage1 else self.spikes
        return d[name] / self.n_images if name in d else 0.0

    def sops_mean(self, name: str, stage1: bool = False) -> float:
        d = self.sops_stage1 if stage1 else self.sops
        return d[name] / self.n_images if name in d else 0.0

    # ---- JSON
    def to_json(self) -> dict:
        return {"tau": self.tau, "T": self.T, "n_images": self.n_images, "correct": list(self.correct),
                "ann_correct": self.ann_correct, "spikes": dict(self.spikes),
                "spikes_stage1": dict(self.spikes_stage1), "sops": dict(self.sops),
                "sops_stage1": dict(self.sops_stage1), "neurons": dict(self.neurons)}

    @classmethod
    def from_json(cls, d: dict) -> "RunCounts":
        try:
            return cls(tau=int(d["tau"]), T=int(d["T"]), n_images=int(d["n_images"]),
                       correct=[int(c) for c in d["correct"]],
                       ann_correct=None if d.get("ann_correct") is None else int(d["ann_correct"]),
                       spikes=_ints(d["spikes"]), spikes_stage1=_ints(d["spikes_stage1"]), sops=_ints(d["sops"]),
                       sops_stage1=_ints(d["sops_stage1"]), neurons=_ints(d["neurons"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SrpError(f"malformed run counts ({type(e).__name__}: {e})") from None


def sum_counts(parts):
    """Σ of counts (``RunCounts``, or the dicts of :func:`add_nested`)."""
    parts = list(parts)
    if not parts:
        raise SrpError("no counts to add")
    total = parts[0]
    for p in parts[1:]:
        total = total + p if isinstance(total, RunCounts) else add_nested(total, p)
    return total


def add_nested(a, b, where: str = "counts"):
    """Element-wise sum of two nested structures of dicts / lists of ints with the same keys and lengths."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            raise SrpError(f"cannot add {where}: keys differ ({sorted(set(a) ^ set(b))[:3]})")
        return {k: add_nested(a[k], b[k], f"{where}.{k}") for k in a}
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise SrpError(f"cannot add {where}: lengths {len(a)} and {len(b)} differ")
        return [add_nested(u, v, where) for u, v in zip(a, b)]
    if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool) and not isinstance(b, bool):
        return a + b
    raise SrpError(f"cannot add {where}: not integer counts ({type(a).__name__}, {type(b).__name__})")
