"""Event-driven simulation of a converted SNN, with SRP (Algorithm 1): the public façade.

:class:`Simulator` prepares a model's weights for one precision and runs images in chunks
that fit a memory budget; each chunk executes the engine's plan (:mod:`srp_np.engine`:
``plan.py`` decides, ``execute.py`` lowers each step onto :mod:`srp_np.kernels`).

The network is simulated *layer by layer over all time steps*: a node's
values for every frame (image b, step t) of a chunk of images are computed
before the next node runs. This is exact because the network is feed-forward
with no inter-layer delay (a node at step t sees its inputs of step t), and it
lets every kernel run in parallel over frames.

* Nodes that depend only on the analog input (the first conv, ...) are
  computed once per image with dense NumPy operators; the first IF layer
  reads that constant current at every step.
* IF layers run the two SRP stages and emit their spikes as per-position bit
  sets (:mod:`srp_np.kernels.spikes`).
* Conv and linear layers fed by spikes are gather kernels
  (:mod:`srp_np.kernels.gather`): for each output row, a branch-free list of
  the weight rows its spikes select, summed into blocks of output channels
  held in vector registers. An average pool with kernel = stride is not
  materialised: the next layer takes each pooled nonzero as one entry
  weighted by its spike count.
* A conv read only by an IF layer (directly, or through a ResNet block's
  residual add) runs fused with it: each work unit (an image and a block of
  positions) computes its currents for all steps into a per-thread buffer and
  updates its neurons straight away.
* Small kernel calls run on one thread; big buffers come from a workspace
  reused across layers, chunks and runs (64-byte aligned); NumPy's BLAS runs
  on one thread during a simulation (its idle workers would otherwise spin
  on a core the kernels need).

The semantics are exactly those of :func:`srp_np.reference.simulate_dense`
(float64: spike for spike; float32: the same arithmetic in single precision).
The one difference in grouping: a k×k pool (k = stride, k² ≤ 4) of spikes in
front of a conv is folded into it as θ/k²·Σ count·w, where the reference
computes Σ (count·θ/k²)·w; an ulp of difference flips a spike only at an exact
tie v = θ (see ``tests/test_differential.py``).
Results do not depend on the batch size, the chunking or the thread count.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from .engine.execute import Engine, NT as _NT, user_threads
from .engine.fold import fold_batchnorm
from .errors import SrpError
from .kernels import aligned
from .neuron import DEFAULT_MASK_EPS, DEFAULT_MASK_RULE, check_schedule
from .result import SimResult
from .threads import blas_threads

#: Memory budget (bytes) for one frame-major array; chunks of images are sized to fit.
DEFAULT_CHUNK_BYTES = 96 * 2**20

__all__ = ["DEFAULT_CHUNK_BYTES", "SimResult", "Simulator", "check_run_memory", "run_memory_needed", "simulate"]


def _images_per_chunk(chunk_bytes: int, frame_bytes: int) -> int:
    """Images per chunk: as many as fit ``chunk_bytes`` with one image's τ+T frames of the widest
    node (``frame_bytes``), at least one."""
    return max(1, int(chunk_bytes) // frame_bytes)


def run_memory_needed(model, dtype, n: int, tau: int, T: int, record: bool = False,
                      chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Estimated peak bytes of :meth:`Simulator.run` on ``n`` images (Python ints: exact however large).

    Frame-major buffers grow with τ+T (a chunk holds at least one image: τ+T frames of the
    widest node, a few alive at once, plus a per-thread current buffer of the fused
    conv → IF kernels); the outputs with T·n·classes; ``record`` adds per-neuron arrays.
    Needs no :class:`Simulator` (no kernel compilation): callers can refuse a run first."""
    S = max(1, int(tau) + int(T))
    frame = S * max(math.prod(s) for s in model.shapes.values()) * np.dtype(dtype).itemsize   # one image's
    per_chunk = frame * (3 * max(1, min(int(n), _images_per_chunk(chunk_bytes, frame))) + _NT)
    outputs = 2 * 8 * max(0, int(T)) * int(n) * model.num_classes
    rec = 0
    if record:
        rec = 5 * 8 * int(n) * sum(math.prod(model.shapes[q["name"]]) for q in model.qcfs_nodes)
    return per_chunk + outputs + rec


def check_run_memory(model, dtype, n: int, tau: int, T: int, record: bool = False,
                     chunk_bytes: int = DEFAULT_CHUNK_BYTES, extra: int = 0) -> None:
    """Refuse (:class:`SrpError`) a simulation of ``n`` images that cannot fit in the memory
    available (:func:`run_memory_needed` plus ``extra`` bytes), before anything is allocated."""
    from .limits import check_memory

    check_memory(run_memory_needed(model, dtype, n, tau, T, record, chunk_bytes) + int(extra),
                 f"simulating τ+T = {int(tau)}+{int(T)} steps on {int(n)} image(s)",
                 "use a smaller τ+T (`tau`, `T`) or fewer images at once")


