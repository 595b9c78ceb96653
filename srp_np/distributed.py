"""A Dask engine: blocks of images (and sweep cells) as tasks on a local or remote cluster.

Extra ``[dask]`` (``dask[distributed]``). ``DaskEngine(workers=N)`` starts a local
cluster of N worker processes on the loopback interface; ``DaskEngine(scheduler=
"tcp://HOST:PORT")`` uses a running one. Then:

* the model is sent once to every worker, in a worker plugin (so a worker that joins or is
  restarted later gets it too; scattered data would not do: Dask keeps one replica of it and
  loses it with the worker that holds it), and each worker keeps one
  :class:`srp_np.simulator.Simulator` per model and dtype;
* every worker sets its Numba threads (``NUMBA_NUM_THREADS`` in the environment of
  the local workers, and ``numba.set_num_threads`` in every worker): Dask workers otherwise
  keep Numba at all the machine's cores, so N workers would each run one thread per core;
* the Numba kernels are compiled (or loaded from the on-disk cache) by one worker per host
  first, then by the others: several processes compiling one cache at the same moment
  can crash;
* one task per block of images (:func:`srp_np.evaluate.block_size`, the same blocks a
  single run makes) or per sweep cell (τ) and block. An image folder is decoded inside the
  task, on the worker: a task carries the block's file names, not its pixels;
* a task returns exact counts (:mod:`srp_np.counts`), summed on the client, so the figures
  equal a single process's bit for bit whatever the number of workers and the order the
  tasks finish in. A worker that dies mid-run: Dask runs its tasks again elsewhere (a task
  is pure), and the figures do not change.
"""
from __future__ import annotations

import os
import time

import numpy as np

from .errors import SrpError

_SIMULATORS = {}          # per worker process: (model SHA-256, dtype) → Simulator
_MODELS = {}              # per worker process: model SHA-256 → Model (set by _ModelPlugin)


def _need_dask():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise SrpError("the Dask engine needs dask.distributed: pip install 'srp-np[dask]'") from None


# ----------------------------------------------------------------------------- worker side

