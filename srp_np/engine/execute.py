"""Execute a :class:`~.plan.Plan`: each step's lowering onto the kernels of :mod:`srp_np.kernels`.

The network is simulated *layer by layer over all time steps*: a node's values for every
frame (image b, step t) of a chunk are computed before the next node runs. This is exact
because the network is feed-forward with no inter-layer delay (a node at step t sees its
inputs of step t), and it lets every kernel run in parallel over frames.
"""
from __future__ import annotations

import math
import threading
import time

import numba
import numpy as np

from ..kernels import aligned
from ..kernels.events import dense_to_events
from ..kernels.gather import DEFAULT_KBLOCK, gather_bits, gather_if_bits, gather_weights, list_capacity
from ..kernels.records import (ConvGeom, FusedScratch, GatherScratch, IFRecord, Residual, SpikeInput, SrpParams,
                               Weights)
from ..kernels.simd import MAX_POOL_WINDOW
from ..kernels.spikes import bits_to_dense, if_bits, if_bits_fast, pool_bits_dense, pooled_counts
from ..kernels.synapses import avgpool_events, conv2d_events, linear_events
from ..neuron import check_mask_rule, initial_membrane, keep_threshold
from ..result import SimResult
from .plan import fused_position_blocks, make_plan
from .values import Dense, Pooled, Spikes, Static, channels, positions
from .workspace import Workspace

#: Bytes of weights the gather kernels keep in cache per segment group (see ``gather_bits``).
KBLOCK = DEFAULT_KBLOCK

#: Rows of the per-thread workspaces (``numba.get_thread_id()`` is below this).
NT = numba.config.NUMBA_NUM_THREADS

_NO_BITS = np.zeros((1, 1, 1), np.uint64)   # placeholders for the unused residual of gather_if_bits
_NO_DENSE = {t.__name__: np.zeros((1, 1), t) for t in (np.float32, np.float64)}
_NO_RESIDUAL = {k: Residual(0, np.dtype(k).type(0), _NO_BITS, v) for k, v in _NO_DENSE.items()}

#: Kernel calls with less estimated work (synaptic ops or neuron updates) run on one thread.
PARALLEL_MIN_WORK = 1_000_000

_THREADS = threading.local()     # .user: the caller's Numba thread count during a run


def pick(kernel, work: float):
    """``kernel``, to be run on all threads for big calls and on one thread for small
    ones (waking the other threads costs more than it saves, above all on a loaded
    machine). Results do not depend on the thread count. Inside :meth:`Engine.run_chunk`
    (:func:`user_threads`) the thread count is switched only when it changes (the caller's
    is restored at the end); outside, a small call gets a wrapper that restores it."""
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


class user_threads:
    """Context of a chunk: :func:`pick` switches the Numba thread count lazily and the
    caller's count is restored on exit."""

    def __enter__(self):
        _THREADS.user = _THREADS.current = numba.get_num_threads()

    def __exit__(self, *exc):
        numba.set_num_threads(_THREADS.user)
        _THREADS.user = None


