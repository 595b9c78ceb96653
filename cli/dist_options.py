"""Options shared by the commands that work beyond one process: ``--shard i/N``, ``--store``,
``--workers``, ``--scheduler`` (run, sweep, analyze, report), and their helpers.

The logic lives in :mod:`srp_np.shard`, :mod:`srp_np.counts`, :mod:`srp_np.store` and
:mod:`srp_np.distributed`; this module only wires options. ``srp-np merge`` is in :mod:`.dist_cmds`.
"""
from __future__ import annotations

import click

from srp_np.errors import SrpError

from .common import write_json

shard_option = click.option(
    "--shard", default=None, metavar="i/N",
    help="Evaluate only shard i of N (0 <= i < N) of the images: contiguous blocks of 256 images, the same split "
         "on every machine. Needs --json OUT, which receives the shard's exact counts; `srp-np merge` joins the N "
         "files into exactly the figures of a single run (e.g. a SLURM job array: --shard "
         "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT).")

store_option = click.option(
    "--store", "store_dir", type=click.Path(file_okay=False), default=None,
    help="Folder of finished work: each finished cell (one τ on one batch of images) is saved there, keyed by the "
         "model's and the batch's SHA-256 and the settings, and reused by a later run with the same key, so an "
         "interrupted sweep resumes without redoing finished cells. Created if missing.")


workers_option = click.option(
    "--workers", type=click.IntRange(min=1), default=None,
    help="Run on a local Dask cluster of N worker processes (loopback only; extra [dask]): one task per block of "
         "images (sweep: per τ and block). Each worker gets --threads Numba threads (default: the available "
         "cores / N). Figures identical to a single process.")
scheduler_option = click.option(
    "--scheduler", default=None, metavar="tcp://HOST:PORT",
    help="Run on a running Dask cluster (dask scheduler + dask worker, started with NUMBA_NUM_THREADS set; "
         "extra [dask]); --threads sets each worker's Numba threads (default 1).")


def open_engine(workers, scheduler, threads):
    """A :class:`srp_np.distributed.DaskEngine` for ``--workers``/``--scheduler`` (a context), or a null context."""
    import contextlib

    if workers is None and scheduler is None:
        return contextlib.nullcontext(None)
    if workers is not None and scheduler is not None:
        raise SrpError("--workers starts a local cluster, --scheduler uses a running one: give only one")
    if scheduler is not None and str(scheduler).strip() == "":
        raise SrpError("--scheduler needs an address, e.g. tcp://127.0.0.1:8786")
    from srp_np.distributed import DaskEngine

    return DaskEngine(workers=workers, scheduler=scheduler, threads=threads)


class ShardContext:
    """What a sharded command needs to write its partial result."""

    def __init__(self, shard, span, n_total, data):
        self.shard, self.span, self.n_total, self.data = shard, span, n_total, data

    def describe(self) -> str:
        i, n = self.shard
        return f"shard {i}/{n}: images {self.span[0]}..{self.span[1] - 1} of {self.n_total}"


def check_shard_outputs(shard, json_out, plot=None):
    """Refuse a sharded command that would not write its partial result (before any work)."""
    if shard is None:
        return None
    from srp_np.shard import parse_shard

    spec = parse_shard(shard)
    if not json_out or json_out == "-":
        raise SrpError("--shard needs --json OUT.json: the file that receives the shard's counts for `srp-np merge`")
    if plot:
        raise SrpError("--plot cannot be drawn from one shard: pass --plot to `srp-np merge`")
    return spec


def take_shard(x, y, origin: str, spec, unit: int):
    """Slice the images of shard ``spec`` = (i, N); the whole selection's SHA-256 identifies the data.

    Returns ``(x, y, origin, ctx)``; ``ctx`` is None when ``spec`` is None.
    """
    if spec is None:
        return x, y, origin, None
    from srp_np.shard import shard_range
    from srp_np.store import data_sha256

    n = len(x)
    a, b = shard_range(n, spec[0], spec[1], unit)
    data = {"origin": origin, "images": int(n), "sha256": data_sha256(x, y)}
    ctx = ShardContext(spec, (a, b), n, data)
    return x[a:b], y[a:b], f"{origin}, {ctx.describe()}", ctx


def take_shard_source(src, origin: str, spec, unit: int):
    """:func:`take_shard` for a data source (:mod:`srp_np.datasets`): the shard's images are not read here."""
    if spec is None:
        return src, origin, None
    from srp_np.shard import shard_range

    n = len(src)
    a, b = shard_range(n, spec[0], spec[1], unit)
    ctx = ShardContext(spec, (a, b), n, {"origin": origin, "images": int(n), "sha256": src.fingerprint()})
    return src.take(slice(a, b)), f"{origin}, {ctx.describe()}", ctx


def write_partial(json_out, command: str, ctx: ShardContext, model, settings: dict, counts: dict,
                  seconds: dict | None = None) -> None:
    from srp_np.shard import partial

    write_json(json_out, partial(command, ctx.shard, ctx.span, ctx.n_total, model, ctx.data, settings, counts,
                                 seconds))


def open_store(store_dir):
    if store_dir is None:
        return None
    from srp_np.store import ResultStore

    return ResultStore(store_dir)


def report_store(store) -> None:
    if store is not None:
        click.echo(f"store {store.root}: reused {store.hits} finished unit(s), computed {store.misses}", err=True)


# ----------------------------------------------------------------------------- merge