def _set_threads(n: int) -> int:
    """Numba threads of this worker (capped at NUMBA_NUM_THREADS); BLAS follows in the tasks."""
    import numba

    n = max(1, min(int(n), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPlugin
except ImportError:       # the engine refuses to start without dask.distributed (_need_dask)
    _WorkerPlugin = object


class _ModelPlugin(_WorkerPlugin):
    """Hands the model to every worker, present and future (a restarted one too), and sets its Numba threads."""

    def __init__(self, model, key: str, threads: int):
        self.model, self.key, self.threads = model, key, int(threads)

    def setup(self, worker):
        _MODELS.clear()
        _MODELS[self.key] = self.model
        _set_threads(self.threads)

    def teardown(self, worker):
        _MODELS.pop(self.key, None)
        _SIMULATORS.clear()


def _model(key: str):
    try:
        return _MODELS[key]
    except KeyError:
        raise SrpError("this Dask worker has not received the model (its plugin did not run)") from None


def _simulator(model, dtype):
    from .simulator import Simulator
    from .store import model_sha256

    key = (model_sha256(model), np.dtype(dtype).name)
    sim = _SIMULATORS.get(key)
    if sim is None:
        _SIMULATORS.clear()          # one model at a time per worker
        sim = _SIMULATORS[key] = Simulator(model, dtype)
    return sim


def _warm(key, dtype, threads: int) -> dict:
    """Set the threads and compile (or load from the cache) the kernels this model needs, on one image."""
    model = _model(key)
    n = _set_threads(threads)
    t0 = time.perf_counter()
    sim = _simulator(model, dtype)
    sim.run(np.zeros((1,) + tuple(model.input_shape), np.float32), 1, 1)
    return {"pid": os.getpid(), "threads": n, "seconds": time.perf_counter() - t0}


def _block_task(key, block, tau: int, T: int, dtype, mask_eps: float, batch_size: int, threads: int,
                keep_outputs: bool, mask_rule: str = "authors"):
    """One block of a run: read (decode) the block's images here, then :func:`srp_np.evaluate.block_counts`."""
    from .evaluate import block_counts
    from .threads import blas_threads

    model = _model(key)
    n = _set_threads(threads)
    x_raw, y = block.read()
    with blas_threads(n):
        counts, ann_s, snn_s, outs = block_counts(model, _simulator(model, dtype), x_raw, y, tau, T, mask_eps,
                                                  batch_size, n, None, keep_outputs, mask_rule=mask_rule)
    return counts.to_json(), ann_s, snn_s, outs


def _cell_task(key, block, tau: int, T: int, dtype, mask_eps: float, threads: int, mask_rule: str = "authors"):
    """One sweep cell on one block: correct predictions after t = 1..T (the block is normalised already)."""
    model = _model(key)
    _set_threads(threads)
    x, y = block
    res = _simulator(model, dtype).run(x, tau, T, mask_eps=mask_eps, record=False, mask_rule=mask_rule)
    return [int(v) for v in (res.predictions() == np.asarray(y)[None, :]).sum(axis=1)]


# ----------------------------------------------------------------------------- client side

class DaskEngine:
    """Run blocks of work as Dask tasks (see the module docstring).

    Parameters
    ----------
    workers : int, optional
        Start a local cluster of this many worker processes on 127.0.0.1.
    scheduler : str, optional
        Address of a running scheduler (``tcp://HOST:PORT``). Exactly one of the two.
    threads : int, optional
        Numba threads per worker. Default: for a local cluster, the CPUs available to this
        process divided among the workers (at least 1); for a remote one, 1.
    retries : int
        Extra attempts for a task that raises (a worker that dies is handled by Dask itself).
    connect_timeout : str
        How long to try to reach ``scheduler``.
    """

    def __init__(self, workers: int | None = None, scheduler: str | None = None, threads: int | None = None,
                 retries: int = 2, connect_timeout: str = "10s"):
        _need_dask()
        if (workers is None) == (scheduler is None):
            raise SrpError("give either a number of local workers or a scheduler address, not both")
        from distributed import Client, LocalCluster

        self.cluster = None
        if workers is not None:
            if int(workers) < 1:
                raise SrpError(f"`workers` must be >= 1, got {workers}")
            from .threads import available_cores

            self.threads = int(threads) if threads else max(1, available_cores() // int(workers))
            env = {"NUMBA_NUM_THREADS": str(self.threads), "OMP_NUM_THREADS": str(self.threads),
                   "OPENBLAS_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
            try:
                self.cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                            host="127.0.0.1", dashboard_address=None, env=env,
                                            silence_logs=50)
                self.client = Client(self.cluster)
            except Exception as e:  # noqa: BLE001 - cannot start processes or bind the loopback
                self.close()
                raise SrpError(f"cannot start a local Dask cluster ({type(e).__name__}: {e})") from None
        else:
            self.threads = int(threads) if threads else 1
            try:
                self.client = Client(scheduler, timeout=connect_timeout)
            except Exception as e:  # noqa: BLE001 - unreachable, refused, bad address
                raise SrpError(f"cannot reach the Dask scheduler {scheduler} ({type(e).__name__}: {e})") from None
        self.retries = int(retries)
        self._model_key = None
        self._plugin = None

    # -- lifecycle
    def close(self) -> None:
        if self._plugin is not None and self.cluster is None:     # a remote cluster: leave nothing behind
            try:
                self.client.unregister_worker_plugin(self._plugin)
            except Exception:  # noqa: BLE001 - the cluster may be gone
                pass
        for obj in (getattr(self, "client", None), self.cluster):
            if obj is not None:
                try:
                    obj.close()
                except Exception:  # noqa: BLE001 - closing a half-started cluster
                    pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info()["workers"])

    def worker_pids(self) -> dict:
        """``{worker address: pid}`` (for tests and diagnostics)."""
        return self.client.run(os.getpid)

    # -- setup
    def prepare(self, model, dtype) -> None:
        """Send the model to every worker once and warm each worker's kernels, one worker per host first."""
        from .store import model_sha256

        key = (model_sha256(model), np.dtype(dtype).name)
        if self._model_key == key:
            return
        try:   # every local worker (or at least one remote) is up before the model is broadcast to them
            self.client.wait_for_workers(len(self.cluster.workers) if self.cluster is not None else 1, timeout=120)
        except Exception as e:  # noqa: BLE001 - TimeoutError and the like
            raise SrpError(f"no Dask worker came up ({type(e).__name__}: {e})") from None
        mkey = key[0]
        if self._plugin is not None and self.cluster is None:
            self.client.unregister_worker_plugin(self._plugin)
        self._plugin = f"srp-np-model-{mkey[:16]}"
        self.client.register_plugin(_ModelPlugin(model, mkey, self.threads), name=self._plugin)
        info = self.client.scheduler_info()["workers"]
        by_host = {}
        for addr, w in info.items():
            by_host.setdefault(w.get("host", addr), []).append(addr)
        first = [addrs[0] for addrs in by_host.values()]
        rest = [a for addrs in by_host.values() for a in addrs[1:]]
        for group in (first, rest):       # compile once per host, then load the cache everywhere else
            futs = [self.client.submit(_warm, mkey, dtype, self.threads, workers=[a],
                                       allow_other_workers=False, pure=False) for a in group]
            self.client.gather(futs)
        self._model_key = key

    def _map(self, fn, items: list, progress=None, weights=None, on_result=None) -> list:
        """Submit ``fn(model, *item)`` for each item; results in item order. As each task finishes:
        ``on_result(i, result)`` and ``progress(weights[i])``."""
        from distributed import as_completed

        import warnings

        with warnings.catch_warnings():      # the blocks travel inside the tasks on purpose (see sweep_cells)
            warnings.filterwarnings("ignore", message="Sending large graph")
            futs = [self.client.submit(fn, self._model_key[0], *item, pure=False, retries=self.retries)
                    for item in items]
        index = {f.key: i for i, f in enumerate(futs)}
        out = [None] * len(futs)
        try:
            for fut in as_completed(futs):
                i = index[fut.key]
                out[i] = fut.result()
                if on_result is not None:
                    on_result(i, out[i])
                if progress is not None:
                    progress(weights[i] if weights is not None else 1)
        except KeyboardInterrupt:
            self.client.cancel(futs)
            raise
        except SrpError:
            self.client.cancel(futs)
            raise
        return out

    # -- work
    def evaluate(self, model, source, tau: int, T: int, dtype=np.float32, mask_eps: float = 1e-3,
                 batch_size: int = 64, progress=None, keep_outputs: bool = False, mask_rule: str = "authors"):
        """A streamed evaluation (:func:`srp_np.evaluate.evaluate_source`) with one task per block.

        Returns ``(RunCounts, ann_seconds, snn_seconds, outputs)`` as the single-process loop does
        (the seconds are sums over the tasks: compute time)."""
        from .counts import RunCounts
        from .evaluate import block_size

        self.prepare(model, dtype)
        n, block = len(source), block_size(model)
        items = [(source.take(slice(s, min(n, s + block))), int(tau), int(T), dtype, float(mask_eps),
                  int(batch_size), self.threads, bool(keep_outputs), mask_rule) for s in range(0, n, block)]
        weights = [len(it[0]) for it in items]
        results = self._map(_block_task, items, progress, weights)
        counts = None
        ann_s = snn_s = 0.0
        outs = []
        for c, a, s, o in results:
            c = RunCounts.from_json(c)
            counts = c if counts is None else counts + c
            ann_s, snn_s = ann_s + a, snn_s + s
            outs.append(o)
        return counts, ann_s, snn_s, outs

    def sweep_cells(self, model, x, y, taus, T: int, dtype, mask_eps: float, block: int, todo: list,
                    progress=None, on_done=None, mask_rule: str = "authors") -> dict:
        """Correct-prediction counts of the sweep cells ``todo`` = [(τ, start)], one task each;
        ``on_done((τ, start), counts)`` as each finishes (e.g. to store it)."""
        self.prepare(model, dtype)
        n = len(x)
        # the block travels inside each task (not scattered: scattered data that lives on one worker is
        # lost with it, and the tasks that need it would fail instead of being run again)
        items = [((x[s:s + block], np.asarray(y[s:s + block])), int(tau), int(T), dtype, float(mask_eps),
                  self.threads, mask_rule) for tau, s in todo]
        weights = [min(n, s + block) - s for _, s in todo]
        cb = None if on_done is None else (lambda i, r: on_done(todo[i], r))
        results = self._map(_cell_task, items, progress, weights, cb)
        return dict(zip(todo, results))
