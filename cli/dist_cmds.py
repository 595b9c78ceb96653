"""``srp-np merge``: join the partial results of ``--shard i/N`` runs (options in :mod:`.dist_options`).

The logic lives in :mod:`srp_np.shard` and :mod:`srp_np.counts`. Registered on the main group by
:func:`register`.
"""
from __future__ import annotations

import click

from srp_np.errors import SrpError

from .common import write_json

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
            from srp_np.sweep import source_name

            plots.plot_sweep(out, plot, title=f"{arch}: accuracy vs latency ({out['images']} images)",
                             source=source_name(model.graph))
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
        from srp_np.sweep import format_table, source_name

        click.echo(f"{arch or 'model'}: accuracy vs stage-2 steps T, {out['images']} images ({origin})")
        click.echo(format_table(out, arch, source_name(model.graph)))
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


__all__ = ["merge_cmd", "merged_figures", "register"]
