"""Evaluate a converted SNN on a labelled data set: accuracy per step and costs.

This is the layer between the simulator (model) and the data (the CLI's
``--data``): it normalises images, runs the QCFS ANN and the SNN in batches,
and summarises accuracy after every stage-2 step t = 1..T together with
spikes, synaptic operations, firing rates and throughput (ANN and SNN timed
separately).
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .ann import ann_forward
from .neuron import DEFAULT_MASK_EPS, DEFAULT_MASK_RULE
from .ops import Workspace
from .simulator import SimResult, Simulator, check_run_memory


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
        Wall time of the SNN simulation alone (``snn_seconds``).
    ann_seconds : float
        Wall time of the ANN forward pass over all images.
    seconds_total : float or None
        End-to-end wall time: for :func:`evaluate`, from its call to its return
        (preprocessing, ANN, SNN); the CLI replaces it with the whole command's
        (loading the model and data included). None: ANN + SNN.
    threads : int or None
        Threads used (Numba kernels, and batches of the ANN pass).
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
    ann_seconds: float = 0.0
    mask_rule: str = DEFAULT_MASK_RULE
    seconds_total: float | None = None
    threads: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        return int(self.y.shape[0])

    @property
    def latency(self) -> list:
        return [self.tau + t for t in range(1, self.T + 1)]

    @property
    def snn_seconds(self) -> float:
        return self.seconds

    @property
    def total_seconds(self) -> float:
        """End-to-end wall time (``seconds_total``, or ANN + SNN when it is not set)."""
        return self.seconds_total if self.seconds_total is not None else self.ann_seconds + self.seconds

    @property
    def images_per_second(self) -> float:
        """SNN throughput: images per second of SNN simulation (the ANN pass and loading not counted)."""
        return _rate(self.n_images, self.seconds)

    snn_images_per_second = images_per_second

    @property
    def images_per_second_end_to_end(self) -> float:
        """Images per second of :attr:`total_seconds` (ANN, SNN, loading: everything)."""
        return _rate(self.n_images, self.total_seconds)

    @property
    def counts(self):
        """The exact integer counts every figure is a ratio of (:class:`srp_np.counts.RunCounts`)."""
        from .counts import RunCounts

        if "_counts" not in self.__dict__:
            self.__dict__["_counts"] = RunCounts.from_result(self.result, self.y, self.ann_logits)
        return self.__dict__["_counts"]

    @property
    def spikes_per_image(self) -> float:
        """Spikes per image over both stages (every spike costs energy)."""
        return self.counts.spikes_per_image

    @property
    def sops_per_image(self) -> float:
        """Synaptic operations per image over both stages."""
        return self.counts.sops_per_image

    def firing_rates(self) -> dict:
        """Spikes per neuron per step (both stages, τ + T steps) for each IF layer."""
        return self.counts.firing_rates()

    def to_dict(self) -> dict:
        """JSON-serialisable summary (the ``--json`` file of ``srp-np run``)."""
        return {**run_figures(self.counts, self.dtype, self.mask_eps, self.mask_rule),
                **self.timings(), **self.extra}

    def timings(self) -> dict:
        """The wall-time keys of the ``--json`` file (everything that is not a count)."""
        return {
            "images_per_second": self.images_per_second,
            "seconds": self.seconds,
            "ann_seconds": self.ann_seconds,
            "snn_seconds": self.seconds,
            "other_seconds": max(0.0, self.total_seconds - self.ann_seconds - self.seconds),
            "seconds_total": self.total_seconds,
            "snn_images_per_second": self.snn_images_per_second,
            "images_per_second_end_to_end": self.images_per_second_end_to_end,
            "threads": self.threads,
        }


def run_figures(counts, dtype: str, mask_eps: float, mask_rule: str = DEFAULT_MASK_RULE) -> dict:
    """The figures of ``srp-np run --json`` that come from counts (all but the wall times).

    Accuracy after t steps = correct(t)/N; spikes and synaptic operations per image
    = Σ/N over both stages; firing rate per IF layer = spikes/(neurons·(τ+T)·N).
    """
    return {
        "tau": counts.tau, "T": counts.T, "n_images": counts.n_images, "dtype": dtype, "mask_eps": mask_eps,
        "mask_rule": mask_rule, "ann_accuracy": counts.ann_accuracy,
        "accuracy": [float(a) for a in counts.accuracy()],
        "latency": [counts.tau + t for t in range(1, counts.T + 1)],
        "spikes_per_image": counts.spikes_per_image,
        "sops_per_image": counts.sops_per_image,
        "firing_rate": counts.firing_rates(),
    }


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def prepare_inputs(model, x_raw) -> np.ndarray:
    """Raw images (uint8 or float in [0, 1]) → normalised float32 model inputs."""
    from .datasets import fit_to_shape, to_float

    return model.preprocess(fit_to_shape(to_float(np.asarray(x_raw)), model.input_shape))


def ann_logits(model, x, batch_size: int = 256, threads: int | None = None) -> np.ndarray:
    """QCFS ANN logits for normalised inputs, in batches (float32 arithmetic).

    With ``threads`` > 1 (default: ``numba.get_num_threads()``), that many
    batches are computed at once, each on its own thread with single-threaded
    BLAS (one batch: BLAS uses the threads). Each batch goes through the same
    BLAS calls either way, so the logits do not depend on ``threads``.
    """
    from .threads import blas_threads

    if threads is None:
        import numba

        threads = numba.get_num_threads()
    starts = list(range(0, len(x), batch_size))
    workers = max(1, min(int(threads), len(starts)))
    local = threading.local()

    def one(s):
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = Workspace()
        return ann_forward(model, x[s:s + batch_size], dtype=np.float32, workspace=ws)

    with blas_threads(max(1, int(threads) // workers)):
        if workers == 1:
            outs = [one(s) for s in starts]
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="srp-np-ann") as ex:
                outs = list(ex.map(one, starts))
    if not outs:
        return np.zeros((0, model.num_classes))
    return np.concatenate(outs).astype(np.float64)


def simulate_batches(sim, x, tau: int, T: int, batch_size: int, progress=None, **run_kw) -> tuple:
    """``sim.run`` on ``x`` in batches of ``batch_size`` images: ``(SimResult of all, seconds)``;
    ``progress`` is called with each batch's image count."""
    parts = []
    t0 = time.perf_counter()
    for s in range(0, len(x), batch_size):
        parts.append(sim.run(x[s:s + batch_size], tau, T, **run_kw))
        if progress is not None:
            progress(len(parts[-1].outputs[0]))
    return SimResult.concatenate(parts), time.perf_counter() - t0


