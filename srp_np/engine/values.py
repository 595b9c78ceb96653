"""The values that flow between nodes in the event-driven engine: small typed records.

A time-varying value covers F = B·S frames (image b, step t → frame f = b·S + t); maps are
channels-last (flat index ``(y·W + x)·C + c``).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Static(NamedTuple):
    """The same value at every step (a node fed by the analog input only): B × size."""

    data: np.ndarray


class Dense(NamedTuple):
    """Currents or other dense values: F × size."""

    data: np.ndarray


class Spikes(NamedTuple):
    """An IF layer's spikes as bit sets (:mod:`srp_np.kernels.spikes`): ``bits`` F × P × ⌈C/64⌉;
    each spike is worth ``theta``; ``counts`` (F,) spikes per frame; ``shape`` the model's shape."""

    bits: np.ndarray
    theta: object
    counts: np.ndarray
    shape: tuple


class Pooled(NamedTuple):
    """A k×k / stride-k average pool of a spike map, not materialised (the next layer reads ``src``)."""

    src: Spikes
    k: int
    shape: tuple


def arrays_of(value) -> list:
    """The workspace arrays a value holds."""
    if isinstance(value, (Dense, Static)):
        return [value.data] if isinstance(value, Dense) else []
    if isinstance(value, Spikes):
        return [value.bits]
    if isinstance(value, Pooled):
        return [value.src.bits]
    return []


def positions(shape) -> int:
    """Spatial positions of a map (1 for a 1-d layer)."""
    return int(shape[1] * shape[2]) if len(shape) == 3 else 1


def channels(shape) -> int:
    """Channels of a map (every value of a 1-d layer is a channel)."""
    return int(shape[0]) if len(shape) == 3 else int(np.prod(shape))
