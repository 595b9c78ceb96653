"""``srp-np train`` and ``srp-np export`` (PyTorch side; torch is imported lazily).

Registered in :mod:`srp_np.cli.main`.  Without PyTorch both commands print
``error: PyTorch is not installed: pip install 'srp-np[train]'`` and exit 2.
"""
from __future__ import annotations

import sys

import click

ARCH_CHOICES = ["vgg16", "resnet18", "resnet20", "resnet34"]
TORCH_MISSING = "error: PyTorch is not installed: pip install 'srp-np[train]'"


def _fail(msg: str, code: int = 2):
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def _require_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        click.echo(TORCH_MISSING, err=True)
        sys.exit(2)


def _run(fn):
    """Run ``fn`` turning user-facing errors into one line and exit status 2."""
    from srp_np.errors import SrpError

    try:
        return fn()
    except SrpError as e:
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except (OSError, ValueError, RuntimeError) as e:
        msg = str(e).strip().splitlines()
        _fail(f"{type(e).__name__}: {msg[0] if msg else ''}")


@click.command("train")
@click.option("--arch", type=click.Choice(ARCH_CHOICES), required=True, help="network architecture")
@click.option("--dataset", type=click.Choice(["fashion-mnist", "cifar10", "cifar100"]), required=True)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="data folder (Fashion-MNIST default: /usr/share/datasets/fashion-mnist)")
@click.option("--download", is_flag=True,
              help="CIFAR only: fetch the data into --data-dir with torchvision (needs torchvision + internet)")
@click.option("--L", "L", type=click.IntRange(1, 1024), default=None,
              help="QCFS quantization steps [default: 4; for --activation tcl/relu the file records 256, "
                   "which only srp-np's ANN pass and Theorem 1 use]")
@click.option("--activation", type=click.Choice(["qcfs", "tcl", "relu"]), default="qcfs", show_default=True,
              help="source activation: qcfs (Eq. 7), tcl (trainable clipping, Ho & Chang 2021) or relu "
                   "(OPI-style: plain ReLU, thresholds set after training to the 99.9th percentile of each "
                   "layer's positive activations); every one converts to IF neurons with v(0) = θ/2")
@click.option("--epochs", type=click.IntRange(1), default=None,
              help="epochs [default: 300 for CIFAR, 30 for Fashion-MNIST]")
@click.option("--batch-size", type=click.IntRange(1), default=128, show_default=True)
@click.option("--lr", type=float, default=None, help="initial learning rate [default: 0.1; 0.02 for CIFAR-100]")
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="channel width multiplier (1.0 = paper width)")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=0.0, show_default=True,
              help="dropout in VGG-16's classifier")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads")
@click.option("--limit-batches", type=click.IntRange(1), default=None,
              help="train (and evaluate) only this many batches per epoch (smoke tests)")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="exported model (.npz)")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="checkpoint written after every epoch")
@click.option("--resume", is_flag=True, help="continue from --checkpoint if it exists")
@click.option("--no-progress", is_flag=True, help="no progress bar")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when PyTorch sees a GPU, else the CPU), cpu, cuda or cuda:N")
@click.option("--amp/--no-amp", default=None,
              help="mixed precision (float16 autocast + gradient scaling; QCFS stays float32) [default: on with CUDA]")
@click.option("--workers", type=click.IntRange(0), default=0, show_default=True,
              help="data-loader processes that augment the batches (0: in the main process)")
@click.option("--autoaugment", is_flag=True,
              help="the authors' CIFAR-10 AutoAugment policy between the flip and Cutout (no torchvision)")
def train_cmd(arch, dataset, data_dir, download, L, activation, epochs, batch_size, lr, weight_decay, width, dropout,
              seed, threads, limit_batches, out, checkpoint, resume, no_progress, device, amp, workers, autoaugment):
    """Train a source ANN (SGD momentum 0.9, cosine schedule) and export it to OUT."""
    _require_torch()
    from srp_np.train.train import train

    from .common import check_outputs

    _run(lambda: check_outputs({"--out": out, "--checkpoint": checkpoint}))
    _run(lambda: train(arch=arch, dataset=dataset, out=out, data_dir=data_dir, L=L, epochs=epochs,
                       batch_size=batch_size, lr=lr, weight_decay=weight_decay, width=width, seed=seed,
                       threads=threads, limit_batches=limit_batches, checkpoint=checkpoint,
                       resume=resume, dropout=dropout, progress=not no_progress, download=download,
                       device=device, amp=amp, workers=workers, autoaugment=autoaugment,
                       activation=activation))


