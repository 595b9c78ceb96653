"""Options and loaders shared by the ``srp-np`` subcommands."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import numpy as np

from srp_np.errors import SrpError

DEFAULT_WEIGHTS = "resnet20_fmnist.npz"


def default_weights_path() -> Path:
    """The shipped default model (``weights/resnet20_fmnist.npz``)."""
    from importlib import resources

    try:
        p = Path(str(resources.files("srp_np._weights").joinpath(DEFAULT_WEIGHTS)))
    except ModuleNotFoundError:
        p = Path(__file__).resolve().parent.parent / "weights" / DEFAULT_WEIGHTS
    if not p.exists():
        raise SrpError(f"the shipped default model {DEFAULT_WEIGHTS} is not installed; pass --weights M.npz")
    return p


def load_model_option(weights) -> "srp_np.model.Model":
    from srp_np.model import load_model

    if weights is None:
        return load_model(default_weights_path())
    if str(weights) == "":
        raise SrpError("--weights needs a file name (omit the option for the shipped model)")
    return load_model(weights)


def load_source_option(model, data: str | None, data_dir: str | None, limit: int | None, subset: str = "first"):
    """The data source for ``--data``/``--data-dir``/``--limit``/``--subset`` and its description.

    Without ``--data`` the data set the model names is used (the shipped
    Fashion-MNIST test split for Fashion-MNIST models). An image folder
    (ImageNet) is listed, not decoded (:class:`srp_np.datasets.ImageFolderSource`).
    Labels are checked against the model's classes here; images are fitted to the
    model when they are read.
    """
    from srp_np import datasets

    if data is not None and str(data) == "":
        raise SrpError("--data needs a file name (omit the option for the model's own data set)")
    if data_dir is not None and str(data_dir) == "":
        raise SrpError("--data-dir needs a folder name")
    if data is not None:
        src = datasets.ArraySource(*datasets.load_npz_data(data), str(data))
        origin = str(data)
    else:
        name = model.graph.get("dataset")
        if not name:
            raise SrpError("the model names no data set: pass --data D.npz")
        key = datasets.normalize_name(name)
        if key == "fashion-mnist" and data_dir is None:
            src = datasets.ArraySource(*datasets.load_shipped_test_set(), "shipped Fashion-MNIST test split")
            origin = "shipped Fashion-MNIST test split"
        else:
            src = datasets.dataset_source(key, "test", data_dir)
            origin = f"{key} test split"
    if limit is not None and limit < len(src):
        src = src.take(datasets.subset_indices(src.labels, limit, subset))
        if subset != "first":
            origin += f", {subset} subset"
    if len(src) == 0:
        raise SrpError("the data set holds no images")
    y = src.labels
    if y.min() < 0 or y.max() >= model.num_classes:
        raise SrpError(f"labels must lie in [0, {model.num_classes - 1}] for this model, "
                       f"found {int(y.min())}..{int(y.max())}")
    return src, origin


def load_data_option(model, data: str | None, data_dir: str | None, limit: int | None, subset: str = "first"):
    """Raw images and labels for ``--data``/``--data-dir``/``--limit``/``--subset``, fitted to the model
    (all in memory; see :func:`load_source_option` for a stream)."""
    import math

    from srp_np import datasets
    from srp_np.limits import check_memory

    src, origin = load_source_option(model, data, data_dir, limit, subset)
    # the float copies of the images (raw, padded, normalised) made before any simulation
    check_memory(24 * len(src) * math.prod(model.input_shape), f"{len(src)} images of {list(model.input_shape)}",
                 "evaluate fewer images at once (--limit)")
    x, y = src.read()
    x = datasets.fit_to_shape(x, model.input_shape)
    return x, y, origin


def parse_dtype(value: str):
    v = value.lower()
    if v in ("float32", "f32", "single"):
        return np.float32
    if v in ("float64", "f64", "double"):
        return np.float64
    raise SrpError(f"--dtype must be float32 or float64, got {value!r}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: dict, inputs: dict | None = None) -> None:
    """Refuse, before any work is done, every output path that could lose or corrupt data.

    ``outputs`` and ``inputs`` map an option name (``"--json"``) to a path (or None;
    ``"-"`` is standard output). An output is refused when its folder is missing or
    not writable, when it names a directory, a device, a FIFO, a socket or a symbolic
    link (the atomic rename would replace it with a regular file), when it is the same
    file as an input, or when two outputs name the same file (one would be lost).
    """
    inputs = {k: v for k, v in (inputs or {}).items() if v not in (None, "", "-")}
    seen = {}
    for option, path in outputs.items():
        if path is None or path == "-":
            continue
        if str(path) == "":
            raise SrpError(f"{option} needs a file name")
        p = Path(path)
        parent = p.parent if str(p.parent) else Path(".")
        if not parent.is_dir():
            raise SrpError(f"cannot write {option} {p}: folder {parent} does not exist")
        if p.is_symlink():
            raise SrpError(f"cannot write {option} {p}: it is a symbolic link (give the file it points to)")
        if p.is_dir():
            raise SrpError(f"cannot write {option} {p}: it is a directory")
        if p.exists() and not p.is_file():
            raise SrpError(f"cannot write {option} {p}: it is not a regular file (a device, FIFO or socket)")
        if not os.access(parent, os.W_OK):
            raise SrpError(f"cannot write {option} {p}: folder {parent} is not writable")
        for iopt, ipath in inputs.items():
            if _same_file(p, Path(ipath)) or os.path.abspath(p) == os.path.abspath(ipath):
                raise SrpError(f"{option} {p} is the {iopt} input file: writing it would destroy the input")
        key = os.path.abspath(p)
        if key in seen:
            raise SrpError(f"{option} and {seen[key]} name the same file {p}: one would overwrite the other")
        seen[key] = option


def guard_outputs(outputs: dict, weights=None, data=None) -> None:
    """:func:`check_outputs` against a command's input files (``--weights``, or the shipped
    default model when it is not given, and ``--data``)."""
    inputs = {"--data": data}
    try:
        inputs["--weights"] = weights if weights is not None else default_weights_path()
    except SrpError:
        pass
    check_outputs(outputs, inputs)


def atomic_write_bytes(path, write) -> None:
    """Write ``path`` atomically through ``write(tmp_path)`` (see :func:`srp_np.fileio.atomic_write`)."""
    from srp_np.fileio import atomic_write

    atomic_write(path, write)


def json_safe(obj):
    """``obj`` with every non-finite float (NaN, ±Infinity, e.g. an images/s over zero seconds)
    replaced by ``None`` and NumPy scalars and arrays turned into Python values, so that the
    JSON written is valid JSON (``null``, never ``NaN``/``Infinity``)."""
    import math

    def conv(o):
        if isinstance(o, dict):
            return {str(k): conv(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [conv(v) for v in o]
        if isinstance(o, np.ndarray):
            return conv(o.tolist())
        if isinstance(o, np.generic):
            o = o.item()
        if isinstance(o, float) and not math.isfinite(o):
            return None
        return o

    return conv(obj)


def json_text(obj) -> str:
    """The JSON text srp-np writes: :func:`json_safe`, indented, strict (no NaN/Infinity)."""
    return json.dumps(json_safe(obj), indent=2, allow_nan=False)


def write_json(path, obj) -> None:
    """Write ``obj`` as JSON atomically; non-finite numbers become ``null`` (see :func:`json_safe`)."""
    text = json_text(obj) + "\n"

    def w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write_bytes(path, w)


def progress_bar(total: int, desc: str):
    """A tqdm bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=None, leave=False)


