"""``srp-np verify``: a certificate that the simulation of a model on its images is right."""
from __future__ import annotations

import click

from .common import (announce_compilation, data_dir_option, data_option, guard_outputs,
                     load_data_option, load_model_option, mask_eps_option, mask_rule_option, progress_bar, threads_option,
                     use_threads_option, weights_option, write_json)

#: Exit status when an exact check fails (2 stays reserved for bad input).
EXIT_FAILED = 3


def _print_certificate(cert, model, origin) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{model.graph.get('arch', 'model')}[/bold] ({cert.model or 'model'}): {cert.n_images} "
                  f"images ({origin}); τ = {cert.tau}, T = {cert.T}, L = {cert.L}, "
                  + (f"mask v(τ) > ε·θ, ε = {cert.mask_eps:g}" if cert.mask_rule == "authors" else "mask v(τ) ≥ 0"),
                  soft_wrap=True)
    table = Table()
    table.add_column("check")
    table.add_column("kind")
    table.add_column("result")
    table.add_column("figure", overflow="fold")
    for c in cert.checks.values():
        verdict = "[green]pass[/green]" if c.passed else ("[red]FAIL[/red]" if c.exact else "[yellow]differs[/yellow]")
        table.add_row(c.title, "exact" if c.exact else "informative", verdict, c.figure)
    console.print(table)
    for c in cert.checks.values():
        if c.passed:
            continue
        bad = [k for k, v in c.tally.items() if not k.startswith("_") and any(
            v.get(f, 0) for f in ("differing_spikes", "differing_spikes_stage1", "differing_mask", "differing_stage1",
                                  "differing_stage2", "differing_v_tau", "failing", "violations"))]
        if bad:
            console.print(f"{c.key}: failing in {', '.join(bad)}", soft_wrap=True)
    if cert.snn_accuracy is not None:
        console.print(f"float64 SNN accuracy after T = {cert.T} steps on these images: {100 * cert.snn_accuracy:.2f}%")
    verdict = "[green]certificate: every exact check passed[/green]" if cert.passed else \
        "[red]certificate: an exact check FAILED[/red]"
    console.print(f"{verdict} ({cert.seconds:.1f} s)")


@click.command("verify")
@weights_option
@data_option
@data_dir_option
@click.option("--images", "-n", type=click.IntRange(min=1), default=16, show_default=True,
              help="Verify the first N images of the data (the dense float64 reference is slow).")
@click.option("--tau", type=click.IntRange(min=0), default=4, show_default=True,
              help="Stage-1 steps (SRP); 0 = plain conversion.")
@click.option("--T", "T", type=click.IntRange(min=1), default=8, show_default=True, help="Stage-2 steps.")
@mask_eps_option
@mask_rule_option
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images verified at once (memory; results do not depend on it).")
@threads_option
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Write the certificate (every figure, per layer) to this JSON file.")
@click.option("--quiet", "-q", is_flag=True, help="No table (use with --json; the exit status still tells).")
def verify_cmd(weights, data, data_dir, images, tau, T, mask_eps, mask_rule, batch_size, threads, json_out, quiet):
    """Certify the simulation of a model on its images (exit 3 if an exact check fails).

    \b
    Exact checks (float64):
      1. the event-driven simulator equals the dense reference spike for
         spike, at (τ, T) and at (0, L): differing spikes, 0 expected;
      2. the first IF layer (constant input y) emits Eq. 8's counts,
         clip(⌊(t·y + θ/2)/θ⌋, 0, t), in both stages;
      3. charge balance θ·N + v(T) = v(0) + Σx (Eq. 4) for every neuron:
         largest residual;
      4. Theorem 1 on every neuron of every layer with τ = 0, T = L:
         violations, 0 expected.
    Informative: 5. float32 predictions against float64.

    \b
    Examples:
      srp-np verify                                  # shipped ResNet-20, 16 images
      srp-np verify --weights my.npz --data my.npz --images 64 --json cert.json
    """
    from srp_np.verify import certify

    guard_outputs({"--json": json_out}, weights=weights, data=data)
    with use_threads_option(threads):
        model = load_model_option(weights)
        x_raw, y, origin = load_data_option(model, data, data_dir, images)
        from srp_np.evaluate import prepare_inputs

        x = prepare_inputs(model, x_raw)
        announce_compilation(None)
        with progress_bar(len(x), f"verifying τ={tau} T={T}") as bar:
            cert = certify(model, x, tau, T, mask_eps=mask_eps, y=y, chunk=batch_size, progress=bar.update,
                           mask_rule=mask_rule)
    if not quiet:
        _print_certificate(cert, model, origin)
    if json_out:
        d = cert.to_dict()
        d["data"] = origin
        write_json(json_out, d)
    if not cert.passed:
        failed = ", ".join(c.key for c in cert.checks.values() if c.exact and not c.passed)
        click.echo(f"verify: exact check failed: {failed}", err=True)
        return EXIT_FAILED
    return 0
