"""``srp-np nir export`` and ``srp-np nir import`` (extra ``[nir]``; nir is imported lazily).

Registered in :mod:`srp_np.cli.main`. The mapping and the semantics assumed for graphs
written by other libraries are documented in :mod:`srp_np.nir_io`.
"""
from __future__ import annotations

import click
import numpy as np

from .common import check_outputs, mask_eps_option, mask_rule_option
from .train_cmds import _floats


@click.group("nir")
def nir_group():
    """Exchange models with neuromorphic toolchains through NIR (sinabs, snnTorch, Norse, Lava, ...)."""


@nir_group.command("export")
@click.argument("model_file", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--tau", type=click.IntRange(min=0), default=4, show_default=True,
              help="SRP stage-1 length recorded in the graph metadata")
@mask_eps_option
@mask_rule_option
def nir_export_cmd(model_file, out, tau, mask_eps, mask_rule):
    """Write MODEL_FILE (srp-np/1 .npz) as a NIR graph OUT (HDF5).

    IF nodes get r=1, v_threshold=θ, v_reset=0; the spike value θ and the average pools' 1/k² are
    folded into the next layer; srp-np's semantics (reset by subtraction, v(0)=θ/2, firing at v ≥ θ,
    SRP's τ and mask rule, the readout) and its graph travel in the metadata.
    """
    from srp_np.model import load_model
    from srp_np.nir_io import write_nir

    check_outputs({"OUT": out}, {"MODEL_FILE": model_file})
    model = load_model(model_file)
    g = write_nir(model, out, tau=tau, mask_eps=mask_eps, mask_rule=mask_rule)
    n_if = sum(1 for n in model.nodes if n["op"] == "qcfs")
    click.echo(f"wrote {out} ({len(g.nodes)} NIR nodes, {len(g.edges)} edges, {n_if} IF layers)")


@nir_group.command("import")
@click.argument("nir_file", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--L", "L", type=click.IntRange(1, 1024), default=None,
              help="QCFS steps of the source network (required unless the file was written by srp-np)")
@click.option("--mean", callback=_floats, default=None, help="preprocessing mean per channel (default 0)")
@click.option("--std", callback=_floats, default=None, help="preprocessing std per channel (default 1)")
@click.option("--dataset", type=click.Choice(["fashion-mnist", "cifar10", "cifar100", "imagenet"]), default=None,
              help="data set the model is for (recorded; `run` then finds its test split)")
@click.option("--ignore-metadata", is_flag=True,
              help="translate the NIR nodes even when the file carries srp-np's metadata")
def nir_import_cmd(nir_file, out, L, mean, std, dataset, ignore_metadata):
    """Read NIR_FILE and write it as an srp-np/1 model OUT.

    A file written by `srp-np nir export` comes back bit for bit. A graph written by another
    library is read as srp-np's IF network: reset by subtraction, v(0)=θ/2, firing at v ≥ θ,
    no delay on edges (stated on stderr).
    """
    from srp_np.errors import SrpError
    from srp_np.nir_io import ASSUMED_TEXT, import_nir

    check_outputs({"OUT": out}, {"NIR_FILE": nir_file})
    if (mean is None) != (std is None):
        raise SrpError("--mean and --std go together")
    if std is not None and not all(v > 0 for v in std):
        raise SrpError("--std must be positive")
    graph, foreign = import_nir(nir_file, out, L=L, mean=mean, std=std, use_metadata=not ignore_metadata,
                                metadata={"dataset": dataset} if dataset else None)
    if foreign:
        click.echo(f"note: {ASSUMED_TEXT}", err=True)
    n_if = sum(1 for n in graph["nodes"] if n["op"] == "qcfs")
    click.echo(f"wrote {out} ({len(graph['nodes'])} nodes, {n_if} IF layers, L={graph['L']}"
               + (", from srp-np's metadata" if not foreign else "") + ")")


@nir_group.command("simulate")
@click.argument("nir_file", type=click.Path(dir_okay=False))
@click.option("--semantics", type=click.Choice(["srp-np", "nir"]), default="srp-np", show_default=True,
              help="srp-np: v(0)=θ/2, fire at v ≥ θ, reset by subtraction (what the metadata states); nir: v(0)=0, "
                   "fire at v > θ, reset to v_reset (NIR's IF read without the metadata)")
@click.option("--T", "T", type=click.IntRange(1, 4096), default=8, show_default=True, help="time steps")
@click.option("--data", "-d", type=click.Path(dir_okay=False), default=None,
              help="data .npz (x, y); default: the test split of the data set the srp-np metadata names")
@click.option("--limit", type=click.IntRange(1), default=None, help="only the first N images")
@click.option("--L", "L", type=click.IntRange(1, 1024), default=None, help="for a foreign graph (see import)")
def nir_simulate_cmd(nir_file, semantics, T, data, limit, L):
    """Run NIR_FILE densely (NumPy, float64) as a NIR consumer would, and print the accuracy per step.

    Plain conversion only (no SRP stage 1: NIR cannot express it). With --semantics srp-np the result
    equals `srp-np run --tau 0` on the same model; --semantics nir shows what a consumer that ignores
    srp-np's metadata gets.
    """
    from srp_np.model import Model, validate_graph
    from srp_np.nir_io import from_nir, read_nir, simulate_nir

    from .common import load_data_option

    g = read_nir(nir_file)
    graph, arrays = from_nir(g, L=L)
    arrays = {k: np.asarray(a, dtype=np.float32) for k, a in arrays.items()}
    model = Model(graph=graph, arrays=arrays, shapes=validate_graph(graph, arrays), path=str(nir_file))
    x, y, origin = load_data_option(model, data, None, limit)
    from srp_np.datasets import to_float

    xn = model.preprocess(to_float(np.asarray(x)), np.float64)      # images in [0, 1], normalised
    outs = []
    bar_total = len(xn)
    from .common import progress_bar

    with progress_bar(bar_total, f"NIR ({semantics})") as bar:
        for i in range(0, len(xn), 100):
            o, _ = simulate_nir(g, xn[i:i + 100], T, semantics)
            outs.append(o)
            bar.update(len(xn[i:i + 100]))
    out = np.concatenate(outs, axis=1)
    acc = (out.argmax(-1) == y[None, :]).mean(axis=1)
    click.echo(f"{nir_file}: {len(y)} images ({origin}), semantics {semantics}, T={T}")
    click.echo("accuracy after t steps: " + ", ".join(f"t={t + 1}: {100 * a:.2f}%" for t, a in enumerate(acc)))
