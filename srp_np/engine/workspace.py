"""Buffers of the engine: reused between layers, chunks and runs (64-byte aligned).

Reusing buffers avoids the page faults of fresh large allocations and bounds memory by the
largest set of values alive at once in a chunk. Arrays handed out are reference-counted by the
values that hold them (a flatten of a spike map shares its bits).
"""
from __future__ import annotations

import math

import numpy as np

from ..kernels import aligned_empty
from .values import arrays_of


class Workspace:
    def __init__(self):
        self.free = []          # byte buffers not in use
        self.scratch = {}       # per-thread kernel scratch buffers, one per role, grown as needed
        self._buf_of = {}       # id(array handed out) -> (its byte buffer, the array)
        self._refs = {}         # id(array handed out) -> number of live values holding it

    def clear(self) -> None:
        """Forget every buffer (they are reallocated on the next use)."""
        self.free.clear()
        self.scratch.clear()
        self.reset()

    def reset(self) -> None:
        """Forget the arrays handed out (their buffers were returned or are dropped with them)."""
        self._buf_of.clear()
        self._refs.clear()

    def alloc(self, shape, dtype) -> np.ndarray:
        """An uninitialised array (best-fitting free buffer, else a new one)."""
        dtype = np.dtype(dtype)
        n = math.prod(shape) * dtype.itemsize
        best = -1
        for i, buf in enumerate(self.free):
            if buf.nbytes >= n and (best < 0 or buf.nbytes < self.free[best].nbytes):
                best = i
        buf = self.free.pop(best) if best >= 0 else aligned_empty(max(n, 64), np.uint8)
        arr = buf[:n].view(dtype).reshape(shape)
        self._buf_of[id(arr)] = (buf, arr)
        self._refs[id(arr)] = 0
        return arr

    def hold(self, value):
        """One more live value holds ``value``'s arrays."""
        for a in arrays_of(value):
            if id(a) in self._refs:
                self._refs[id(a)] += 1
        return value

    def _drop_array(self, a):
        k = id(a)
        if k in self._refs:
            self._refs[k] -= 1
            if self._refs[k] <= 0:
                del self._refs[k]
                self.free.append(self._buf_of.pop(k)[0])

    def drop(self, value) -> None:
        """A live value that held ``value``'s arrays is gone."""
        for a in arrays_of(value):
            self._drop_array(a)

    def temp_done(self, a) -> None:
        """Give back a temporary array that no value holds."""
        if id(a) in self._refs and self._refs[id(a)] == 0:
            self._refs[id(a)] = 1
            self._drop_array(a)

    def scratch_array(self, role: str, shape, dtype) -> np.ndarray:
        """A scratch array for one kernel call (one buffer per role, kept between calls)."""
        n = math.prod(shape) * np.dtype(dtype).itemsize
        buf = self.scratch.get(role)
        if buf is None or buf.nbytes < n:
            for k in [k for k in self.scratch if isinstance(k, tuple)]:
                del self.scratch[k]            # views of the old buffer
            buf = self.scratch[role] = aligned_empty(max(n, 64), np.uint8)
        return buf[:n].view(dtype).reshape(shape)
