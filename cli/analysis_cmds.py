"""``srp-np sweep``, ``analyze``, ``report`` and ``explain``: the paper's tables and figures.

Registered on the main group by :func:`register` (called from ``cli/main.py``).
"""
from __future__ import annotations


import click
import numpy as np

from srp_np.errors import SrpError
from srp_np.tables import text_table

from .common import (announce_compilation, data_dir_option, data_option, dtype_option, finite_float,
                     guard_outputs, json_text, limit_option, load_data_option, load_model_option, mask_eps_option, mask_rule_option,
                     parse_dtype, progress_bar, threads_option, use_threads_option, weights_option, write_json)
from .common import subset_option
from .dist_options import (check_shard_outputs, open_engine, open_store, report_store, scheduler_option, shard_option,
                        store_option, take_shard, workers_option, write_partial)

json_option = click.option("--json", "json_out", is_flag=False, flag_value="-", default=None,
                           type=click.Path(dir_okay=True, allow_dash=True),
                           help="Write the figures as JSON to this file ('--json' alone or '--json -': stdout, "
                                "no table).")


def _prepare(model, x_raw) -> np.ndarray:
    from srp_np.datasets import fit_to_shape, to_float

    return model.preprocess(fit_to_shape(to_float(np.asarray(x_raw)), model.input_shape))


def _emit_json(json_out, obj) -> None:
    if json_out == "-":
        click.echo(json_text(obj))
    else:
        write_json(json_out, obj)


def _write_outputs(obj, json_out, plot, plot_fn: str, **plot_kw) -> None:
    """Draw ``obj`` with ``srp_np.plots.<plot_fn>`` to ``plot`` (if given), then emit the JSON (if asked)."""
    if plot:
        from srp_np import plots

        getattr(plots, plot_fn)(obj, plot, **plot_kw)
        if json_out != "-":
            click.echo(f"plot written to {plot}")
    if json_out:
        _emit_json(json_out, obj)


def _load(weights, data, data_dir, limit, shard=None, unit=None, subset="first"):
    """Model, normalised images, labels, origin, and the shard context (None without ``--shard``)."""
    from srp_np.shard import shard_unit

    model = load_model_option(weights)
    x_raw, y, origin = load_data_option(model, data, data_dir, limit, subset)
    x_raw, y, origin, sctx = take_shard(x_raw, np.asarray(y), origin, shard, unit or shard_unit())
    return model, _prepare(model, x_raw), np.asarray(y), origin, sctx


# ----------------------------------------------------------------------------- sweep

@click.command("sweep")
@weights_option
@data_option
@data_dir_option
@click.option("--tau", "taus", default="0,2,4,8,16", show_default=True,
              help="Comma-separated stage-1 lengths; 0 = plain QCFS conversion.")
@click.option("--T", "T", type=click.IntRange(min=1), default=64, show_default=True,
              help="Largest stage-2 length; every t = 1..T comes from the same run.")
@limit_option
@subset_option
@dtype_option
@mask_eps_option
@mask_rule_option
@threads_option
@json_option
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write the accuracy-vs-latency plot (PNG) here.")
@shard_option
@store_option
@workers_option
@scheduler_option
def sweep_cmd(weights, data, data_dir, taus, T, limit, subset, dtype, mask_eps, mask_rule, threads, json_out, plot,
              shard, store_dir, workers, scheduler):
    """Accuracy for every τ and T = 1, 2, 4, ..., T (the paper's Table 4).

    One simulation per τ with the largest T gives every smaller T (the mean
    output after t stage-2 steps does not depend on later steps).

    \b
    Examples:
      srp-np sweep --weights weights/vgg16_fmnist.npz --tau 0,2,4,8,16 --T 64 --limit 1000
      srp-np sweep --tau 0,4 --T 16 --json sweep.json --plot sweep.png
    """
    from srp_np.sweep import format_table, parse_int_list, source_name, sweep_counts, sweep_figures

    tau_list = parse_int_list(taus, "--tau")
    guard_outputs({"--json": json_out, "--plot": plot}, weights=weights, data=data)
    spec = check_shard_outputs(shard, json_out, plot)
    dt = parse_dtype(dtype)
    store = open_store(store_dir)
    with use_threads_option(threads):
        model, x, y, origin, sctx = _load(weights, data, data_dir, limit, spec, subset=subset)
        announce_compilation(dt)
        with open_engine(workers, scheduler, threads) as engine, \
                progress_bar(len(x) * len(tau_list), "sweep") as bar:
            counts = sweep_counts(model, x, y, tau_list, T, dtype=dt, mask_eps=mask_eps, progress=bar.update,
                                  store=store, engine=engine, mask_rule=mask_rule)
    report_store(store)
    res = sweep_figures(counts, mask_eps, mask_rule)
    if sctx is not None:
        seconds = {"tau": counts.pop("seconds")}
        write_partial(json_out, "sweep", sctx, model, {"taus": tau_list, "T": T, "dtype": np.dtype(dt).name,
                                                       "mask_eps": mask_eps, "mask_rule": mask_rule}, counts, seconds)
        json_out = None
    res.update(model=model.path, data=origin, arch=model.graph.get("arch"), dtype=np.dtype(dt).name)
    source = source_name(model.graph)
    if json_out != "-":
        arch = model.graph.get("arch", "")
        click.echo(f"{arch or 'model'}: accuracy vs stage-2 steps T, {len(x)} images ({origin})")
        click.echo(format_table(res, arch, source))
    _write_outputs(res, json_out, plot, "plot_sweep", source=source,
                   title=f"{model.graph.get('arch', 'model')}: accuracy vs latency ({len(x)} images)")