class Chunk:
    """The state of one chunk of B images × S steps while a plan executes (the context an op's
    :meth:`~srp_np.opset.Node.lower` receives)."""

    def __init__(self, engine, x, tau: int, T: int, mask_eps: float, mask_rule: str, record: bool):
        self.engine = engine
        self.model = engine.model
        self.arrays = engine.model.arrays
        self.dt = engine.dtype
        self.ws = engine.workspace
        self.B, self.S = x.shape[0], tau + T
        self.F = self.B * self.S
        self.tau, self.T = tau, T
        self.mask_eps, self.mask_rule, self.rule = mask_eps, mask_rule, check_mask_rule(mask_rule)
        self.record = record
        self.plan = None        # set by Engine.run_chunk
        #: the caller's thread count (kernels may switch to one thread for small calls: see :func:`pick`)
        self.nthreads = numba.get_num_threads()
        self._srp = engine.srp_cache
        self.pending = []       # (attribute of the result, node, per-frame counts), summed per image at the end
        self.res = SimResult(outputs=np.zeros((T, self.B, self.model.num_classes)), tau=tau, T=T,
                             record={} if record else None)

    # ------------------------------------------------------------------ helpers for lowerings
    def srp_params(self, th) -> SrpParams:
        """The SRP schedule of an IF layer of threshold θ: τ, θ, v(0), keep threshold, rule code."""
        key = (th, self.tau, self.mask_eps, self.rule)
        p = self._srp.get(key)
        if p is None:
            dt = self.dt
            p = self._srp[key] = SrpParams(self.tau, th, initial_membrane(th, dt),
                                           keep_threshold(th, self.mask_eps, self.mask_rule, dt), self.rule)
        return p

    def tally(self, kind: str, name: str, frame_counts) -> None:
        self.pending.append((kind, name, frame_counts))

    def alloc(self, shape, dtype=None):
        return self.ws.alloc(shape, self.dt if dtype is None else dtype)

    def to_dense(self, value, size: int) -> np.ndarray:
        """Any value as a dense F×size channels-last array (may be shared: do not mutate)."""
        F, S = self.F, self.S
        if isinstance(value, Dense):
            return value.data
        if isinstance(value, Static):
            return np.repeat(value.data, S, axis=0)
        if isinstance(value, Spikes):
            out = self.alloc((F, size))
            pick(bits_to_dense, out.size)(value.bits, channels(value.shape), value.theta, out, False)
            return out
        if isinstance(value, Pooled):
            src = value.src
            C, Ho, Wo = value.shape
            out = self.alloc((F, size))
            pick(pool_bits_dense, out.size)(src.bits, src.shape[2], C, value.k, Ho, Wo, src.theta, out)
            return out
        raise AssertionError(type(value))

    def dense_copy(self, value) -> np.ndarray:
        """A dense F×size array of ``value`` that the caller owns and may overwrite (only a dense
        value's own array is shared: the others are made afresh by :meth:`to_dense`)."""
        size = value.data.shape[1] if isinstance(value, (Dense, Static)) else math.prod(value.shape)
        d = self.to_dense(value, size)
        if isinstance(value, Dense):
            out = self.alloc(d.shape)
            out[...] = d
            return out
        return d

    def dense_value(self, arr) -> Dense:
        return Dense(arr)

    def fused_scratch(self, ncur: int, nv: int, nkeep: int) -> FusedScratch:
        """Per-thread buffers of :func:`gather_if_bits` (currents, membranes, keep words)."""
        key = ("fused", ncur, nv, nkeep)
        sc = self.ws.scratch
        if key not in sc:
            sc[key] = FusedScratch(self.ws.scratch_array("cur", (NT, ncur), self.dt),
                                   self.ws.scratch_array("v", (NT, nv), self.dt),
                                   self.ws.scratch_array("keepw", (NT, nkeep), np.uint64))
        return sc[key]

    def gather_scratch(self, kh, kw, cin) -> GatherScratch:
        """Per-thread buffers of :func:`gather_bits` (lists, counts, segment starts, pooling window)."""
        cap = list_capacity(kh, kw, cin)
        key = ("gather", cap)
        sc = self.ws.scratch
        if key not in sc:
            sc[key] = GatherScratch(self.ws.scratch_array("offs", (NT, cap), np.uint32),
                                    self.ws.scratch_array("cnt", (NT, cap), self.dt),
                                    self.ws.scratch_array("start", (NT, cap), np.int64),
                                    self.ws.scratch_array("win", (NT, MAX_POOL_WINDOW), np.uint64))
        return sc[key]


def spike_source(value, dt):
    """``(SpikeInput, spikes per frame)`` of a value the gather kernels read: a spike map
    (k = 1, scale θ) or its k×k average pool (scale θ/k²)."""
    if isinstance(value, Spikes):
        return SpikeInput(value.bits, value.shape[2] if len(value.shape) == 3 else 1, 1, value.theta), value.counts
    src = value.src
    return SpikeInput(src.bits, src.shape[2], value.k, src.theta / dt(value.k * value.k)), src.counts


