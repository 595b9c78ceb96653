"""The argument records of the kernels (NamedTuples, which Numba passes as plain structs).

A kernel call names its groups of arguments instead of splicing 26-39 positional values:

* :class:`SpikeInput` — a spike map a synaptic kernel reads (or its k×k pool);
* :class:`Weights` — a layer's weights laid out for the gather kernels;
* :class:`ConvGeom` — the geometry of a conv (a linear layer is the 1×1 case on one position);
* :class:`SrpParams` — the SRP schedule of an IF layer (:mod:`.rules`);
* :class:`GatherScratch`, :class:`FusedScratch` — per-thread work buffers;
* :class:`Residual` — the residual add fused between a conv and its IF layer;
* :class:`IFRecord` — the per-neuron arrays of record mode.
"""
from typing import NamedTuple

import numpy as np


class SpikeInput(NamedTuple):
    """``bits`` F×(H·W)×⌈C/64⌉ spike words; ``width`` the map's width W; ``pool`` k (1: no pool);
    ``scale`` what one spike (or one pooled count) is worth: θ, or θ/k²."""

    bits: np.ndarray
    width: int
    pool: int
    scale: object


class Weights(NamedTuple):
    """``flat``: :func:`.gather.gather_weights` of the kh×kw×Cin×Cout weight; ``bias`` Cout;
    ``has_bias``: whether to add it."""

    flat: np.ndarray
    bias: np.ndarray
    has_bias: bool


class ConvGeom(NamedTuple):
    kh: int
    kw: int
    cin: int
    cout: int
    stride: int
    pad: int
    hin: int
    win: int
    hout: int
    wout: int


class SrpParams(NamedTuple):
    """``tau`` stage-1 steps; ``theta`` threshold; ``half`` v(0) = θ/2; ``thr_keep`` the keep
    threshold (:func:`srp_np.neuron.keep_threshold`); ``rule`` the mask rule's code (:mod:`.rules`)."""

    tau: int
    theta: object
    half: object
    thr_keep: object
    rule: int


class GatherScratch(NamedTuple):
    """Per-thread rows (``numba.config.NUMBA_NUM_THREADS``): list entries (uint32), their counts
    (the dtype), segment starts (int64), each :func:`.gather.list_capacity` long; a pooling
    window (uint64, ≥ :data:`.simd.MAX_POOL_WINDOW`)."""

    offs: np.ndarray
    cnt: np.ndarray
    start: np.ndarray
    win: np.ndarray


class FusedScratch(NamedTuple):
    """Per-thread rows of the fused conv → IF kernel: currents (≥ S·N), membranes (≥ N), keep words."""

    cur: np.ndarray
    v: np.ndarray
    keepw: np.ndarray


class Residual(NamedTuple):
    """``kind`` 0: none; 1: add ``theta`` where the spike map ``bits`` has a spike (identity
    shortcut); 2: add ``dense`` (F×N, e.g. a 1×1 shortcut conv)."""

    kind: int
    theta: object
    bits: np.ndarray
    dense: np.ndarray


class IFRecord(NamedTuple):
    """B×N arrays of record mode: v(τ), the mask, stage-1 and stage-2 spike counts, Σ stage-2 input."""

    v_tau: np.ndarray
    mask: np.ndarray
    spikes_stage1: np.ndarray
    spikes: np.ndarray
    input_sum: np.ndarray