# ----------------------------------------------------------------------------- analyze

def format_analysis(res: dict) -> str:
    from srp_np.analysis import error_total

    lines = []
    for err, title in (("error_I", "Unevenness Error I (a = QCFS(mean SNN input))"),
                       ("error_II", "Unevenness Error II (a = ANN activation)")):
        lines.append(f"{title}: % of neurons per case, baseline τ=0 → SRP τ={res['tau']}, T={res['T']}")
        head = ["layer", "case1", "case2", "case3", "case4", "any error"]
        rows = []
        for L in res["layers"]:
            b, s = L["baseline"][err], L["srp"][err]
            cells = [L["name"]] + [f"{100 * b[c]:5.1f} → {100 * s[c]:5.1f}" for c in ("case1", "case2", "case3",
                                                                                      "case4")]
            cells.append(f"{100 * error_total(b):5.1f} → {100 * error_total(s):5.1f}")
            rows.append(cells)
        lines += text_table(head, rows) + [""]
    if "accuracy" in res:
        acc = res["accuracy"]
        lines.append(f"accuracy after T={res['T']}: baseline {100 * acc['baseline']:.2f}%, "
                     f"SRP {100 * acc['srp']:.2f}%")
    return "\n".join(lines)


@click.command("analyze")
@weights_option
@data_option
@data_dir_option
@click.option("--tau", type=click.IntRange(min=1), default=4, show_default=True,
              help="SRP stage-1 length (compared with τ = 0).")
@click.option("--T", "T", type=click.IntRange(min=1), default=None,
              help="Stage-2 steps (φ and ȳ are means over them). Default: the model's L (Theorem 1 assumes T = L; "
                   "with T ≠ L the cases also count the quantisation mismatch of the two grids).")
@limit_option
@subset_option
@dtype_option
@mask_eps_option
@mask_rule_option
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=64, show_default=True,
              help="Images per simulator call (bounds memory; results do not depend on it).")