class Engine:
    """Executes plans for one model and precision with prepared weights (see :class:`Simulator`)."""

    @classmethod
    def prepare(cls, model, dtype) -> "Engine":
        """An engine with the weights of ``model``'s time-varying conv and linear layers laid out for
        the kernels (hwio / in×out in ``dtype``, plus :func:`gather_weights`) and the flatten permutations."""
        prep, wflat, perm = {}, {}, {}
        for node in model.ops:
            if node.name in model.static:
                continue
            if node.op in ("conv2d", "linear"):
                w = model.arrays[node.weight]
                b = None if node.bias is None else model.arrays[node.bias]
                wt = w.transpose(2, 3, 1, 0) if node.op == "conv2d" else w.T
                prep[node.name] = (np.ascontiguousarray(wt).astype(dtype),
                                   (np.zeros(w.shape[0]) if b is None else b).astype(dtype), b is not None)
                wflat[node.name] = gather_weights(prep[node.name][0])
            elif node.op == "flatten":
                perm[node.name] = _hwc_perm(model.shapes[node.inputs[0]])
        return cls(model, dtype, prep, wflat, perm)

    def __init__(self, model, dtype, prep: dict, wflat: dict, flatten_perm: dict):
        self.model = model
        self.dtype = dtype
        self.prep = prep          # conv / linear name → (weight hwio / in×out, bias, has bias)
        self.wflat = wflat        # conv / linear name → gather_weights(...)
        self.flatten_perm = flatten_perm
        self.workspace = Workspace()
        self._plans = {}
        self._geoms = {}         # node → ConvGeom
        self.srp_cache = {}      # (θ, τ, ε, rule) → SrpParams
        self._wrec = {}          # node → Weights (rebuilt if the weights are re-aligned: see Simulator.__setstate__)

    def plan(self, B: int, S: int, record: bool, threads: int):
        key = (B, S, threads, record)
        if key not in self._plans:
            self._plans[key] = make_plan(self.model, *key)
        return self._plans[key]

    # ------------------------------------------------------------------ one chunk
    def run_chunk(self, x, tau, T, mask_eps, mask_rule, record) -> SimResult:
        t0 = time.perf_counter()
        model, dt, ws = self.model, self.dtype, self.workspace
        ck = Chunk(self, x, tau, T, mask_eps, mask_rule, record)
        plan = ck.plan = self.plan(ck.B, ck.S, record, ck.nthreads)
        static_vals = {"input": x.astype(dt)}
        values = {"input": Static(aligned(_to_internal(static_vals["input"])))}   # read by e.g. a residual add
        ws.reset()
        for step in plan.steps:
            node = step.node
            name = node.name
            if step.how == "static":
                static_vals[name] = node.dense([static_vals[s] for s in node.inputs], model.arrays)
                values[name] = Static(aligned(_to_internal(static_vals[name])))
            elif step.how != "fused":
                ins = [values[s] for s in node.inputs]
                produced = getattr(self, "_" + step.how)(ck, step, ins, values)
                if produced is not None:
                    values[name] = produced
            # hold the node's value; give back the buffers of inputs nothing reads any more
            if name in values:
                ws.hold(values[name])
            for s in step.frees:
                if s in values:
                    ws.drop(values.pop(s))

        res = ck.res
        B, S = ck.B, ck.S
        if ck.pending:     # per-image totals of stage 2 (t ≥ τ) and stage 1, for every counter at once
            fc = np.stack([c for _, _, c in ck.pending]).astype(np.int64, copy=False).reshape(len(ck.pending), B, S)
            s2, s1 = fc[:, :, tau:].sum(axis=2), fc[:, :, :tau].sum(axis=2)
            for i, (kind, name, _) in enumerate(ck.pending):
                getattr(res, kind)[name] = s2[i]
                getattr(res, kind + "_stage1")[name] = s1[i]
        frames = ck.to_dense(values[model.output], model.num_classes)
        frames = frames.reshape(B, S, -1)[:, tau:, :].astype(np.float64)
        for v in values.values():
            ws.drop(v)
        ws.reset()
        acc = np.zeros((B, model.num_classes))
        for t in range(T):
            acc += frames[:, t]
            res.outputs[t] = acc / (t + 1)
        res.seconds = time.perf_counter() - t0
        return res

    # ------------------------------------------------------------------ lowerings (Step.how)
    def _if(self, ck, step, ins, values):
        """IF layer with SRP (Algorithm 1) over all frames: spikes as bit sets."""
        node, dt, B, S, F = step.node, ck.dt, ck.B, ck.S, ck.F
        name = node.name
        shape = self.model.shapes[name]
        size = math.prod(shape)
        th = dt(node.threshold)
        src = ins[0]
        static = isinstance(src, Static)
        cur = src.data if static else ck.to_dense(src, size)
        P = positions(shape)
        C = size // P
        NW = (C + 63) // 64
        bits = ck.alloc((F, P, NW), np.uint64)
        counts = ck.alloc((F, P), np.int32)
        pblock = max(1, min(P, -(-P * B // (8 * ck.nthreads))))
        if ck.record:
            rec = IFRecord(v_tau=np.zeros((B, size), dt), mask=np.ones((B, size), np.bool_),
                           spikes_stage1=np.zeros((B, size), np.int32), spikes=np.zeros((B, size), np.int32),
                           input_sum=np.zeros((B, size), np.float64))
            pick(if_bits, 2 * F * size)(cur, static, B, S, ck.srp_params(th), P, C, pblock, True, bits, counts, rec)
            rec = rec._asdict()
            if ck.tau == 0:
                rec["v_tau"] = None
            ck.res.record[name] = {k: (None if v is None else _to_model_layout(v, shape)) for k, v in rec.items()}
        else:
            pick(if_bits_fast, 2 * F * size)(cur, static, B, S, ck.srp_params(th), P, C, pblock, bits, counts)
        cnt = counts.sum(axis=1, dtype=np.int64)
        ck.ws.temp_done(counts)
        if not static:
            ck.ws.temp_done(cur)
        ck.tally("spikes", name, cnt)
        ck.res.neurons[name] = size
        return Spikes(bits, th, cnt, shape)

    def _gather_geometry(self, node) -> ConvGeom:
        g = self._geoms.get(node.name)
        if g is None:
            g = self._geoms[node.name] = self._make_geometry(node)
        return g

    def _make_geometry(self, node) -> ConvGeom:
        shapes = self.model.shapes
        shape = shapes[node.name]
        if node.op == "conv2d":
            w = self.prep[node.name][0]
            kh, kw, cin, cout = w.shape
            in_shape = shapes[node.inputs[0]]
            return ConvGeom(kh, kw, cin, cout, node.stride, node.padding, in_shape[1], in_shape[2], shape[1], shape[2])
        # linear on a 1-d spike map or a map pooled to 1×1: a 1×1 conv on one position
        return ConvGeom(1, 1, self.prep[node.name][0].shape[0], math.prod(shape), 1, 0, 1, 1, 1, 1)

    def _weights(self, name) -> Weights:
        w = self._wrec.get(name)
        if w is None:
            _, b, has_b = self.prep[name]
            w = self._wrec[name] = Weights(self.wflat[name], b, has_b)
        return w

    def _gather(self, ck, step, ins, values):
        """Conv / linear fed by spikes (or their k = stride pool): gather kernel → currents."""
        node = step.node
        name = node.name
        size = math.prod(self.model.shapes[name])
        src, frame_spikes = spike_source(ins[0], ck.dt)
        geom = self._gather_geometry(node)
        work = float(frame_spikes.sum()) * geom.kh * geom.kw * geom.cout
        # units: about 4 per thread, frame groups first, then slices of the output channels
        F = ck.F
        target = 4 * numba.get_num_threads()
        fgroup = max(1, F // target)
        ncolu = max(1, target // -(-F // fgroup))
        out = ck.alloc((F, size))
        sops = np.empty(F, np.int64)
        pick(gather_bits, work)(src, self._weights(name), geom, fgroup, ncolu, KBLOCK, out, sops,
                                ck.gather_scratch(geom.kh, geom.kw, geom.cin))
        ck.tally("sops", name, sops)
        return Dense(out)

    def _gather_if(self, ck, step, ins, values):
        """A conv fused with the IF layer it feeds (and the residual add between them): per image
        and block of positions, the currents of all steps stay in cache (:func:`gather_if_bits`)."""
        node, dt, B, S, F = step.node, ck.dt, ck.B, ck.S, ck.F
        name = node.name
        shape = self.model.shapes[name]
        size = math.prod(shape)
        src, frame_spikes = spike_source(ins[0], dt)
        geom = self._gather_geometry(node)
        cout = geom.cout
        work = float(frame_spikes.sum()) * geom.kh * geom.kw * cout
        dummy_f = _NO_DENSE[np.dtype(dt).name]
        res = _NO_RESIDUAL[np.dtype(dt).name]
        if step.residual is not None:
            ov = values[step.residual]
            res = Residual(1, ov.theta, ov.bits, dummy_f) if isinstance(ov, Spikes) else Residual(2, dt(0), _NO_BITS,
                                                                                                ov.data)
        q = self.model.op_by_name[step.fused_if]
        th = dt(q.threshold)
        P, NW = shape[1] * shape[2], (cout + 63) // 64
        npb = fused_position_blocks(B, ck.nthreads, shape[1], shape[2])
        bits_out = ck.alloc((F, P, NW), np.uint64)
        counts = ck.alloc((F, P), np.int32)
        sops = np.empty(F, np.int64)
        fscratch = ck.fused_scratch(S * size, size, P * NW)
        pick(gather_if_bits, work + 2 * F * size)(
            src, self._weights(name), geom, KBLOCK, B, S, ck.srp_params(th), -(-P // npb), bits_out, counts, sops,
            ck.gather_scratch(geom.kh, geom.kw, geom.cin), fscratch, res)
        cnt = counts.sum(axis=1, dtype=np.int64)
        ck.ws.temp_done(counts)
        qn = q.name
        values[qn] = Spikes(bits_out, th, cnt, self.model.shapes[qn])
        ck.tally("spikes", qn, cnt)
        ck.res.neurons[qn] = size
        ck.tally("sops", name, sops)
        if step.fused_add is not None:          # the residual add, computed inside the kernel
            ck.tally("sops", step.fused_add, values[step.residual].counts if res.kind == 1 else np.zeros(F, np.int64))
        return None

    def _pool_spikes(self, ck, step, ins, values):
        """A k = stride average pool of spikes: not materialised; counts its synaptic ops."""
        node = step.node
        src = ins[0]
        shape = self.model.shapes[node.name]
        cnt = np.empty(ck.F, np.int64)
        pick(pooled_counts, ck.F * src.bits.shape[1] * src.bits.shape[2])(src.bits, src.shape[2], node.kernel,
                                                                          shape[1], shape[2], cnt)
        ck.tally("sops", node.name, cnt)
        return Pooled(src, node.kernel, shape)

    def _events(self, ck, step, ins, values):
        """A synaptic node fed by dense values: padded event lists and the scatter kernels."""
        node, F = step.node, ck.F
        name, op = node.name, node.op
        shapes = self.model.shapes
        shape, in_shape = shapes[name], shapes[node.inputs[0]]
        size = math.prod(shape)
        dense = ck.to_dense(ins[0], math.prod(in_shape))
        cnt, idx, val = pick(dense_to_events, dense.size)(dense)
        ck.ws.temp_done(dense)
        if op == "conv2d":
            kh, kw, _, cout = self.prep[name][0].shape
            work = float(cnt.sum()) * kh * kw * cout
        else:
            work = float(cnt.sum()) * (size if op == "linear" else 1)
        out = ck.alloc((F, size))
        if op == "conv2d":
            w, b, has_b = self.prep[name]
            sops = pick(conv2d_events, work)(cnt, idx, val, w, b, has_b, in_shape[2], in_shape[0], node.stride,
                                             node.padding, shape[1], shape[2], out)
        elif op == "linear":
            w, b, has_b = self.prep[name]
            sops = pick(linear_events, work)(cnt, idx, val, w, b, has_b, out)
        else:
            sops = pick(avgpool_events, work)(cnt, idx, val, in_shape[2], in_shape[0], node.kernel, node.stride,
                                              shape[1], shape[2], out)
        ck.tally("sops", name, sops)
        return Dense(out)

    def _flatten(self, ck, step, ins, values):
        node = step.node
        src = ins[0]
        in_shape = self.model.shapes[node.inputs[0]]
        shape = self.model.shapes[node.name]
        if isinstance(src, Spikes) and positions(in_shape) == 1:
            return Spikes(src.bits, src.theta, src.counts, shape)
        if isinstance(src, Pooled) and positions(in_shape) == 1:
            return src         # C×1×1: the flat order is the channel order
        dense = ck.to_dense(src, math.prod(shape))
        perm = self.flatten_perm[node.name]
        inv = np.empty_like(perm)
        inv[perm] = np.arange(perm.size, dtype=perm.dtype)
        return Dense(np.ascontiguousarray(dense[:, inv]))

    def _add(self, ck, step, ins, values):
        """Elementwise sum: accumulate into a dense input that nothing else reads (no copy), else a copy."""
        node, F, S = step.node, ck.F, ck.S
        model = self.model
        size = math.prod(model.shapes[node.name])
        consumers = ck.plan.consumers
        owned = [v for s, v in zip(node.inputs, ins) if isinstance(v, Dense) and consumers[s] == 1
                 and s != model.output and node.inputs.count(s) == 1]
        dense_in = [v for v in ins if isinstance(v, Dense)]
        first = owned[0] if owned else (dense_in[0] if dense_in else ins[0])
        if owned:
            out = first.data
        else:
            out = ck.alloc((F, size))
            out[...] = ck.to_dense(first, size)
        ops = np.zeros(F, np.int64)
        if isinstance(first, Spikes):
            ops += first.counts
        # by position, not identity: an add may list the same input twice (x + x)
        first_i = next(i for i, v in enumerate(ins) if v is first)
        for i, v in enumerate(ins):
            if i == first_i:
                continue
            if isinstance(v, Spikes):
                ops += v.counts
                pick(bits_to_dense, out.size)(v.bits, channels(v.shape), v.theta, out, True)
            elif isinstance(v, Static):
                out += np.repeat(v.data, S, axis=0)
            else:
                out += ck.to_dense(v, size)
        ck.tally("sops", node.name, ops)
        return Dense(out)

    def _op(self, ck, step, ins, values):
        """An op that lowers itself (:meth:`srp_np.opset.Node.lower`)."""
        from ..errors import SrpError

        lower = getattr(step.node, "lower", None)
        if lower is None:
            raise SrpError(f"node {step.node.name!r}: op {step.node.op!r} cannot run in the spiking network")
        return lower(ck, ins)



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
