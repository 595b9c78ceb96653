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
def train_cmd(arch, dataset, data_dir, download, L, activation, epochs, batch_size, lr, weight_decay, width, dropout,
              seed, threads, limit_batches, out, checkpoint, resume, no_progress):
    """Train a source ANN (SGD momentum 0.9, cosine schedule) and export it to OUT."""
    _require_torch()
    from srp_np.train.train import train

    from .common import check_outputs

    _run(lambda: check_outputs({"--out": out, "--checkpoint": checkpoint}))
    _run(lambda: train(arch=arch, dataset=dataset, out=out, data_dir=data_dir, L=L, epochs=epochs,
                       batch_size=batch_size, lr=lr, weight_decay=weight_decay, width=width, seed=seed,
                       threads=threads, limit_batches=limit_batches, checkpoint=checkpoint,
                       resume=resume, dropout=dropout, progress=not no_progress, download=download,
                       activation=activation))


@click.command("export")
@click.option("--checkpoint", type=click.Path(dir_okay=False), required=True,
              help="srp-np checkpoint, or a state_dict of the authors' code (ANN2SNN_SRP / QCFS)")
@click.option("--arch", type=click.Choice(ARCH_CHOICES), required=True)
@click.option("--dataset", type=click.Choice(["fashion-mnist", "cifar10", "cifar100", "imagenet"]),
              default=None, help="data set (sets mean/std, classes, channels)")
@click.option("--num-classes", type=click.IntRange(1), default=None)
@click.option("--in-channels", type=click.IntRange(1), default=None)
@click.option("--input-size", type=click.IntRange(1), default=None, help="input height = width")
@click.option("--L", "L", type=click.IntRange(1, 1024), default=None, help="QCFS quantization steps")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="measure ann_accuracy on this data set's test split")
@click.option("--out", type=click.Path(dir_okay=False), required=True)
def export_cmd(checkpoint, arch, dataset, num_classes, in_channels, input_size, L, width, data_dir, out):
    """Fold BN and write CHECKPOINT as an srp-np/1 model file."""
    _require_torch()
    from srp_np.train.export import export_checkpoint

    from .common import check_outputs

    _run(lambda: check_outputs({"--out": out}, {"--checkpoint": checkpoint}))

    def go():
        graph = export_checkpoint(checkpoint, arch, out, dataset=dataset, num_classes=num_classes,
                                  in_channels=in_channels, input_size=input_size, L=L, width=width,
                                  data_dir=data_dir)
        acc = graph.get("ann_accuracy")
        click.echo(f"wrote {out} ({arch}, {len(graph['nodes'])} nodes"
                   + (f", ANN accuracy {acc:.4f}" if acc is not None else "") + ")")

    _run(go)
