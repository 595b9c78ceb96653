"""Work beyond one process: ``--shard i/N`` (run, sweep, analyze, report), ``srp-np merge``, ``--store``.

The logic lives in :mod:`srp_np.shard`, :mod:`srp_np.counts` and :mod:`srp_np.store`;
this module only wires options. Registered on the main group by :func:`register`.
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

def _load_merge_model(merged, weights):
    from srp_np.model import load_model
    from srp_np.store import model_sha256

    path = weights if weights is not None else merged["model"].get("path")
    if not path:
        raise SrpError("the partial results do not say where the model is: pass --weights M.npz")
    model = load_model(path)
    if model_sha256(model) != merged["model"]["sha256"]:
        raise SrpError(f"{path} is not the model the shards ran (SHA-256 differs): pass the right --weights")
    return model


def merged_figures(merged: dict, model) -> dict:
    """The JSON a single run of the merged command writes (wall times: sums over the shards)."""
    cmd, st, counts, sec = merged["command"], merged["settings"], merged["counts"], merged["seconds"]
    data = merged["data"]["origin"]
    rule = st.get("mask_rule", "authors")       # parts written before the mask rule was an option
    if cmd == "run":
        from srp_np.costs import cost_report
        from srp_np.evaluate import run_figures

        n = counts.n_images
        ann, snn, tot = sec.get("ann", 0.0), sec.get("snn", 0.0), sec.get("total", 0.0)
        rate = lambda s: n / s if s > 0 else float("inf")
        out = {**run_figures(counts, st["dtype"], st["mask_eps"], rule),
               "images_per_second": rate(snn), "seconds": snn, "ann_seconds": ann, "snn_seconds": snn,
               "other_seconds": max(0.0, tot - ann - snn), "seconds_total": tot, "snn_images_per_second": rate(snn),
               "images_per_second_end_to_end": rate(tot), "threads": None,
               "costs": cost_report(model, counts), "model": model.path, "data": data}
    elif cmd == "sweep":
        from srp_np.sweep import sweep_figures

        out = sweep_figures({**counts, "seconds": sec.get("tau", {})}, st["mask_eps"], rule)
        out.update(model=model.path, data=data, arch=model.graph.get("arch"), dtype=st["dtype"])
    elif cmd == "analyze":
        from srp_np.analysis import analysis_figures

        out = analysis_figures(model, counts, st["tau"], st["T"], rtol=st["rtol"], mask_eps=st["mask_eps"],
                               mask_rule=rule)
        out.update(model=model.path, data=data, arch=model.graph.get("arch"))
    else:
        from srp_np.costs import cost_report

        out = cost_report(model, counts, e_ac=st["e_ac"] * 1e-12, e_mac=st["e_mac"] * 1e-12)
        out.update(model=model.path, data=data, accuracy=float(counts.accuracy()[-1]), mask_eps=st["mask_eps"],
                   mask_rule=rule)
    out["shards"] = merged["shards"]
    return out


@click.command("merge")
@click.argument("parts", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--weights", "-w", type=click.Path(dir_okay=False), default=None,
              help="The model file, if it is no longer where the shards read it (its SHA-256 must match).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Write the merged figures (the JSON a single run writes) here ('-': stdout, no table).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="sweep: the accuracy-vs-latency plot; analyze: the cases per layer (PNG).")
@click.option("--quiet", "-q", is_flag=True, help="No table.")
def merge_cmd(parts, weights, json_out, plot, quiet):
    """Join the partial results of `--shard 0/N` ... `--shard N-1/N` into the figures of a single run.

    The parts must come from the same command, settings, model and data, and
    every shard 0..N-1 must be given exactly once. The counts are summed
    exactly, so every figure equals the unsharded run's bit for bit; wall
    times are the sums over the shards (compute time).

    \b
    Example (SLURM job array, see docs/distributed.md):
      srp-np sweep --tau 0,4 --T 16 --shard $SLURM_ARRAY_TASK_ID/8 --json part$SLURM_ARRAY_TASK_ID.json
      srp-np merge part*.json --json sweep.json
    """
    from srp_np.shard import merge_partials, read_partial

    from .common import check_outputs

    check_outputs({"--json": json_out, "--plot": plot},
                  {"--weights": weights, **{f"partial result {p}": p for p in parts}})
    merged = merge_partials([read_partial(p) for p in parts])
    model = _load_merge_model(merged, weights)
    cmd = merged["command"]
    if plot and cmd not in ("sweep", "analyze"):
        raise SrpError(f"--plot: `{cmd}` has no plot (sweep and analyze do)")
    if merged["command"] in ("run", "report"):
        from srp_np.counts import RunCounts

        if not isinstance(merged["counts"], RunCounts):
            merged["counts"] = RunCounts.from_json(merged["counts"])
    out = merged_figures(merged, model)
    if not quiet and json_out != "-":
        _print_merged(cmd, out, model, merged)
    if plot:
        from srp_np import plots

        arch = model.graph.get("arch", "model")
        if cmd == "sweep":
            plots.plot_sweep(out, plot, title=f"{arch}: accuracy vs latency ({out['images']} images)")
        else:
            plots.plot_cases(out, plot, title=f"{arch}: unevenness error cases per IF layer "
                                              f"(T={out['T']}, {out['images']} images)")
    if json_out == "-":
        from .common import json_text

        click.echo(json_text(out))
    elif json_out:
        write_json(json_out, out)


def _print_merged(cmd, out, model, merged) -> None:
    origin = f"{merged['data']['origin']}, merged from {merged['shards']} shards"
    arch = model.graph.get("arch", "")
    if cmd == "run":
        from .run_cmd import print_run_table

        print_run_table(out, model, origin)
    elif cmd == "sweep":
        from srp_np.sweep import format_table

        click.echo(f"{arch or 'model'}: accuracy vs stage-2 steps T, {out['images']} images ({origin})")
        click.echo(format_table(out, arch))
    elif cmd == "analyze":
        from .analysis_cmds import format_analysis

        click.echo(f"{arch or 'model'}: {out['images']} images ({origin}), L={model.L}")
        click.echo(format_analysis(out))
    else:
        from .analysis_cmds import format_report

        click.echo(f"{arch or 'model'}: {out['images']} images ({origin}); "
                   f"SNN accuracy after T={out['T']}: {100 * out['accuracy']:.2f}%")
        click.echo(format_report(out))


def register(cli) -> None:
    """Add ``merge`` to the ``srp-np`` group."""
    cli.add_command(merge_cmd, "merge")


__all__ = ["shard_option", "store_option", "workers_option", "scheduler_option", "open_engine", "check_shard_outputs", "take_shard", "write_partial", "open_store",
           "report_store", "merge_cmd", "register"]