def announce_compilation(dtype) -> None:
    """Tell the user when Numba kernels will be compiled (cold cache)."""
    try:
        from srp_np.warmup import cache_is_warm
    except ImportError:
        return
    if not cache_is_warm(dtype):
        click.echo("compiling Numba kernels (first run only; cached on disk for the next runs)...", err=True)


# click options shared by run/sweep/analyze/report
weights_option = click.option("--weights", "-w", type=click.Path(dir_okay=False), default=None,
                              help="Model file (srp-np/1 .npz). Default: the shipped ResNet-20 on Fashion-MNIST.")
data_option = click.option("--data", "-d", type=click.Path(dir_okay=False), default=None,
                           help="Data .npz with x (N×C×H×W, uint8 or float in [0,1]) and y. "
                                "Default: the test split of the data set the model names.")
data_dir_option = click.option("--data-dir", type=click.Path(file_okay=False), default=None,
                               help="Folder holding the model's data set in its standard format.")
limit_option = click.option("--limit", type=click.IntRange(min=1), default=None,
                            help="Evaluate only N images (which ones: --subset).")
subset_option = click.option("--subset", type=click.Choice(["first", "balanced"]), default="first",
                             show_default=True,
                             help="With --limit N: 'first' = the first N images in data order (an image folder is "
                                  "sorted by class, so only the first classes); 'balanced' = a deterministic "
                                  "class-balanced subset (each class's first images, taken class by class in "
                                  "rounds; class counts differ by at most one).")
dtype_option = click.option("--dtype", default="float32", show_default=True,
                            help="float32, or float64 (exact oracle mode).")
def finite_float(ctx, param, value):
    """click callback: a float option must be a finite number (no nan, inf)."""
    if value is not None and not np.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}", ctx=ctx, param=param)
    return value


def mask_eps_value(ctx, param, value):
    """click callback for --mask-eps: a finite fraction of θ in [-1, 1]."""
    if value is not None and not (np.isfinite(value) and -1.0 <= value <= 1.0):
        raise click.BadParameter(f"must be a finite number in [-1, 1] (a fraction of the threshold), got {value}",
                                 ctx=ctx, param=param)
    return value


mask_eps_option = click.option("--mask-eps", type=float, default=1e-3, show_default=True, callback=mask_eps_value,
                               help="SRP keeps a neuron iff v(τ) > ε·θ (authors' code; the paper writes v(τ) ≥ 0); "
                                    "ε in [-1, 1].")
mask_rule_option = click.option(
    "--mask-rule", type=click.Choice(["authors", "paper"]), default="authors", show_default=True,
    help="SRP keep rule: authors = v(τ) > ε·θ (their code, whose figures we match); paper = v(τ) ≥ 0 "
         "(Algorithm 1 as printed; --mask-eps does not apply).")
batch_size_option = click.option("--batch-size", "-b", type=click.IntRange(min=1), default=64, show_default=True,
                                 help="Images per simulator call (results do not depend on it).")
threads_option = click.option("--threads", type=click.IntRange(min=1), default=None,
                              help="Threads for the SNN kernels (Numba) and the ANN pass (BLAS), >= 1. Default: the "
                                   "cores available to this process (its CPU affinity), less those other "
                                   "processes keep busy at the start (a parallel kernel waits for its slowest "
                                   "thread). A value above Numba's maximum "
                                   "(NUMBA_NUM_THREADS, by default the machine's CPU count) is capped there. Results "
                                   "do not depend on it.")


def use_threads_option(threads):
    """Context for a command's work: ``--threads`` (or its default) applied to Numba and BLAS, restored after."""
    from srp_np.threads import use_threads

    return use_threads(threads)
