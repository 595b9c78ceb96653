"""Event-driven simulation of a converted SNN, with SRP (Algorithm 1).

The network is simulated *layer by layer over all time steps*: a node's
values for every frame (image b, step t) of a chunk of images are computed
before the next node runs. This is exact because the network is feed-forward
with no inter-layer delay (a node at step t sees its inputs of step t), and it
lets every kernel run in parallel over frames.

* Nodes that depend only on the analog input (the first conv, ...) are
  computed once per image with dense NumPy operators.
* Spikes leave an IF layer as per-frame event lists; convolutions, linear
  layers and average pools scatter each event's weights into the
  postsynaptic currents (:mod:`srp_np.kernels.synapses`).
* IF layers run the two SRP stages (:mod:`srp_np.kernels.neuron`).

The semantics are exactly those of :func:`srp_np.reference.simulate_dense`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .errors import SrpError
from .kernels.events import dense_to_events, permute_events, scatter_add_events
from .kernels.neuron import if_layer
from .kernels.synapses import avgpool_events, conv2d_events, linear_events
from .neuron import DEFAULT_MASK_EPS
from .ops import apply_linear_node

#: Memory budget (bytes) for one frame-major array; chunks of images are sized to fit.
DEFAULT_CHUNK_BYTES = 96 * 2**20


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

    Examples
    --------
    >>> sim = Simulator(load_model("weights/resnet20_fmnist.npz"))   # doctest: +SKIP
    >>> res = sim.run(model.preprocess(images), tau=4, T=8)         # doctest: +SKIP
    >>> res.accuracy(labels)                                         # doctest: +SKIP
    """

    def __init__(self, model, dtype=np.float32, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise SrpError(f"dtype must be float32 or float64, got {dt}")
        self.model = model
        self.dtype = dt.type
        self.chunk_bytes = int(chunk_bytes)
        self.static = self._static_nodes()
        self._prep = {}
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
            elif op == "linear":
                w = model.weight(node)
                b = model.weight(node, "bias")
                self._prep[node["name"]] = (
                    np.ascontiguousarray(w.T).astype(self.dtype),
                    (np.zeros(w.shape[0]) if b is None else b).astype(self.dtype), b is not None)
            elif op == "flatten":
                self._prep[node["name"]] = _hwc_perm(model.shapes[node["inputs"][0]])
        self.max_width = max(int(np.prod(s)) for s in model.shapes.values())

    def _static_nodes(self) -> set:
        static = {"input"}
        for node in self.model.nodes:
            if node["op"] != "qcfs" and all(s in static for s in node["inputs"]):
                static.add(node["name"])
        return static

    def images_per_chunk(self, S: int) -> int:
        per_image = S * self.max_width * np.dtype(self.dtype).itemsize
        return max(1, self.chunk_bytes // per_image)

    def run(self, x, tau: int, T: int, mask_eps: float = DEFAULT_MASK_EPS, record: bool = False,
            progress=None) -> SimResult:
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
            SRP keeps a neuron iff ``v(τ) > mask_eps·θ``.
        record : bool
            Keep per-neuron arrays (see :class:`SimResult`).
        progress : callable, optional
            Called with the number of images finished after each chunk.
        """
        tau, T = int(tau), int(T)
        if tau < 0:
            raise SrpError(f"tau must be >= 0, got {tau}")
        if T < 1:
            raise SrpError(f"T must be >= 1, got {T}")
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(self.model.input_shape):
            raise SrpError(f"input shape {list(x.shape[1:])} does not match the model's "
                           f"input_shape {list(self.model.input_shape)}")
        n = x.shape[0]
        step = self.images_per_chunk(tau + T)
        parts = []
        for s in range(0, n, step):
            parts.append(self._run_chunk(x[s:s + step], tau, T, mask_eps, record))
            if progress is not None:
                progress(min(step, n - s))
        if not parts:
            raise SrpError("no images to simulate")
        return SimResult.concatenate(parts)

    # ------------------------------------------------------------------
    def _events(self, value):
        """Any time-varying value as events ``(cnt, idx, val, scale, has_val)``."""
        kind = value[0]
        if kind == "events":
            return value[1:]
        if kind == "dense":
            cnt, idx, val = dense_to_events(value[1])
            return cnt, idx, val, self.dtype(0), True
        raise AssertionError(kind)

    def _dense(self, value, F: int, B: int, S: int, size: int) -> np.ndarray:
        """Any value as a dense F×size array (a fresh, writable copy)."""
        kind = value[0]
        if kind == "dense":
            return value[1].copy()
        if kind == "static":
            return np.repeat(value[1], S, axis=0)
        out = np.zeros((F, size), self.dtype)
        cnt, idx, val, scale, has_val = value[1:]
        scatter_add_events(out, cnt, idx, val, scale, has_val)
        return out

    def _run_chunk(self, x, tau, T, mask_eps, record) -> SimResult:
        t0 = time.perf_counter()
        model, dt = self.model, self.dtype
        B, S = x.shape[0], tau + T
        F = B * S
        stage1 = (np.arange(F) % S) < tau
        static_vals = {"input": x.astype(dt)}
        values = {}
        res = SimResult(outputs=np.zeros((T, B, model.num_classes)), tau=tau, T=T,
                        record={} if record else None)
        dummy_f = np.zeros((1, 1), dt)
        dummy_b = np.zeros((1, 1), np.bool_)
        dummy_i = np.zeros((1, 1), np.int32)
        dummy_d = np.zeros((1, 1), np.float64)

        def per_image(frame_counts):
            fc = frame_counts.reshape(B, S)
            return fc[:, tau:].sum(axis=1), fc[:, :tau].sum(axis=1)

        for node in model.nodes:
            name, op = node["name"], node["op"]
            shape = model.shapes[name]
            size = int(np.prod(shape))
            if name in self.static:
                static_vals[name] = apply_linear_node(model, node, [static_vals[s] for s in node["inputs"]])
                values[name] = ("static", _to_internal(static_vals[name]))
                continue
            ins = [values[s] for s in node["inputs"]]
            if op == "qcfs":
                th = dt(node["threshold"])
                src = ins[0]
                static = src[0] == "static"
                cur = src[1] if src[0] in ("static", "dense") else self._dense(src, F, B, S, size)
                idx = np.empty((F, size), np.int32)
                cnt = np.zeros(F, np.int64)
                if record:
                    rec = dict(v_tau=np.zeros((B, size), dt), mask=np.ones((B, size), np.bool_),
                               spikes_stage1=np.zeros((B, size), np.int32), spikes=np.zeros((B, size), np.int32),
                               input_sum=np.zeros((B, size), np.float64))
                    if_layer(cur, static, B, S, tau, th, th / dt(2), dt(mask_eps) * th, True, idx, cnt,
                             rec["v_tau"], rec["mask"], rec["spikes_stage1"], rec["spikes"], rec["input_sum"])
                    if tau == 0:
                        rec["v_tau"] = None
                    res.record[name] = {k: (None if v is None else _to_model_layout(v, shape))
                                        for k, v in rec.items()}
                else:
                    if_layer(cur, static, B, S, tau, th, th / dt(2), dt(mask_eps) * th, False, idx, cnt,
                             dummy_f, dummy_b, dummy_i, dummy_i, dummy_d)
                cap = max(1, int(cnt.max()))
                values[name] = ("events", cnt, idx[:, :cap], dummy_f, th, False)
                res.spikes[name], res.spikes_stage1[name] = per_image(cnt)
                res.neurons[name] = size
                continue
            if op in ("conv2d", "linear", "avgpool2d"):
                cnt, idx, val, scale, has_val = self._events(ins[0])
                out = np.empty((F, size), dt)
                if op == "conv2d":
                    w, b, has_b = self._prep[name]
                    in_shape = model.shapes[node["inputs"][0]]
                    st = node.get("stride", 1)
                    pd = node.get("padding", 0)
                    st = st[0] if isinstance(st, list) else st
                    pd = pd[0] if isinstance(pd, list) else pd
                    sops = conv2d_events(cnt, idx, val, scale, has_val, w, b, has_b, in_shape[2], in_shape[0],
                                         int(st), int(pd), shape[1], shape[2], out)
                elif op == "linear":
                    w, b, has_b = self._prep[name]
                    sops = linear_events(cnt, idx, val, scale, has_val, w, b, has_b, out)
                else:
                    in_shape = model.shapes[node["inputs"][0]]
                    k = node["kernel"]
                    k = k[0] if isinstance(k, list) else k
                    st = node.get("stride", k)
                    st = st[0] if isinstance(st, list) else st
                    sops = avgpool_events(cnt, idx, val, scale, has_val, in_shape[2], in_shape[0], int(k), int(st),
                                          shape[1], shape[2], out)
                values[name] = ("dense", out)
                res.sops[name], res.sops_stage1[name] = per_image(sops)
            elif op == "flatten":
                src = ins[0]
                perm = self._prep[name]
                if src[0] == "events":
                    cnt, idx, val, scale, has_val = src[1:]
                    values[name] = ("events", cnt, permute_events(cnt, idx, perm), val, scale, has_val)
                else:
                    inv = np.empty_like(perm)
                    inv[perm] = np.arange(perm.size, dtype=perm.dtype)
                    values[name] = ("dense", np.ascontiguousarray(src[1][:, inv]))
            elif op == "add":
                dense_in = [v for v in ins if v[0] == "dense"]
                out = dense_in[0][1].copy() if dense_in else None
                ops = np.zeros(F, np.int64)
                for v in ins:
                    if out is not None and v is dense_in[0]:
                        continue
                    if v[0] == "events":
                        ops += v[1]
                    if out is None:
                        out = self._dense(v, F, B, S, size)
                    elif v[0] == "static":
                        out += np.repeat(v[1], S, axis=0)
                    elif v[0] == "dense":
                        out += v[1]
                    else:
                        cnt, idx, val, scale, has_val = v[1:]
                        scatter_add_events(out, cnt, idx, val, scale, has_val)
                values[name] = ("dense", out)
                res.sops[name], res.sops_stage1[name] = per_image(ops)
            else:
                raise SrpError(f"node {name!r}: unsupported op {op!r}")

        out = values[model.output]
        if out[0] == "static":
            frames = np.repeat(out[1], S, axis=0)
        elif out[0] == "dense":
            frames = out[1]
        else:
            frames = self._dense(out, F, B, S, model.num_classes)
        frames = frames.reshape(B, S, -1)[:, tau:, :].astype(np.float64)
        acc = np.zeros((B, model.num_classes))
        for t in range(T):
            acc += frames[:, t]
            res.outputs[t] = acc / (t + 1)
        res.seconds = time.perf_counter() - t0
        return res


def simulate(model, x, tau: int, T: int, dtype=np.float32, mask_eps: float = DEFAULT_MASK_EPS,
             record: bool = False, progress=None) -> SimResult:
    """Convenience wrapper: ``Simulator(model, dtype).run(x, tau, T, ...)``."""
    return Simulator(model, dtype).run(x, tau, T, mask_eps=mask_eps, record=record, progress=progress)