@threads_option
@json_option
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write stacked bars per layer (like Figs. 3 and 5) here (PNG).")
@shard_option
def analyze_cmd(weights, data, data_dir, tau, T, limit, subset, dtype, mask_eps, mask_rule, batch_size, threads,
                json_out, plot, shard):
    """Fractions of neurons in each unevenness-error case per IF layer (Figs. 3 and 5).

    For every IF layer, over all its neurons and all images: φ = θ·(stage-2
    spikes after the mask)/T is compared with a, where a is the ANN's QCFS
    activation (Error II) or QCFS(ȳ), ȳ the neuron's mean stage-2 input
    current (Error I). Case 1: a = 0, φ > a; case 2: 0 < a < λ, φ > a;
    case 3: 0 < a < λ, φ < a; case 4: a = λ, φ < a. Equalities use a
    tolerance of 1e-6·λ. Baseline is τ = 0, SRP is --tau.

    \b
    Examples:
      srp-np analyze --weights weights/vgg16_fmnist.npz --tau 4 --limit 1000 --plot cases.png
      srp-np analyze --tau 8 --T 8 --json cases.json
    """
    from srp_np.analysis import DEFAULT_RTOL, analysis_figures, analyze_counts
    from srp_np.shard import shard_unit

    guard_outputs({"--json": json_out, "--plot": plot}, weights=weights, data=data)
    spec = check_shard_outputs(shard, json_out, plot)
    dt = parse_dtype(dtype)
    with use_threads_option(threads):
        # shards of whole chunks: the float64 ANN pass of each chunk is then the single run's
        model, x, y, origin, sctx = _load(weights, data, data_dir, limit, spec, shard_unit(batch_size), subset)
        T = model.L if T is None else T
        announce_compilation(dt)
        with progress_bar(2 * len(x), "analyze") as bar:
            counts = analyze_counts(model, x, tau, T, y=y, dtype=dt, mask_eps=mask_eps, chunk=batch_size,
                                    progress=bar.update, mask_rule=mask_rule)
    res = analysis_figures(model, counts, tau, T, rtol=DEFAULT_RTOL, mask_eps=mask_eps, mask_rule=mask_rule)
    if sctx is not None:
        write_partial(json_out, "analyze", sctx, model, {"tau": tau, "T": T, "dtype": np.dtype(dt).name,
                                                         "mask_eps": mask_eps, "mask_rule": mask_rule,
                                                         "batch_size": batch_size,
                                                         "rtol": DEFAULT_RTOL}, counts)
        json_out = None
    res.update(model=model.path, data=origin, arch=model.graph.get("arch"))
    if json_out != "-":
        click.echo(f"{model.graph.get('arch', 'model')}: {len(x)} images ({origin}), L={model.L}")
        click.echo(format_analysis(res))
    _write_outputs(res, json_out, plot, "plot_cases",
                   title=f"{model.graph.get('arch', 'model')}: unevenness error cases per IF layer "
                         f"(T={T}, {len(x)} images)")


# ----------------------------------------------------------------------------- report

def format_report(rep: dict) -> str:
    lines = [f"costs per image (mean of {rep['images']} images), τ={rep['tau']}, T={rep['T']}"]
    head = ["IF layer", "neurons", "spikes st.2", "rate st.2", "spikes st.1", "rate st.1"]
    rows = [[L["name"], f"{L['neurons']:,}", f"{L['spikes']:,.1f}", f"{L['firing_rate']:.4f}",
             f"{L['spikes_stage1']:,.1f}",
             "-" if L["firing_rate_stage1"] is None else f"{L['firing_rate_stage1']:.4f}"] for L in rep["if_layers"]]
    t = rep["totals"]
    rows.append(["total", f"{t['neurons']:,}", f"{t['spikes']:,.1f}", f"{t['firing_rate']:.4f}",
                 f"{t['spikes_stage1']:,.1f}", "-" if t["firing_rate_stage1"] is None
                 else f"{t['firing_rate_stage1']:.4f}"])
    lines += text_table(head, rows) + [""]
    head = ["synaptic node", "op", "SOPs st.2", "SOPs st.1", "ANN MACs", "energy SNN (nJ)", "energy ANN (nJ)"]
    rows = []
    for L in rep["synaptic_layers"]:
        s2 = "analog" if L["analog"] else f"{L['sops']:,.0f}"
        s1 = "analog" if L["analog"] else f"{L['sops_stage1']:,.0f}"
        macs = f"{L['ann_macs']:,}" if L["op"] != "add" else f"{L['ann_adds']:,} adds"
        rows.append([L["name"], L["op"], s2, s1, macs, f"{1e9 * L['energy_snn_j']:,.2f}",
                     f"{1e9 * L['energy_ann_j']:,.2f}"])
    rows.append(["total", "", f"{t['sops']:,.0f}", f"{t['sops_stage1']:,.0f}", f"{t['ann_macs']:,}",
                 f"{1e9 * t['energy_snn_j']:,.2f}", f"{1e9 * t['energy_ann_j']:,.2f}"])
    lines += text_table(head, rows)
    ratio = t["energy_ratio_snn_over_ann"]
    lines += ["", f"ENERGY IS AN ESTIMATE: E_AC = {rep['e_ac_j'] * 1e12:g} pJ per accumulate (SOP), "
                  f"E_MAC = {rep['e_mac_j'] * 1e12:g} pJ per MAC; defaults: 32-bit float add / mult+add, 45 nm "
                  "(Horowitz, ISSCC 2014); no memory access. Analog (input-driven) layers are charged as MACs on "
                  f"every one of the τ+T = {rep['analog_mac_steps']} steps.",
              f"SNN/ANN energy ratio: {ratio:.3f}" if ratio is not None else ""]
    return "\n".join(lines)


