"""Event-driven simulation of a converted SNN, with SRP (Algorithm 1).

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
import time
from dataclasses import dataclass, field

import numba
import numpy as np

from .errors import SrpError
from .kernels import aligned, aligned_empty
from .kernels.events import dense_to_events
from .kernels.gather import DEFAULT_KBLOCK, gather_bits, gather_if_bits, gather_weights, list_capacity
from .kernels.simd import MAX_POOL_WINDOW
from .kernels.spikes import bits_to_dense, if_bits, if_bits_fast, pool_bits_dense, pooled_counts
from .kernels.synapses import avgpool_events, conv2d_events, linear_events
from .neuron import (DEFAULT_MASK_EPS, DEFAULT_MASK_RULE, check_mask_eps, check_mask_rule, initial_membrane,
                     keep_threshold)
from .ops import _int, apply_linear_node

#: Memory budget (bytes) for one frame-major array; chunks of images are sized to fit.
DEFAULT_CHUNK_BYTES = 96 * 2**20

#: Bytes of weights the gather kernels keep in cache per segment group (see ``gather_bits``).
KBLOCK = DEFAULT_KBLOCK

#: Rows of the per-thread workspaces (``numba.get_thread_id()`` is below this).
_NT = numba.config.NUMBA_NUM_THREADS

_NO_BITS = np.zeros((1, 1, 1), np.uint64)   # placeholders for the unused residual of gather_if_bits

#: Kernel calls with less estimated work (synaptic ops or neuron updates) run on one thread.
PARALLEL_MIN_WORK = 1_000_000


def _serial_blas():
    """Context in which NumPy's BLAS (OpenBLAS) uses one thread.

    After a multi-threaded BLAS call (the dense first layer) OpenBLAS's worker
    threads keep spinning for a while and take a core from the Numba kernels
    that follow (measured: the first VGG-16 conv 47 ms instead of 26 ms).
    The dense work of a simulation is small, so it runs on one thread."""
    from .threads import blas_threads
    return blas_threads(1)


_THREADS = threading.local()     # .user: the caller's Numba thread count during a run


def _pick(kernel, work: float):
    """``kernel``, to be run on all threads for big calls and on one thread for small
    ones (waking the other threads costs more than it saves, above all on a loaded
    machine). Results do not depend on the thread count. Inside :meth:`Simulator.run`
    the thread count is switched only when it changes (the caller's is restored at
    the end); outside, a small call gets a wrapper that restores it."""
    user = getattr(_THREADS, "user", None)
    if user is not None:
        want = user if work >= PARALLEL_MIN_WORK else 1
        if _THREADS.current != want:
            numba.set_num_threads(want)
            _THREADS.current = want
        return kernel
    if work >= PARALLEL_MIN_WORK or numba.get_num_threads() == 1:
        return kernel

    def one_thread(*args):
        n = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return kernel(*args)
        finally:
            numba.set_num_threads(n)
    return one_thread


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


def _hwc_perm(shape) -> np.ndarray:
    """perm[channels-last flat index] = C-order flat index, for a C×H×W map."""
    C, H, W = shape
    return np.arange(C * H * W).reshape(C, H, W).transpose(1, 2, 0).reshape(-1).astype(np.int32)


def _to_internal(arr: np.ndarray) -> np.ndarray:
    """N×C×H×W → N×(H·W·C) channels-last; N×D stays."""
    if arr.ndim == 4:
        return np.ascontiguousarray(arr.transpose(0, 2, 3, 1)).reshape(arr.shape[0], -1)
    return np.ascontiguousarray(arr)


def _to_model_layout(arr: np.ndarray, shape) -> np.ndarray:
    """N×(H·W·C) channels-last → N×C×H×W (inverse of :func:`_to_internal`)."""
    if len(shape) == 3:
        C, H, W = shape
        return np.ascontiguousarray(arr.reshape(arr.shape[0], H, W, C).transpose(0, 3, 1, 2))
    return arr.reshape((arr.shape[0],) + tuple(shape))


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
                 "use a smaller τ+T (--tau, --T) or fewer images at once")


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
        When Numba's disk cache lacks any kernel for ``dtype``, compile them
        all first (:func:`srp_np.kernels.warmup`), so that later processes
        start without compiling.

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
            from .kernels import cache_is_warm, warmup
            if not cache_is_warm(dt):
                # first use on this machine: compile every kernel for this precision once (tiny
                # graphs), so the disk cache is complete and later runs start without compiling
                warmup(dt)
        self.chunk_bytes = int(chunk_bytes)
        self.static = self._static_nodes()
        self._prep = {}
        self._wflat = {}
        for node in model.nodes:
            if node["name"] in self.static:
                continue
            op = node["op"]
            if op == "conv2d":
                w = model.weight(node)
                b = model.weight(node, "bias")
                self._prep[node["name"]] = (
                    np.ascontiguousarray(w.transpose(2, 3, 1, 0)).astype(self.dtype),
                    (np.zeros(w.shape[0]) if b is None else b).astype(self.dtype), b is not None)
                self._wflat[node["name"]] = gather_weights(self._prep[node["name"]][0])
            elif op == "linear":
                w = model.weight(node)
                b = model.weight(node, "bias")
                self._prep[node["name"]] = (
                    np.ascontiguousarray(w.T).astype(self.dtype),
                    (np.zeros(w.shape[0]) if b is None else b).astype(self.dtype), b is not None)
                self._wflat[node["name"]] = gather_weights(self._prep[node["name"]][0])
            elif op == "flatten":
                self._prep[node["name"]] = _hwc_perm(model.shapes[node["inputs"][0]])
        self.max_width = max(int(np.prod(s)) for s in model.shapes.values())
        self._lock = threading.Lock()   # the workspace is per simulator: concurrent runs are serialised
        self._free = []          # workspace: byte buffers reused between layers, chunks and runs
        self._scratch = {}       # per-thread kernel scratch buffers, one per role, grown as needed
        self._buf_of = {}        # id(array handed out) -> its byte buffer
        self._refs = {}          # id(array handed out) -> number of live values holding it
        self._consumers = {}
        by_name = model.node_by_name     # built once: set-up stays linear in the number of nodes
        for node in model.nodes:
            for s in node["inputs"]:
                self._consumers[s] = self._consumers.get(s, 0) + 1
        # convs read only by one IF layer: candidates for the fused conv → IF kernel
        self._fuse_if = {}
        for node in model.nodes:
            src = node["inputs"][0] if node["op"] == "qcfs" else None
            if src is not None and src not in self.static and src != model.output \
                    and self._consumers.get(src) == 1 and by_name[src]["op"] == "conv2d":
                self._fuse_if[src] = node
        # conv → add → IF (a ResNet block's second conv or its 1×1 shortcut conv, whichever comes
        # later): conv → (add node, IF node, name of the add's other input)
        self._fuse_res = {}
        order = {"input": -1, **{node["name"]: i for i, node in enumerate(model.nodes)}}
        for node in model.nodes:
            src = node["inputs"][0] if node["op"] == "qcfs" else None
            add = by_name.get(src)
            if add is None or add["op"] != "add" or len(add["inputs"]) != 2 or src in self.static \
                    or src == model.output or self._consumers.get(src) != 1:
                continue
            a, o = add["inputs"]
            if order[a] < order[o]:      # fuse the later input, so the other one is ready by then
                a, o = o, a
            for conv, other in ((a, o), (o, a)):
                if conv != other and conv not in self.static and self._consumers.get(conv) == 1 \
                        and by_name[conv]["op"] == "conv2d" and conv != model.output:
                    self._fuse_res[conv] = (add, node, other)
                    break

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(_lock=None, _free=[], _buf_of={}, _refs={}, _scratch={})
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._wflat = {k: aligned(v) for k, v in self._wflat.items()}
        self._lock = threading.Lock()

    def release_workspace(self) -> None:
        """Free the buffers kept between runs (they are reallocated on the next run)."""
        with self._lock:
            self._free.clear()
            self._scratch.clear()

    def _static_nodes(self) -> set:
        static = {"input"}
        for node in self.model.nodes:
            if node["op"] != "qcfs" and all(s in static for s in node["inputs"]):
                static.add(node["name"])
        return static

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
        tau, T = int(tau), int(T)
        if tau < 0:
            raise SrpError(f"tau must be >= 0, got {tau}")
        if T < 1:
            raise SrpError(f"T must be >= 1, got {T}")
        check_mask_eps(mask_eps)
        check_mask_rule(mask_rule)
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.model.input_shape):
            raise SrpError(f"input shape {list(x.shape[1:])} does not match the model's "
                           f"input_shape {list(self.model.input_shape)}")
        n = x.shape[0]
        self.check_memory(n, tau, T, record)
        step = self.images_per_chunk(tau + T)
        parts = []
        for s in range(0, n, step):
            with self._lock, _serial_blas():
                _THREADS.user = _THREADS.current = numba.get_num_threads()
                try:
                    parts.append(self._run_chunk(x[s:s + step], tau, T, mask_eps, mask_rule, record))
                finally:
                    numba.set_num_threads(_THREADS.user)
                    _THREADS.user = None
            if progress is not None:
                progress(min(step, n - s))
        if not parts:
            raise SrpError("no images to simulate")
        return parts[0] if len(parts) == 1 else SimResult.concatenate(parts)

    # ------------------------------------------------------------------ workspace
    def _alloc(self, shape, dtype) -> np.ndarray:
        """An uninitialised array from the workspace (best-fitting free buffer, else a new one).

        Reusing buffers avoids the page faults of fresh large allocations, and
        bounds memory by the largest set of values alive at once in a chunk."""
        dtype = np.dtype(dtype)
        n = math.prod(shape) * dtype.itemsize
        best = -1
        for i, buf in enumerate(self._free):
            if buf.nbytes >= n and (best < 0 or buf.nbytes < self._free[best].nbytes):
                best = i
        buf = self._free.pop(best) if best >= 0 else aligned_empty(max(n, 64), np.uint8)
        arr = buf[:n].view(dtype).reshape(shape)
        self._buf_of[id(arr)] = (buf, arr)
        self._refs[id(arr)] = 0
        return arr

    @staticmethod
    def _arrays_of(value) -> list:
        kind = value[0]
        if kind in ("dense", "bits"):
            return [value[1]]
        if kind == "pooled":
            return Simulator._arrays_of(value[1])
        return []

    def _hold(self, value):
        for a in self._arrays_of(value):
            if id(a) in self._refs:
                self._refs[id(a)] += 1
        return value

    def _drop_array(self, a):
        k = id(a)
        if k in self._refs:
            self._refs[k] -= 1
            if self._refs[k] <= 0:
                del self._refs[k]
                self._free.append(self._buf_of.pop(k)[0])

    def _drop(self, value):
        for a in self._arrays_of(value):
            self._drop_array(a)

    def _temp_done(self, a):
        """Return a temporary from :meth:`_to_dense` that no value holds."""
        if id(a) in self._refs and self._refs[id(a)] == 0:
            self._refs[id(a)] = 1
            self._drop_array(a)

    def _to_dense(self, value, F: int, S: int, size: int) -> np.ndarray:
        """Any value as a dense F×size channels-last array (may be shared: do not mutate)."""
        kind = value[0]
        if kind == "dense":
            return value[1]
        if kind == "static":
            return np.repeat(value[1], S, axis=0)
        if kind == "bits":
            _, bits, theta, _cnt, shape = value
            out = self._alloc((F, size), self.dtype)
            _pick(bits_to_dense, out.size)(bits, _channels(shape), theta, out, False)
            return out
        if kind == "pooled":
            _, src, k, shape = value
            _, bits, theta, _cnt, sshape = src
            C, Ho, Wo = shape
            out = self._alloc((F, size), self.dtype)
            _pick(pool_bits_dense, out.size)(bits, sshape[2], C, k, Ho, Wo, theta, out)
            return out
        raise AssertionError(kind)

    def _scratch_array(self, role: str, shape, dtype) -> np.ndarray:
        """A scratch array for one kernel call (one buffer per role, kept between calls)."""
        n = math.prod(shape) * np.dtype(dtype).itemsize
        buf = self._scratch.get(role)
        if buf is None or buf.nbytes < n:
            for k in [k for k in self._scratch if isinstance(k, tuple)]:
                del self._scratch[k]            # views of the old buffer
            buf = self._scratch[role] = aligned_empty(max(n, 64), np.uint8)
        return buf[:n].view(dtype).reshape(shape)

    def _gather_workspace(self, kh, kw, cin) -> list:
        """Per-thread buffers of :func:`gather_bits` (lists, counts, segment starts, pooling window)."""
        cap = list_capacity(kh, kw, cin)
        key = ("gather", cap)
        if key not in self._scratch:
            self._scratch[key] = [self._scratch_array("offs", (_NT, cap), np.uint32),
                                  self._scratch_array("cnt", (_NT, cap), self.dtype),
                                  self._scratch_array("start", (_NT, cap), np.int64),
                                  self._scratch_array("win", (_NT, MAX_POOL_WINDOW), np.uint64)]
        return list(self._scratch[key])

    def _gather(self, bits, Ws, k, scale, name, geom, F, size, work, tally) -> np.ndarray:
        """Currents (F × size) of a conv / linear node fed by spikes; records its synaptic ops."""
        _, b, has_b = self._prep[name]
        kh, kw, cin = geom[:3]
        # units: about 4 per thread, frame groups first, then slices of the output channels
        target = 4 * numba.get_num_threads()
        fgroup = max(1, F // target)
        ncolu = max(1, target // -(-F // fgroup))
        out = self._alloc((F, size), self.dtype)
        sops = np.empty(F, np.int64)
        ws = self._gather_workspace(kh, kw, cin)
        _pick(gather_bits, work)(bits, Ws, k, scale, self._wflat[name], b, has_b, *geom, fgroup, ncolu, KBLOCK, out,
                                 sops, *ws)
        tally("sops", name, sops)
        return out

    def _run_chunk(self, x, tau, T, mask_eps, mask_rule, record) -> SimResult:
        t0 = time.perf_counter()
        model, dt = self.model, self.dtype
        B, S = x.shape[0], tau + T
        F = B * S
        static_vals = {"input": x.astype(dt)}
        values = {"input": ("static", aligned(_to_internal(static_vals["input"])))}   # read by e.g. a residual add
        res = SimResult(outputs=np.zeros((T, B, model.num_classes)), tau=tau, T=T,
                        record={} if record else None)
        dummy_f = np.zeros((1, 1), dt)
        nthreads = numba.get_num_threads()
        rule = check_mask_rule(mask_rule)

        def srp_args(th):
            """(θ, v(0), keep threshold, rule code) of an IF layer of threshold θ."""
            return th, initial_membrane(th, dt), keep_threshold(th, mask_eps, mask_rule, dt), rule

        pending = []        # (attribute of res, node, per-frame counts), summed per image at the end

        def tally(kind, name, frame_counts):
            pending.append((kind, name, frame_counts))

        self._buf_of.clear()
        self._refs.clear()
        remaining = dict(self._consumers)

        def settle(node):
            """Hold the node's value; give back the buffers of inputs nothing reads any more."""
            if node["name"] in values:
                self._hold(values[node["name"]])
            for s in node["inputs"]:
                remaining[s] -= 1
                if remaining[s] == 0 and s != model.output and s in values:
                    self._drop(values.pop(s))

        fused = set()
        prev = None
        for node in model.nodes:
            if prev is not None:
                settle(prev)
            prev = node
            name, op = node["name"], node["op"]
            shape = model.shapes[name]
            size = math.prod(shape)
            if name in self.static:
                static_vals[name] = apply_linear_node(model, node, [static_vals[s] for s in node["inputs"]])
                values[name] = ("static", aligned(_to_internal(static_vals[name])))
                continue
            if name in fused:          # computed with its conv (gather_if_bits)
                continue
            ins = [values[s] for s in node["inputs"]]
            if op == "qcfs":
                th = dt(node["threshold"])
                src = ins[0]
                static = src[0] == "static"
                cur = src[1] if static else self._to_dense(src, F, S, size)
                P = _positions(shape)
                C = size // P
                NW = (C + 63) // 64
                bits = self._alloc((F, P, NW), np.uint64)
                counts = self._alloc((F, P), np.int32)
                pblock = max(1, min(P, -(-P * B // (8 * nthreads))))
                if record:
                    rec = dict(v_tau=np.zeros((B, size), dt), mask=np.ones((B, size), np.bool_),
                               spikes_stage1=np.zeros((B, size), np.int32), spikes=np.zeros((B, size), np.int32),
                               input_sum=np.zeros((B, size), np.float64))
                    _pick(if_bits, 2 * F * size)(cur, static, B, S, tau, *srp_args(th), P, C, pblock, True,
                                                 bits, counts, rec["v_tau"], rec["mask"],
                                                 rec["spikes_stage1"], rec["spikes"], rec["input_sum"])
                    if tau == 0:
                        rec["v_tau"] = None
                    res.record[name] = {k: (None if v is None else _to_model_layout(v, shape))
                                        for k, v in rec.items()}
                else:
                    _pick(if_bits_fast, 2 * F * size)(cur, static, B, S, tau, *srp_args(th), P, C, pblock, bits,
                                                      counts)
                cnt = counts.sum(axis=1, dtype=np.int64)
                self._temp_done(counts)
                if not static:
                    self._temp_done(cur)
                values[name] = ("bits", bits, th, cnt, shape)
                tally("spikes", name, cnt)
                res.neurons[name] = size
                continue
            src = ins[0]
            spikes = _spike_source(src, dt)
            if op == "conv2d" and spikes is not None and len(model.shapes[node["inputs"][0]]) == 3:
                w, b, has_b = self._prep[name]
                in_shape = model.shapes[node["inputs"][0]]
                st, pd = _int(node.get("stride", 1)), _int(node.get("padding", 0))
                bits, Ws, k, scale, frame_spikes = spikes
                kh, kw, cin, cout = w.shape
                work = float(frame_spikes.sum()) * kh * kw * cout
                geom = (kh, kw, cin, cout, st, pd, in_shape[1], in_shape[2], shape[1], shape[2])
                q = self._fuse_if.get(name)
                res_kind, res_args, add = 0, (dt(0), _NO_BITS, dummy_f), None
                if name in self._fuse_res and q is None:
                    add, q, other = self._fuse_res[name]
                    ov = values.get(other)
                    if ov is not None and ov[0] == "bits" and tuple(ov[4]) == tuple(shape):
                        res_kind, res_args = 1, (ov[2], ov[1], dummy_f)
                    elif ov is not None and ov[0] == "dense":
                        res_kind, res_args = 2, (dt(0), _NO_BITS, ov[1])
                    else:
                        q = add = None
                # fused units: (image, block of positions); small batches split the positions, unless
                # the blocks would be too small to reuse the weights
                npb = 1 if B >= 2 * nthreads else min(-(-4 * nthreads // B), shape[1] * shape[2] // 32)
                if q is not None and not record and B * npb >= 2 * nthreads:
                    # conv → IF fused per image: the currents stay in cache
                    th = dt(q["threshold"])
                    P, NW = shape[1] * shape[2], (cout + 63) // 64
                    bits_out = self._alloc((F, P, NW), np.uint64)
                    counts = self._alloc((F, P), np.int32)
                    sops = np.empty(F, np.int64)
                    ws = self._gather_workspace(kh, kw, cin)
                    ws += [self._scratch_array("cur", (_NT, S * size), dt), self._scratch_array("v", (_NT, size), dt),
                           self._scratch_array("keepw", (_NT, P * NW), np.uint64)]
                    _pick(gather_if_bits, work + 2 * F * size)(
                        bits, Ws, k, scale, self._wflat[name], b, has_b, *geom, KBLOCK, B, S, tau, *srp_args(th),
                        -(-P // npb), bits_out, counts, sops, *ws, res_kind, *res_args)
                    cnt = counts.sum(axis=1, dtype=np.int64)
                    self._temp_done(counts)
                    qn = q["name"]
                    values[qn] = ("bits", bits_out, th, cnt, model.shapes[qn])
                    tally("spikes", qn, cnt)
                    res.neurons[qn] = size
                    fused.add(qn)
                    tally("sops", name, sops)
                    if add is not None:          # the residual add, computed inside the kernel
                        fused.add(add["name"])
                        ops = values[other][3] if res_kind == 1 else np.zeros(F, np.int64)
                        tally("sops", add["name"], ops)
                else:
                    values[name] = ("dense", self._gather(bits, Ws, k, scale, name, geom, F, size, work, tally))
            elif op == "linear" and spikes is not None and _positions(src[4] if src[0] == "bits" else src[3]) == 1:
                # a 1-d spike map, or a k×k map pooled to 1×1 and flattened: a 1×1 conv on one position
                bits, Ws, k, scale, frame_spikes = spikes
                geom = (1, 1, self._prep[name][0].shape[0], size, 1, 0, 1, 1, 1, 1)
                values[name] = ("dense", self._gather(bits, Ws, k, scale, name, geom, F, size,
                                                      float(frame_spikes.sum()) * size, tally))
            elif op == "avgpool2d" and src[0] == "bits" and len(shape) == 3 and \
                    _int(node["kernel"]) == _int(node.get("stride", node["kernel"])):
                k = _int(node["kernel"])
                cnt = np.empty(F, np.int64)
                _pick(pooled_counts, F * src[1].shape[1] * src[1].shape[2])(src[1], src[4][2], k, shape[1], shape[2],
                                                                            cnt)
                values[name] = ("pooled", src, k, shape)
                tally("sops", name, cnt)
            elif op in ("conv2d", "linear", "avgpool2d"):
                dense = self._to_dense(src, F, S, int(np.prod(model.shapes[node["inputs"][0]])))
                cnt, idx, val = _pick(dense_to_events, dense.size)(dense)
                self._temp_done(dense)
                if op == "conv2d":
                    kh, kw, _, cout = self._prep[name][0].shape
                    work = float(cnt.sum()) * kh * kw * cout
                else:
                    work = float(cnt.sum()) * (size if op == "linear" else 1)
                scale, has_val = dt(0), True
                out = self._alloc((F, size), dt)
                if op == "conv2d":
                    w, b, has_b = self._prep[name]
                    in_shape = model.shapes[node["inputs"][0]]
                    sops = _pick(conv2d_events, work)(cnt, idx, val, scale, has_val, w, b, has_b, in_shape[2],
                                                      in_shape[0], _int(node.get("stride", 1)),
                                                      _int(node.get("padding", 0)), shape[1], shape[2], out)
                elif op == "linear":
                    w, b, has_b = self._prep[name]
                    sops = _pick(linear_events, work)(cnt, idx, val, scale, has_val, w, b, has_b, out)
                else:
                    in_shape = model.shapes[node["inputs"][0]]
                    k = _int(node["kernel"])
                    sops = _pick(avgpool_events, work)(cnt, idx, val, scale, has_val, in_shape[2], in_shape[0], k,
                                                       _int(node.get("stride", k)), shape[1], shape[2], out)
                values[name] = ("dense", out)
                tally("sops", name, sops)
            elif op == "flatten":
                in_shape = model.shapes[node["inputs"][0]]
                if src[0] == "bits" and _positions(in_shape) == 1:
                    values[name] = ("bits", src[1], src[2], src[3], shape)
                elif src[0] == "pooled" and _positions(in_shape) == 1:
                    values[name] = src         # C×1×1: the flat order is the channel order
                else:
                    dense = self._to_dense(src, F, S, size)
                    perm = self._prep[name]
                    inv = np.empty_like(perm)
                    inv[perm] = np.arange(perm.size, dtype=perm.dtype)
                    values[name] = ("dense", np.ascontiguousarray(dense[:, inv]))
            elif op == "add":
                # accumulate into a dense input that nothing else reads (no copy), else into a copy
                owned = [v for s, v in zip(node["inputs"], ins) if v[0] == "dense" and self._consumers[s] == 1
                         and s != model.output and node["inputs"].count(s) == 1]
                dense_in = [v for v in ins if v[0] == "dense"]
                first = owned[0] if owned else (dense_in[0] if dense_in else ins[0])
                if owned:
                    out = first[1]
                else:
                    out = self._alloc((F, size), dt)
                    out[...] = self._to_dense(first, F, S, size)
                ops = np.zeros(F, np.int64)
                if first[0] == "bits":
                    ops += first[3]
                # by position, not identity: an add may list the same input twice (x + x)
                first_i = next(i for i, v in enumerate(ins) if v is first)
                for i, v in enumerate(ins):
                    if i == first_i:
                        continue
                    if v[0] == "bits":
                        ops += v[3]
                        _pick(bits_to_dense, out.size)(v[1], _channels(v[4]), v[2], out, True)
                    elif v[0] == "static":
                        out += np.repeat(v[1], S, axis=0)
                    else:
                        out += self._to_dense(v, F, S, size)
                values[name] = ("dense", out)
                tally("sops", name, ops)
            else:
                raise SrpError(f"node {name!r}: unsupported op {op!r}")

        if prev is not None:
            settle(prev)
        if pending:         # per-image totals of stage 2 (t ≥ τ) and stage 1, for every counter at once
            fc = np.stack([c for _, _, c in pending]).astype(np.int64, copy=False).reshape(len(pending), B, S)
            s2, s1 = fc[:, :, tau:].sum(axis=2), fc[:, :, :tau].sum(axis=2)
            for i, (kind, name, _) in enumerate(pending):
                getattr(res, kind)[name] = s2[i]
                getattr(res, kind + "_stage1")[name] = s1[i]
        frames = self._to_dense(values[model.output], F, S, model.num_classes)
        frames = frames.reshape(B, S, -1)[:, tau:, :].astype(np.float64)
        for v in values.values():
            self._drop(v)
        self._buf_of.clear()
        self._refs.clear()
        acc = np.zeros((B, model.num_classes))
        for t in range(T):
            acc += frames[:, t]
            res.outputs[t] = acc / (t + 1)
        res.seconds = time.perf_counter() - t0
        return res


def _spike_source(value, dt):
    """``(bits, Ws, k, scale, spikes per frame)`` of a value the gather kernels read: a spike map
    (k = 1, scale θ) or its k×k average pool (scale θ/k², at most ``MAX_POOL_WINDOW`` words per
    window); Ws is the spike map's width. None for any other value."""
    if value[0] == "bits":
        _, bits, theta, cnt, shape = value
        return bits, (shape[2] if len(shape) == 3 else 1), 1, theta, cnt
    if value[0] == "pooled" and value[2] * value[2] <= MAX_POOL_WINDOW:
        _, (_, bits, theta, cnt, shape), k, _ = value
        return bits, shape[2], k, theta / dt(k * k), cnt
    return None


def _positions(shape) -> int:
    """Spatial positions of a map (1 for a 1-d layer)."""
    return int(shape[1] * shape[2]) if len(shape) == 3 else 1


def _channels(shape) -> int:
    return int(shape[0]) if len(shape) == 3 else int(np.prod(shape))


def simulate(model, x, tau: int, T: int, dtype=np.float32, mask_eps: float = DEFAULT_MASK_EPS,
             record: bool = False, progress=None, mask_rule: str = DEFAULT_MASK_RULE) -> SimResult:
    """Convenience wrapper: ``Simulator(model, dtype).run(x, tau, T, ...)``."""
    return Simulator(model, dtype).run(x, tau, T, mask_eps=mask_eps, record=record, progress=progress,
                                       mask_rule=mask_rule)