def evaluate(model, x_raw, y, tau: int, T: int, dtype=np.float32, mask_eps: float = DEFAULT_MASK_EPS,
             batch_size: int = 64, progress=None, simulator: Simulator | None = None,
             threads: int | None = None, mask_rule: str = DEFAULT_MASK_RULE) -> Evaluation:
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
    threads : int, optional
        Threads of the ANN pass (default: ``numba.get_num_threads()``, which the
        SNN uses; see :func:`srp_np.threads.set_threads`). Results do not depend on it.
    """
    import numba

    t_start = time.perf_counter()
    threads = numba.get_num_threads() if threads is None else int(threads)
    x = prepare_inputs(model, x_raw)
    y = np.asarray(y)
    # refused before the simulator is built (no kernel compilation for a run that cannot fit): all
    # batches' results are kept (T×N×classes outputs, joined at the end) on top of one batch's run
    check_run_memory(model, dtype if simulator is None else simulator.dtype, min(len(x), batch_size), tau, T,
                     extra=2 * 8 * max(0, int(T)) * len(x) * model.num_classes)
    sim = simulator or Simulator(model, dtype)
    t0 = time.perf_counter()
    logits = ann_logits(model, x, threads=threads)
    ann_seconds = time.perf_counter() - t0
    res, seconds = simulate_batches(sim, x, tau, T, batch_size, progress, mask_eps=mask_eps, mask_rule=mask_rule)
    from .counts import RunCounts

    counts = RunCounts.from_result(res, y, logits)
    ev = Evaluation(tau=int(tau), T=int(T), ann_accuracy=counts.ann_accuracy, accuracy=counts.accuracy(),
                    result=res, ann_logits=logits, y=y, seconds=seconds,
                    dtype=np.dtype(sim.dtype).name, mask_eps=float(mask_eps), ann_seconds=ann_seconds,
                    seconds_total=time.perf_counter() - t_start, threads=threads, mask_rule=mask_rule)
    ev.__dict__["_counts"] = counts
    return ev


#: Images per block of a streamed evaluation for inputs of at most 3×64×64 values: the ANN's batch (so its
#: BLAS calls, and their last bits, are those of :func:`evaluate` on the same images).
BLOCK = 256


def block_size(model) -> int:
    """Images per block of a streamed evaluation (and per distributed task): :data:`BLOCK` for inputs of at
    most 3×64×64 values, else the largest power of two ≤ BLOCK·3·64·64 / (C·H·W) (16 for 3×224×224), so
    that one block's ANN pass stays about as large as 256 small images'. A power of two ≤ 256 divides the
    shards' blocks of 256 images, so shards and tasks cut the same blocks as a single run."""
    import math

    values = math.prod(model.input_shape)
    if values <= 3 * 64 * 64:
        return BLOCK
    return max(1, 2 ** int(math.floor(math.log2(max(1.0, BLOCK * 3 * 64 * 64 / values)))))