@click.command("report")
@weights_option
@data_option
@data_dir_option
@click.option("--tau", type=click.IntRange(min=0), default=4, show_default=True,
              help="Stage-1 steps; 0 = plain QCFS conversion.")
@click.option("--T", "T", type=click.IntRange(min=1), default=8, show_default=True, help="Stage-2 steps.")
@limit_option
@subset_option
@dtype_option
@mask_eps_option
@mask_rule_option
@click.option("--e-ac", type=float, default=0.9, show_default=True, callback=finite_float,
              help="Energy per accumulate (synaptic operation) in pJ (45 nm fp32 add, Horowitz ISSCC 2014).")
@click.option("--e-mac", type=float, default=4.6, show_default=True, callback=finite_float,
              help="Energy per multiply-accumulate in pJ (45 nm fp32 mult+add, Horowitz ISSCC 2014).")
@threads_option
@json_option
@shard_option
def report_cmd(weights, data, data_dir, tau, T, limit, subset, dtype, mask_eps, mask_rule, e_ac, e_mac, threads,
               json_out, shard):
    """Costs: spikes, firing rates, synaptic operations, ANN MACs and an energy ESTIMATE.

    Per IF layer: spikes and firing rate (spikes per neuron per step) in
    each stage. Per synaptic node: synaptic operations (each spike times
    its exact fan-out, borders counted), the ANN's MACs, and an energy
    estimate E_AC·SOPs (SNN) vs E_MAC·MACs (ANN). All per image.

    \b
    Examples:
      srp-np report --weights weights/resnet20_fmnist.npz --tau 4 --T 8 --limit 500
      srp-np report --e-ac 0.03 --e-mac 0.2 --json costs.json   # 8-bit int energies
    """
    from srp_np.costs import cost_report
    from srp_np.counts import RunCounts
    from srp_np.simulator import Simulator, check_run_memory

    guard_outputs({"--json": json_out}, weights=weights, data=data)
    spec = check_shard_outputs(shard, json_out)
    if not (e_ac >= 0 and e_mac >= 0):
        raise SrpError("--e-ac and --e-mac must be non-negative numbers (pJ)")
    dt = parse_dtype(dtype)
    with use_threads_option(threads):
        model, x, y, origin, sctx = _load(weights, data, data_dir, limit, spec, subset=subset)
        check_run_memory(model, dt, len(x), tau, T)      # before any kernel is compiled
        announce_compilation(dt)
        with progress_bar(len(x), f"simulating τ={tau} T={T}") as bar:
            res = Simulator(model, dt).run(x, tau, T, mask_eps=mask_eps, progress=bar.update, mask_rule=mask_rule)
    counts = RunCounts.from_result(res, y)
    rep = cost_report(model, counts, e_ac=e_ac * 1e-12, e_mac=e_mac * 1e-12)
    rep.update(model=model.path, data=origin, accuracy=float(counts.accuracy()[-1]), mask_eps=mask_eps,
               mask_rule=mask_rule)
    if sctx is not None:
        write_partial(json_out, "report", sctx, model, {"tau": tau, "T": T, "dtype": np.dtype(dt).name,
                                                        "mask_eps": mask_eps, "mask_rule": mask_rule, "e_ac": e_ac,
                                                        "e_mac": e_mac},
                      counts.to_json(), {"snn": res.seconds})
        json_out = None
    if json_out != "-":
        click.echo(f"{model.graph.get('arch', 'model')}: {len(x)} images ({origin}); "
                   f"SNN accuracy after T={T}: {100 * rep['accuracy']:.2f}%")
        click.echo(format_report(rep))
    if json_out:
        _emit_json(json_out, rep)


# ----------------------------------------------------------------------------- explain

@click.group("explain")
def explain_group():
    """Step-by-step mechanics of ANN-SNN conversion and SRP, for learning.

    \b
      srp-np explain fig1       the paper's Fig. 1 unevenness example
      srp-np explain neuron     one real neuron through both SRP stages
      srp-np explain theorem1   Theorem 1 checked on random examples
      srp-np explain step       one real neuron, one time step per key press
    """