def _floats(ctx, param, value):
    """click callback: a comma-separated list of finite floats (``--mean 0.49,0.48,0.45``)."""
    import math

    if value is None:
        return None
    try:
        out = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"must be comma-separated numbers, got {value!r}", ctx=ctx, param=param) from None
    if not out or not all(math.isfinite(v) for v in out):
        raise click.BadParameter(f"must be finite numbers, got {value!r}", ctx=ctx, param=param)
    if param.name == "std" and not all(v > 0 for v in out):
        raise click.BadParameter(f"must be positive, got {value!r}", ctx=ctx, param=param)
    return out


@click.command("export")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="srp-np checkpoint, or a state_dict of the authors' code (ANN2SNN_SRP / QCFS), or of the "
                   "--module network (required with --arch)")
@click.option("--arch", type=click.Choice(ARCH_CHOICES), default=None,
              help="one of srp-np's architectures (or use --module)")
@click.option("--module", "module_spec", default=None, metavar="PKG.MOD:FACTORY",
              help="any traceable QCFS network: 'package.module:factory' or 'file.py:factory', a callable "
                   "returning the nn.Module (instead of --arch)")
@click.option("--dataset", type=click.Choice(["fashion-mnist", "cifar10", "cifar100", "imagenet"]),
              default=None, help="data set (sets mean/std, classes, channels; for the authors' checkpoints the "
                                 "mean/std of their data loaders)")
@click.option("--num-classes", type=click.IntRange(1), default=None)
@click.option("--in-channels", type=click.IntRange(1), default=None)
@click.option("--input-size", type=click.IntRange(1), default=None, help="input height = width")
@click.option("--L", "L", type=click.IntRange(1, 1024), default=None,
              help="QCFS quantization steps (required when the checkpoint does not store it)")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--mean", callback=_floats, default=None, help="preprocessing mean per channel, e.g. 0.49,0.48,0.45")
@click.option("--std", callback=_floats, default=None, help="preprocessing std per channel (with --mean)")
@click.option("--replace-maxpool", is_flag=True,
              help="--module: replace max pooling by average pooling of the same window (changes the network)")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="measure ann_accuracy on this data set's test split")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def export_cmd(checkpoint, arch, module_spec, dataset, num_classes, in_channels, input_size, L, width, mean, std,
               replace_maxpool, data_dir, out):
    """Fold BN and write CHECKPOINT (or the --module network) as an srp-np/1 model file."""
    _require_torch()
    from .common import check_outputs

    _run(lambda: check_outputs({"--out": out}, {"--checkpoint": checkpoint}))
    if (arch is None) == (module_spec is None):
        _fail("give exactly one of --arch and --module")
    if arch is not None and checkpoint is None:
        _fail("--arch needs --checkpoint")
    if module_spec is not None:
        for opt, v in (("--num-classes", num_classes), ("--width", width), ("--data-dir", data_dir)):
            if v is not None:
                _fail(f"{opt} is for --arch; with --module the network defines it")
    elif replace_maxpool:
        _fail("--replace-maxpool is for --module (srp-np's architectures have no max pooling)")

    def go():
        if module_spec is not None:
            from srp_np.train.from_torch import export_module_checkpoint

            graph = export_module_checkpoint(module_spec, checkpoint, out, dataset=dataset, in_channels=in_channels,
                                             input_size=input_size, L=L, mean=mean, std=std,
                                             maxpool="avg" if replace_maxpool else "refuse")
            what = graph.get("arch")
        else:
            from srp_np.train.export import export_checkpoint

            graph = export_checkpoint(checkpoint, arch, out, dataset=dataset, num_classes=num_classes,
                                      in_channels=in_channels, input_size=input_size, L=L, width=width,
                                      data_dir=data_dir, mean=mean, std=std)
            what = arch
        acc = graph.get("ann_accuracy")
        pre = graph["preprocess"]
        click.echo(f"wrote {out} ({what}, {len(graph['nodes'])} nodes, L={graph['L']}, mean "
                   f"{','.join(f'{v:.4g}' for v in pre['mean'])}, std {','.join(f'{v:.4g}' for v in pre['std'])}"
                   + (f", ANN accuracy {acc:.4f}" if acc is not None else "") + ")")

    _run(go)
