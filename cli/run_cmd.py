"""``srp-np run``: accuracy of the converted SNN after every step, with costs."""
from __future__ import annotations

import time

import click
import numpy as np

from .common import (announce_compilation, atomic_write_bytes, batch_size_option, data_dir_option,
                     data_option, dtype_option, guard_outputs, limit_option, load_model_option,
                     mask_eps_option, mask_rule_option, parse_dtype, progress_bar, threads_option, use_threads_option, weights_option,
                     write_json)
from .common import load_source_option, subset_option
from .dist_options import (check_shard_outputs, open_engine, scheduler_option, shard_option, take_shard_source,
                         workers_option, write_partial)


def print_run_table(j: dict, model, origin) -> None:
    """The table of ``srp-np run`` from its JSON figures ``j`` (a run's, or merged shards')."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    mode = "plain QCFS conversion (τ = 0)" if j["tau"] == 0 else f"SRP, τ = {j['tau']}"
    console.print(f"[bold]{model.graph.get('arch', 'model')}[/bold]: {mode}; {j['n_images']} images ({origin}); "
                  f"{j['dtype']}")
    table = Table()
    table.add_column("t", justify="right")
    table.add_column("latency τ+t", justify="right")
    table.add_column("SNN accuracy", justify="right")
    table.add_column("Δ vs ANN", justify="right")
    for t, (lat, acc) in enumerate(zip(j["latency"], j["accuracy"]), start=1):
        table.add_row(str(t), str(lat), f"{100 * acc:.2f}%", f"{100 * (acc - j['ann_accuracy']):+.2f}")
    console.print(table)
    console.print(f"ANN (QCFS, L={model.L}) accuracy: {100 * j['ann_accuracy']:.2f}%")
    console.print(f"spikes/image: {j['spikes_per_image']:,.0f}   synaptic ops/image: {j['sops_per_image']:,.0f}")
    n = j["threads"]
    threads = f"{n} thread{'s' if n != 1 else ''}" if n is not None else f"summed over {j.get('shards')} shards"
    console.print(f"time: ANN {j['ann_seconds']:,.1f} s, SNN {j['snn_seconds']:,.1f} s "
                  f"({j['snn_images_per_second']:,.1f} img/s), end to end {j['seconds_total']:,.1f} s "
                  f"({j['images_per_second_end_to_end']:,.1f} img/s), {threads}", soft_wrap=True)


@click.command()
@weights_option
@data_option
@data_dir_option
@click.option("--tau", type=click.IntRange(min=0), default=4, show_default=True,
              help="Stage-1 steps used to read the residual membrane; 0 = plain QCFS conversion.")
@click.option("--T", "T", type=click.IntRange(min=1), default=8, show_default=True,
              help="Stage-2 steps (reported t = 1..T).")
@batch_size_option
@dtype_option
@mask_eps_option
@mask_rule_option
@limit_option
@subset_option
@threads_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the figures to this JSON file.")
@click.option("--save-outputs", type=click.Path(dir_okay=False), default=None,
              help="Write outputs (T×N×K mean outputs), ann (N×K logits) and y to this .npz.")
@click.option("--quiet", "-q", is_flag=True, help="No table; only errors (use with --json).")
@shard_option
@workers_option
@scheduler_option
def run_cmd(weights, data, data_dir, tau, T, batch_size, dtype, mask_eps, mask_rule, limit, subset, threads, json_out,
            save_outputs, quiet, shard, workers, scheduler):
    """Simulate the SNN with SRP and report accuracy after every step.

    Runs τ stage-1 steps, silences every neuron whose residual membrane
    v(τ) ≤ ε·θ, resets all membranes to θ/2 and runs T stage-2 steps
    (Algorithm 1 of Hao et al., AAAI 2023). Latency is τ + t.

    Reports the ANN and SNN wall times separately, and end to end (loading
    the model and data included): SNN img/s (the JSON's images_per_second)
    and end-to-end img/s.

    \b
    Examples:
      srp-np run                                   # shipped model and test images
      srp-np run --weights weights/vgg16_fmnist.npz --tau 4 --T 16
      srp-np run --tau 0 --T 32 --json plain.json  # plain conversion
    """
    from srp_np.evaluate import evaluate_source
    from srp_np.shard import shard_unit

    t_start = time.perf_counter()
    dt = parse_dtype(dtype)
    guard_outputs({"--json": json_out, "--save-outputs": save_outputs}, weights=weights, data=data)
    spec = check_shard_outputs(shard, json_out)
    with use_threads_option(threads) as n_threads:
        model = load_model_option(weights)
        src, origin = load_source_option(model, data, data_dir, limit, subset)
        src, origin, sctx = take_shard_source(src, origin, spec, shard_unit())
        announce_compilation(dt)
        with open_engine(workers, scheduler, threads) as engine, \
                progress_bar(len(src), f"simulating τ={tau} T={T}") as bar:
            ev = evaluate_source(model, src, tau, T, dtype=dt, mask_eps=mask_eps, batch_size=batch_size,
                                 progress=bar.update, threads=n_threads, keep_outputs=bool(save_outputs),
                                 engine=engine, mask_rule=mask_rule)
            if engine is not None:
                ev.threads = engine.threads
                ev.extra["workers"] = engine.n_workers
        from srp_np.costs import cost_report

        ev.extra["costs"] = cost_report(model, ev.counts)
    ev.seconds_total = time.perf_counter() - t_start
    ev.extra["model"] = model.path
    ev.extra["data"] = origin
    if not quiet:
        print_run_table(ev.to_dict(), model, origin)
    if sctx is not None:
        write_partial(json_out, "run", sctx, model, {"tau": ev.tau, "T": ev.T, "dtype": ev.dtype,
                                                     "mask_eps": ev.mask_eps, "mask_rule": ev.mask_rule},
                      ev.counts.to_json(),
                      {"ann": ev.ann_seconds, "snn": ev.snn_seconds, "total": ev.total_seconds})
    elif json_out:
        write_json(json_out, ev.to_dict())
    if save_outputs:
        outs = ev.result.outputs.astype(np.float32)

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, outputs=outs, ann=ev.ann_logits.astype(np.float32), y=ev.y)

        atomic_write_bytes(save_outputs, write)