@explain_group.command("fig1")
@click.option("--v0", type=float, default=None, callback=finite_float,
              help="Initial membrane (default θ/2, Algorithm 1).")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write the picture (PNG) here.")
@json_option
def fig1_cmd(v0, plot, json_out):
    """The paper's Fig. 1: the same spike counts in three orders give three outputs.

    Two presynaptic neurons with W = [2, -1], each firing 3 spikes in T = 6
    steps (a = φ = [0.5, 0.5], θ = 1), feed one IF neuron with θ = λ = 1. The
    ANN outputs a = ReLU(2·0.5 − 0.5) = 0.5. Evenly arriving spikes give
    φ = 3/6 = 0.5; the +2 input first gives 4/6 (too many spikes); the −1
    input first gives 2/6 (too few): the unevenness error.
    """
    from srp_np.explain import fig1, format_steps

    guard_outputs({"--json": json_out, "--plot": plot})
    res = fig1(v0)
    if json_out != "-":
        click.echo(f"W = {res['W']}, a^(l-1) = phi^(l-1) = {res['a_prev']}, theta = lambda = {res['theta']}, "
                   f"T = {res['T']}, v(0) = {res['v0']:g}")
        click.echo(f"ANN: a = ReLU(W·a^(l-1)) = {res['a']:g}\n")
        for s in res["scenarios"]:
            click.echo(s["title"])
            click.echo(format_steps(s["steps"], {"pre w=+2": s["pre_spikes"][0], "pre w=-1": s["pre_spikes"][1]}))
            rel = "=" if abs(s["error"]) < 1e-12 else (">" if s["error"] > 0 else "<")
            click.echo(f"phi(T) = {s['phi']:.4f} {rel} a = {res['a']:g}; error phi - a = {s['error']:+.4f}; "
                       f"v(T) = {s['v_T']:+g}\n")
    _write_outputs(res, json_out, plot, "plot_fig1")


def _one_image(model, data, data_dir, image: int) -> tuple:
    """Image number ``image`` of the data, normalised (1×C×H×W), the labels and the data's origin."""
    if image < 0:
        raise SrpError(f"--image must be >= 0, got {image}")
    x_raw, y, origin = load_data_option(model, data, data_dir, image + 1)
    if image >= len(x_raw):
        raise SrpError(f"--image {image} is out of range: the data set has {len(x_raw)} images")
    return _prepare(model, x_raw[image:image + 1]), y, origin


def _one_neuron_options(T_default: int):
    """The options of a command that follows one neuron of a real model (explain neuron, step)."""
    def deco(f):
        for opt in reversed([
                weights_option, data_option, data_dir_option,
                click.option("--layer", required=True, help="IF (qcfs) node name, e.g. from `srp-np analyze`."),
                click.option("--index", required=True, help="Neuron index in the layer: c,y,x (conv) or i (flat)."),
                click.option("--image", type=int, default=0, show_default=True, help="Image number in the data set."),
                click.option("--tau", type=click.IntRange(min=0), default=4, show_default=True,
                             help="Stage-1 steps (0 = plain conversion)."),
                click.option("--T", "T", type=click.IntRange(min=1), default=T_default, show_default=True,
                             help="Stage-2 steps."),
                mask_eps_option]):
            f = opt(f)
        return f
    return deco