def block_counts(model, sim, x_raw, y, tau: int, T: int, mask_eps: float = DEFAULT_MASK_EPS, batch_size: int = 64,
                 threads: int | None = None, progress=None, keep_outputs: bool = False,
                 ann_batch: int | None = None, mask_rule: str = DEFAULT_MASK_RULE):
    """Counts of raw images: the ANN in batches of ``ann_batch`` (default: all at once; :func:`block_size`
    in a streamed evaluation, several batches computed at once on ``threads`` threads), the SNN in batches
    of ``batch_size``.

    Returns ``(RunCounts, ann_seconds, snn_seconds, outputs)`` with ``outputs`` =
    ``(T×n×K outputs float32, n×K ANN logits float32)`` when ``keep_outputs``, else None.
    """
    from .counts import RunCounts

    x = prepare_inputs(model, x_raw)
    y = np.asarray(y)
    t0 = time.perf_counter()
    logits = ann_logits(model, x, batch_size=max(1, int(ann_batch or len(x))), threads=threads)
    ann_s = time.perf_counter() - t0
    res, snn_s = simulate_batches(sim, x, tau, T, batch_size, progress, mask_eps=mask_eps, mask_rule=mask_rule)
    outs = (res.outputs.astype(np.float32), logits.astype(np.float32)) if keep_outputs else None
    return RunCounts.from_result(res, y, logits), ann_s, snn_s, outs


def evaluate_source(model, source, tau: int, T: int, dtype=np.float32, mask_eps: float = DEFAULT_MASK_EPS,
                    batch_size: int = 64, progress=None, threads: int | None = None,
                    keep_outputs: bool = False, engine=None, mask_rule: str = DEFAULT_MASK_RULE) -> Evaluation:
    """:func:`evaluate` on a data source read block by block (memory bounded by one block).

    Groups of ``threads`` blocks of :func:`block_size` images are read from ``source``
    (:class:`srp_np.datasets.ArraySource` or :class:`~srp_np.datasets.ImageFolderSource`,
    which decodes only the block's files), normalised, run through the ANN and the SNN,
    reduced to exact counts (:class:`srp_np.counts.RunCounts`) and dropped. The figures
    equal :func:`evaluate`'s on the same images bit for bit (same ANN batches, the blocks of a
    group computed at once on one thread each as :func:`ann_logits` does; the SNN does not
    depend on batching). Memory: one group (``threads`` blocks). ``keep_outputs`` also keeps the T×N×K outputs and N×K ANN
    logits (for ``--save-outputs``). ``engine``: a :class:`srp_np.distributed.DaskEngine`
    to run the blocks as tasks on a cluster instead of here.
    """
    import numba

    t_start = time.perf_counter()
    threads = numba.get_num_threads() if threads is None else int(threads)
    n = len(source)
    if n == 0:
        from .errors import SrpError

        raise SrpError("no images to evaluate")
    if engine is not None:
        counts, ann_s, snn_s, outs = engine.evaluate(model, source, tau, T, dtype=dtype, mask_eps=mask_eps,
                                                     batch_size=batch_size, progress=progress,
                                                     keep_outputs=keep_outputs, mask_rule=mask_rule)
        dt_name = np.dtype(dtype).name
    else:
        # one block's run on top of its outputs; refused before the simulator is built
        block = block_size(model)
        check_run_memory(model, dtype, min(n, batch_size), tau, T,
                         extra=2 * 8 * max(0, int(T)) * min(n, block * max(1, threads)) * model.num_classes)
        sim = Simulator(model, dtype)
        dt_name = np.dtype(sim.dtype).name
        counts, ann_s, snn_s, outs = None, 0.0, 0.0, []
        for x_raw, y in source.batches(block * max(1, threads)):
            c, a, s, o = block_counts(model, sim, x_raw, y, tau, T, mask_eps, batch_size, threads, progress,
                                      keep_outputs, ann_batch=block, mask_rule=mask_rule)
            counts = c if counts is None else counts + c
            ann_s, snn_s = ann_s + a, snn_s + s
            outs.append(o)
    logits = np.zeros((0, model.num_classes))
    res = SimResult(outputs=np.zeros((int(T), 0, model.num_classes)), tau=int(tau), T=int(T))
    if keep_outputs:
        res.outputs = np.concatenate([o[0] for o in outs], axis=1)
        logits = np.concatenate([o[1] for o in outs])
    ev = Evaluation(tau=int(tau), T=int(T), ann_accuracy=counts.ann_accuracy, accuracy=counts.accuracy(),
                    result=res, ann_logits=logits, y=np.asarray(source.labels), seconds=snn_s, dtype=dt_name,
                    mask_eps=float(mask_eps), ann_seconds=ann_s, seconds_total=time.perf_counter() - t_start,
                    threads=threads, mask_rule=mask_rule)
    ev.__dict__["_counts"] = counts
    return ev