class Simulator:
    """Event-driven SNN simulator for one model and precision.

    Parameters
    ----------
    model : Model
        A loaded ``srp-np/1`` model.
    dtype : {numpy.float32, numpy.float64}
        Arithmetic precision; float64 is the exact oracle mode.
    chunk_bytes : int
        Memory budget for one frame-major buffer; bounds peak memory
        independently of the number of images.
    warm_cache : bool
        When the kernels for ``dtype`` have not been compiled on this machine yet
        (:func:`srp_np.warmup.cache_is_warm`), compile them all first
        (:func:`srp_np.warmup.warmup`), so that later processes start without compiling.

    Examples
    --------
    >>> sim = Simulator(load_model("weights/resnet20_fmnist.npz"))   # doctest: +SKIP
    >>> res = sim.run(model.preprocess(images), tau=4, T=8)         # doctest: +SKIP
    >>> res.accuracy(labels)                                         # doctest: +SKIP
    """

    def __init__(self, model, dtype=np.float32, chunk_bytes: int = DEFAULT_CHUNK_BYTES, warm_cache: bool = True):
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise SrpError(f"dtype must be float32 or float64, got {dt}")
        self.model = model
        self.dtype = dt.type
        if warm_cache:
            from .warmup import cache_is_warm, warmup
            if not cache_is_warm(dt):
                # first use on this machine: compile every kernel for this precision once (tiny
                # graphs), so the disk cache is complete and later runs start without compiling
                warmup(dt)
        self.chunk_bytes = int(chunk_bytes)
        # batch norms folded into the layer before them where that is exact (srp_np.engine.fold)
        self.engine = Engine.prepare(fold_batchnorm(model), self.dtype)
        self.max_width = max(int(np.prod(s)) for s in model.shapes.values())
        self._lock = threading.Lock()   # the workspace is per simulator: concurrent runs are serialised

    @property
    def static(self) -> set:
        """Nodes computed once per image from the analog input (``input`` included)."""
        return set(self.model.static)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.engine.wflat = {k: aligned(v) for k, v in self.engine.wflat.items()}
        self.engine._wrec = {}
        self.engine.workspace.clear()
        self._lock = threading.Lock()

    def release_workspace(self) -> None:
        """Free the buffers kept between runs (they are reallocated on the next run)."""
        with self._lock:
            self.engine.workspace.clear()

    def memory_needed(self, n: int, tau: int, T: int, record: bool = False) -> int:
        """Estimated peak bytes of :meth:`run` on ``n`` images (see :func:`run_memory_needed`)."""
        return run_memory_needed(self.model, self.dtype, n, tau, T, record, self.chunk_bytes)

    def check_memory(self, n: int, tau: int, T: int, record: bool = False) -> None:
        """Refuse a run that cannot fit in the memory available, before allocating anything."""
        check_run_memory(self.model, self.dtype, n, tau, T, record, self.chunk_bytes)

    def images_per_chunk(self, S: int) -> int:
        return _images_per_chunk(self.chunk_bytes, S * self.max_width * np.dtype(self.dtype).itemsize)

    def run(self, x, tau: int, T: int, mask_eps: float = DEFAULT_MASK_EPS, record: bool = False,
            progress=None, mask_rule: str = DEFAULT_MASK_RULE) -> SimResult:
        """Simulate Algorithm 1 on normalised images ``x`` (N×C×H×W).

        Parameters
        ----------
        x : ndarray
            Inputs already normalised with :meth:`Model.preprocess`.
        tau : int
            Stage-1 steps used to read the residual membrane; 0 is plain conversion.
        T : int
            Stage-2 steps (reported).
        mask_eps : float
            With ``mask_rule="authors"``, SRP keeps a neuron iff ``v(τ) > mask_eps·θ``.
        record : bool
            Keep per-neuron arrays (see :class:`SimResult`).
        progress : callable, optional
            Called with the number of images finished after each chunk.
        mask_rule : {"authors", "paper"}
            ``authors`` (default): keep iff v(τ) > ε·θ (their code); ``paper``: keep iff
            v(τ) ≥ 0 (Algorithm 1 as printed; ε unused). See :func:`srp_np.neuron.srp_keep_mask`.
        """
        tau, T = check_schedule(tau, T, mask_eps, mask_rule)
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.model.input_shape):
            raise SrpError(f"input shape {list(x.shape[1:])} does not match the model's "
                           f"input_shape {list(self.model.input_shape)}")
        n = x.shape[0]
        self.check_memory(n, tau, T, record)
        step = self.images_per_chunk(tau + T)
        parts = []
        for s in range(0, n, step):
            # NumPy's BLAS on one thread: after a multi-threaded BLAS call (the dense first layer)
            # OpenBLAS's workers keep spinning and take a core from the kernels that follow
            with self._lock, blas_threads(1), user_threads():
                parts.append(self.engine.run_chunk(x[s:s + step], tau, T, mask_eps, mask_rule, record))
            if progress is not None:
                progress(min(step, n - s))
        if not parts:
            raise SrpError("no images to simulate")
        return parts[0] if len(parts) == 1 else SimResult.concatenate(parts)



def simulate(model, x, tau: int, T: int, dtype=np.float32, mask_eps: float = DEFAULT_MASK_EPS,
             record: bool = False, progress=None, mask_rule: str = DEFAULT_MASK_RULE) -> SimResult:
    """Convenience wrapper: ``Simulator(model, dtype).run(x, tau, T, ...)``."""
    return Simulator(model, dtype).run(x, tau, T, mask_eps=mask_eps, record=record, progress=progress,
                                       mask_rule=mask_rule)