@explain_group.command("neuron")
@_one_neuron_options(8)
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="Write the trace picture (PNG) here.")
@json_option
def neuron_cmd(weights, data, data_dir, layer, index, image, tau, T, mask_eps, plot, json_out):
    """Trace one neuron of a real model through stage 1 and stage 2 of SRP.

    Per step: input current, membrane before/after, spike, running φ; then
    v(τ), the mask decision, the ANN's activation a and the unevenness-error
    case the neuron falls in. The network is stepped densely in float64 on
    that one image.

    \b
    Example:
      srp-np explain neuron --weights weights/vgg16_fmnist.npz --layer act3 --index 5,7,7 --image 0
    """
    from srp_np.explain import CASE_TEXT, format_steps, neuron_trace

    guard_outputs({"--json": json_out, "--plot": plot}, weights=weights, data=data)
    model = load_model_option(weights)
    x, y, origin = _one_image(model, data, data_dir, image)
    tr = neuron_trace(model, x, layer, index, tau, T, mask_eps=mask_eps)
    tr.update(image=image, label=int(y[image]), model=model.path, data=origin)
    if json_out != "-":
        th = tr["theta"]
        click.echo(f"{model.graph.get('arch', 'model')}: layer {layer}, neuron {tuple(tr['index'])} of "
                   f"{tr['shape']}, image {image} (label {tr['label']}), theta = lambda = {th:.6g}, L = {tr['L']}")
        if tau:
            click.echo(f"\nstage 1 ({tau} steps, v(0) = theta/2, no mask):")
            click.echo(format_steps(tr["stage1"]))
            keep = tr["kept"]
            click.echo(f"\nv(tau) = {tr['v_tau']:.6g}; mask: v(tau) > eps·theta = {mask_eps * th:.3g} -> "
                       f"{'KEEP (spikes pass in stage 2)' if keep else 'SILENCE (stage-2 spikes are dropped)'}")
            click.echo("membranes reset to theta/2")
        click.echo(f"\nstage 2 ({T} steps{'' if not tau else ', masked' if not tr['kept'] else ''}):")
        click.echo(format_steps(tr["stage2"]))
        click.echo(f"\nphi = theta·{tr['spikes']}/{T} = {tr['phi']:.6g}; mean input ybar = {tr['ybar']:.6g}; "
                   f"v(T) = {tr['v_T']:.6g}")
        click.echo(f"ANN: pre-activation y = {tr['y_ann']:.6g}, a = QCFS(y) = {tr['a_ann']:.6g}  ->  Error II: "
                   f"{CASE_TEXT[tr['case_error_II']]}")
        click.echo(f"layer fed the SNN's inputs: a = QCFS(ybar) = {tr['a_error_I']:.6g}  ->  Error I: "
                   f"{CASE_TEXT[tr['case_error_I']]}")
    _write_outputs(tr, json_out, plot, "plot_neuron")


STEP_KEYS = "Enter/space: next step   c: run to the end   q: quit"


def _pause(k: int, n: int) -> str:
    """Wait for one key after screen ``k`` of ``n``; return ``"next"``, ``"continue"`` or ``"quit"``."""
    prompt = f"-- step {k}/{n} --  {STEP_KEYS}"
    click.echo(click.style(prompt, reverse=True), nl=False)
    while True:
        try:
            ch = click.getchar()
        except EOFError:              # Ctrl-D
            ch = "q"
        ch = ch.lower()
        if ch in ("\r", "\n", " ", "n", "j", "\x1b[b", "\x1b[c"):
            action = "next"
        elif ch == "c":
            action = "continue"
        elif ch in ("q", "\x1b"):
            action = "quit"
        else:
            continue                  # any other key: ask again
        click.echo("\r\x1b[K", nl=False)  # erase the prompt line
        return action


@explain_group.command("step")
@_one_neuron_options(4)
@click.option("--no-pause", is_flag=True, help="Print every step at once (for scripts; also the behaviour when "
                                              "standard input or output is not a terminal).")
def step_cmd(weights, data, data_dir, layer, index, image, tau, T, mask_eps, no_pause):
    """Step one neuron of a real model through both SRP stages, one key press per step.

    Each screen is one time step of the IF neuron (Eqs. 2-3): its input
    current x(t), the membrane before, u = v + x, the spike (u >= theta), the
    membrane after reset by subtraction, and the running rate
    phi(t) = theta·spikes/t beside the ANN's (QCFS) value a. After stage 1
    (tau steps) one screen shows the residual membrane v(tau) and the SRP mask
    decision (keep iff v(tau) > eps·theta), then stage 2 (T steps) runs with
    the mask. The network is stepped densely in float64 on that one image.

    \b
    Keys: Enter or space = next step, c = run to the end, q = quit.
    \b
    Example:
      srp-np explain step --weights weights/vgg16_fmnist.npz --layer features.9.act --index 0,1,1 --tau 4 --T 4
    """
    import sys

    from srp_np.explain import neuron_trace, resolve_neuron, step_frames

    model = load_model_option(weights)
    resolve_neuron(model, layer, index)          # a bad --layer/--index fails before the data are read
    x, y, origin = _one_image(model, data, data_dir, image)
    tr = neuron_trace(model, x, layer, index, tau, T, mask_eps=mask_eps)
    frames = step_frames(tr)
    pause = not no_pause and sys.stdin.isatty() and sys.stdout.isatty()
    click.echo(f"{model.graph.get('arch', 'model')}: layer {layer}, neuron {tuple(tr['index'])} of {tr['shape']}, "
               f"image {image} (label {int(y[image])}), theta = lambda = {tr['theta']:.6g}, L = {tr['L']}, "
               f"tau = {tau}, T = {T}")
    click.echo(f"ANN (QCFS) value of this neuron: a = QCFS(y = {tr['y_ann']:.6g}) = {tr['a_ann']:.6g}; "
               f"membrane starts at theta/2 = {tr['theta'] / 2:.6g}")
    if pause:
        click.echo(STEP_KEYS)
    for k, fr in enumerate(frames, start=1):
        click.echo("")
        click.echo(fr["text"])
        if pause and k < len(frames):
            action = _pause(k, len(frames))
            if action == "quit":
                click.echo(f"stopped after screen {k} of {len(frames)}")
                return
            if action == "continue":
                pause = False


@explain_group.command("theorem1")
@click.option("--n", "n", type=click.IntRange(min=1), default=2000, show_default=True, help="Random examples (neurons).")
@click.option("--T", "T", type=click.IntRange(min=1), default=8, show_default=True, help="Time steps.")
@click.option("--L", "L", type=click.IntRange(min=1), default=None, help="QCFS steps (default: T, the theorem's precondition).")
@click.option("--inputs", type=click.IntRange(min=1), default=4, show_default=True, help="Presynaptic neurons per example.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed (>= 0).")
@json_option
def theorem1_cmd(n, T, L, inputs, seed, json_out):
    """Check Theorem 1 on random single-layer examples, with counts.

    Each example: an IF neuron (θ = λ, v(0) = θ/2) fed by presynaptic IF
    neurons that fire random numbers of spikes at random times, so that the
    ANN and the SNN see the same weighted input y = W·φ^{l-1}. With L = T:
    (i) a = 0: φ > a ⇒ v(T) < 0, and v(T) < 0 ⇒ φ ≥ a;
    (ii) a > 0: v(T) < 0 ⇔ φ > a. Pass --L different from --T to watch
    the statements fail when the precondition is broken.
    """
    from srp_np.explain import theorem1_demo

    guard_outputs({"--json": json_out})
    r = theorem1_demo(n=n, T=T, L=L, n_in=inputs, rng=seed)
    if json_out != "-":
        z, p = r["a_zero"], r["a_positive"]
        click.echo(f"{r['examples']} random neurons, T = {r['T']}, L = {r['L']}, {r['n_in']} inputs each"
                   f"{'' if r['preconditions_met'] else '  (L != T: precondition of Theorem 1 broken)'}")
        click.echo(f"\n(i) a = 0: {z['examples']} neurons")
        click.echo(f"    necessity  phi > a  =>  v(T) < 0 : {z['phi_gt_a_and_v_neg']}/{z['phi_gt_a']} "
                   f"(violations: {z['necessity_violations']})")
        click.echo(f"    sufficiency v(T) < 0 =>  phi >= a : {z['v_neg_and_phi_ge_a']}/{z['v_neg']} "
                   f"(violations: {z['sufficiency_violations']})")
        click.echo(f"(ii) a > 0: {p['examples']} neurons, v(T) < 0  <=>  phi > a")
        click.echo(f"    v(T) < 0 and phi > a   : {p['v_neg_and_phi_gt_a']}")
        click.echo(f"    v(T) >= 0 and phi <= a : {p['v_nonneg_and_phi_le_a']}")
        click.echo(f"    v(T) < 0 but phi <= a  : {p['v_neg_but_phi_le_a']}  (violations)")
        click.echo(f"    phi > a but v(T) >= 0  : {p['phi_gt_a_but_v_nonneg']}  (violations)")
        click.echo(f"\nTheorem 1 holds for {r['holds']}/{r['examples']} neurons ({r['violations']} violations).")
        c = r["cases"]
        click.echo("cases: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    if json_out:
        _emit_json(json_out, r)


def register(cli) -> None:
    """Add ``sweep``, ``analyze``, ``report`` and ``explain`` to the ``srp-np`` group."""
    cli.add_command(sweep_cmd, "sweep")
    cli.add_command(analyze_cmd, "analyze")
    cli.add_command(report_cmd, "report")
    cli.add_command(explain_group, "explain")
