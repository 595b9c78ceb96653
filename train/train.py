"""QCFS ANN training (the paper's recipe: SGD momentum 0.9, cosine learning-rate
decay, lr 0.1, weight decay 5e-4, batch 128), with a resumable checkpoint and
export to the srp-np/1 model format at the end.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from srp_np import datasets as ds
from srp_np.errors import SrpError

from .augment import augment, cutout, random_crop, random_flip
from .activations import ACTIVATIONS, RELU_PERCENTILE as RELU_PCT, SOURCE_L, calibrate_thresholds
from .accuracy import Normalizer, evaluate, to_unit  # noqa: F401  (re-exported)
from .models import build_model, qcfs_modules

# Default epochs: the paper/QCFS code trains CIFAR for 300 epochs; Fashion-MNIST
# converges much faster (30 epochs is plenty for a QCFS ResNet-20).
DEFAULT_EPOCHS = {"fashion-mnist": 30, "cifar10": 300, "cifar100": 300}
# Augmentation per data set: (crop padding, horizontal flip, Cutout length).
# CIFAR as in the authors' code (crop 32 pad 4, flip, Cutout 16 / 8 for
# CIFAR-100); Fashion-MNIST: pad 2, flip, no Cutout.
AUGMENT = {"fashion-mnist": (2, True, 0), "cifar10": (4, True, 16), "cifar100": (4, True, 8)}

# After each SGD step every QCFS threshold is clamped to at least LAMBDA_MIN.
# The authors' code does not do this; without it a deep, narrow VGG-16 at
# lr 0.1 drove some thresholds negative in its first epoch, which makes the
# activation meaningless (and the layer not convertible: theta = lambda > 0).
LAMBDA_MIN = 1e-2


def input_size_for(arch: str, native: int) -> int:
    """VGG-16 needs CIFAR geometry (32x32, 5 poolings); ResNets take the native size."""
    if arch == "vgg16":
        return max(32, 32 * math.ceil(native / 32))
    return native


def download_cifar(dataset: str, data_dir: str):
    """Fetch the CIFAR python-version batches with torchvision (needs torchvision
    and internet); srp-np itself never downloads anything."""
    try:
        import torchvision
    except ImportError:
        raise SrpError("--download needs torchvision (pip install torchvision); or download the CIFAR "
                       "python-version batches yourself and pass --data-dir") from None
    cls = torchvision.datasets.CIFAR10 if dataset == "cifar10" else torchvision.datasets.CIFAR100
    try:
        for train in (True, False):
            cls(root=data_dir, train=train, download=True)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise SrpError(f"downloading {dataset} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def load_train_test(dataset: str, data_dir: Optional[str], arch: str, download: bool = False):
    dataset = ds.normalize_name(dataset)
    if dataset == "imagenet":
        raise SrpError("training on ImageNet is not supported on CPU; use the authors' code and `srp-np export`")
    if download:
        if dataset not in ("cifar10", "cifar100"):
            raise SrpError("--download is only for cifar10/cifar100 (Fashion-MNIST: apt install dataset-fashion-mnist)")
        if data_dir is None:
            raise SrpError("--download needs --data-dir (where to put the data)")
        download_cifar(dataset, data_dir)
    xtr, ytr = ds.load_dataset(dataset, "train", data_dir)
    xte, yte = ds.load_dataset(dataset, "test", data_dir)
    size = input_size_for(arch, xtr.shape[-1])
    shape = (xtr.shape[1], size, size)
    return ds.fit_to_shape(xtr, shape), ytr, ds.fit_to_shape(xte, shape), yte


def resolve_device(device: Optional[str]) -> torch.device:
    """``auto`` (CUDA when PyTorch sees a CUDA device, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    d = (device or "auto").lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d == "cpu":
        return torch.device("cpu")
    if d == "cuda" or d.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise SrpError(f"--device {device}: PyTorch sees no CUDA device (torch.cuda.is_available() is False: "
                           f"no GPU, or a CPU-only PyTorch build {torch.__version__})")
        try:
            dev = torch.device(d)
        except RuntimeError:
            raise SrpError(f"--device {device}: not a device name") from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise SrpError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise SrpError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")


def _batch_seed(seed: int, epoch: int, b: int) -> int:
    """The augmentation seed of batch b of an epoch when a DataLoader's workers augment
    (independent of the number of workers and of the order in which they finish)."""
    return (int(seed) * 1_000_003 + int(epoch) * 65_537 + int(b) * 257 + 12_345) % (2 ** 63 - 1)


def augment_batch(xb: torch.Tensor, gen: torch.Generator, padding: int, flip: bool, cut: int, policy=None):
    """Raw batch in [0, 1] -> crop, flip, [AutoAugment policy], Cutout (the authors' order)."""
    if policy is None:
        return augment(xb, gen, padding, flip, cut)
    xb = random_crop(xb, padding, gen)
    if flip:
        xb = random_flip(xb, gen)
    xb = policy.batch(xb, gen)
    return cutout(xb, cut, gen)


class _Batches(torch.utils.data.Dataset):
    """One epoch's augmented training batches, batch b made from ``perm[b·bs:(b+1)·bs]`` with a
    generator seeded by :func:`_batch_seed` (for DataLoader workers)."""

    def __init__(self, x, y, perm, batch_size, batches, seed, epoch, padding, flip, cut, policy):
        self.x, self.y, self.perm = x, y, perm
        self.bs, self.n, self.seed, self.epoch = batch_size, batches, seed, epoch
        self.aug = (padding, flip, cut, policy)

    def __len__(self):
        return self.n

    def __getitem__(self, b):
        idx = self.perm[b * self.bs:(b + 1) * self.bs]
        g = torch.Generator().manual_seed(_batch_seed(self.seed, self.epoch, b))
        xb = self.x[idx].float().div_(255.0)
        return augment_batch(xb, g, *self.aug), self.y[idx]


def _save_atomic(obj, path):
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _lr_at(step, total_steps, base_lr):
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))


def train(arch: str, dataset: str, out: str, data_dir: Optional[str] = None, L: Optional[int] = None,
          epochs: Optional[int] = None, batch_size: int = 128, lr: Optional[float] = None,
          weight_decay: float = 5e-4, width: float = 1.0, seed: int = 0, threads: Optional[int] = None,
          limit_batches: Optional[int] = None, checkpoint: Optional[str] = None, resume: bool = False,
          dropout: float = 0.0, progress: bool = True, log=None,
          download: bool = False, device: Optional[str] = "auto", amp: Optional[bool] = None,
          workers: int = 0, autoaugment: bool = False, _stop_after: Optional[int] = None, activation: str = "qcfs",
          calibration_images: int = 2048):
    """Train a network and export it to ``out`` (srp-np/1).  Returns the exported graph.

    ``activation`` is the source activation (:mod:`srp_np.train.activations`): ``qcfs`` (Eq. 7,
    ``L`` steps, default 4), ``tcl`` (trainable clip) or ``relu`` (OPI-style; thresholds set after
    training to a percentile of the activations on the first ``calibration_images`` training
    images). For ``tcl``/``relu`` the file records ``L`` = ``SOURCE_L`` (256) unless ``L`` is given.

    ``device`` is ``auto`` (CUDA when PyTorch sees one), ``cpu`` or ``cuda[:N]``. ``amp``
    (default: on with CUDA) runs the forward pass under ``torch.autocast`` in float16 with a
    gradient scaler; the QCFS activations still compute in float32. ``workers`` > 0 augments
    the batches in that many DataLoader processes, each batch with its own generator seeded
    from (seed, epoch, batch), so the result does not depend on the number of workers (it
    differs from ``workers=0``, which draws everything from one generator as before).
    ``autoaugment`` adds the authors' CIFAR-10 AutoAugment policy
    (:class:`srp_np.train.autoaugment.CIFAR10Policy`) between the flip and Cutout.
    """
    log = log or (lambda s: print(s, flush=True))
    dataset = ds.normalize_name(dataset)
    activation = (activation or "qcfs").lower()
    if activation not in ACTIVATIONS:
        raise SrpError(f"unknown activation {activation!r}; choose from {', '.join(ACTIVATIONS)}")
    if L is None:
        L = 4 if activation == "qcfs" else SOURCE_L
    if epochs is None:
        epochs = DEFAULT_EPOCHS.get(dataset, 300)
    if lr is None:
        lr = 0.02 if dataset == "cifar100" else 0.1
    if epochs < 1 or batch_size < 1 or L < 1 or width <= 0:
        raise SrpError("epochs, batch size and L must be >= 1 and width > 0")
    if resume and not checkpoint:
        raise SrpError("--resume needs --checkpoint")
    if checkpoint and os.path.exists(checkpoint) and not os.path.isfile(checkpoint):
        raise SrpError(f"--checkpoint {checkpoint} is not a regular file (a folder, FIFO or device): refused")
    dev = resolve_device(device)
    if dev.type == "cuda":   # deterministic cuBLAS (torch.use_deterministic_algorithms below) needs this
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if amp is None:
        amp = dev.type == "cuda"
    if amp and dev.type != "cuda":
        raise SrpError("--amp (mixed precision) needs --device cuda")
    if int(workers) < 0:
        raise SrpError(f"--workers must be >= 0, got {workers}")
    policy = None
    if autoaugment:
        from .autoaugment import CIFAR10Policy

        policy = CIFAR10Policy()
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    np.random.seed(seed)
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
    except Exception:  # pragma: no cover
        pass

    xtr, ytr, xte, yte = load_train_test(dataset, data_dir, arch, download)
    mean, std = ds.dataset_stats(dataset)
    num_classes = ds.NUM_CLASSES[dataset]
    in_ch, size = xtr.shape[1], xtr.shape[-1]
    model = build_model(arch, in_channels=in_ch, num_classes=num_classes, L=L, width=width,
                        input_size=size, dropout=dropout, activation=activation).to(dev)
    norm = Normalizer(mean, std)
    norm.mean, norm.std = norm.mean.to(dev), norm.std.to(dev)
    scaler = torch.amp.GradScaler("cuda", enabled=bool(amp))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    config = {"arch": arch, "dataset": dataset, "L": int(L), "width": float(width),
              "in_channels": int(in_ch), "num_classes": int(num_classes), "input_size": int(size),
              "batch_size": int(batch_size), "lr": float(lr), "weight_decay": float(weight_decay),
              "epochs": int(epochs), "seed": int(seed), "dropout": float(dropout),
              "limit_batches": None if limit_batches is None else int(limit_batches),
              "autoaugment": bool(autoaugment), "workers": int(workers), "activation": activation}
    start_epoch, history = 0, []
    if resume and os.path.exists(checkpoint):
        from srp_np.fileio import open_regular

        with open_regular(checkpoint, "checkpoint") as f:
            try:
                ck = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
                raise SrpError(f"{checkpoint}: cannot load as a weights-only torch checkpoint ({first})") from None
        keys = ("config", "model", "optimizer", "generator", "epoch")
        if not isinstance(ck, dict) or not all(k in ck for k in keys) or not isinstance(ck["config"], dict):
            raise SrpError(f"{checkpoint}: not a checkpoint of srp-np train (needs {', '.join(keys)})")
        ck["config"].setdefault("activation", "qcfs")        # checkpoints written before activations existed
        for k in ("arch", "dataset", "L", "width", "batch_size", "seed", "autoaugment", "activation"):
            if ck["config"].get(k, False if k == "autoaugment" else None) != config[k]:
                raise SrpError(f"{checkpoint}: checkpoint has {k}={ck['config'].get(k)!r}, "
                               f"this run has {config[k]!r}")
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            gen.set_state(ck["generator"])
            if amp and "scaler" in ck:
                scaler.load_state_dict(ck["scaler"])
            start_epoch, history = int(ck["epoch"]), list(ck.get("history", []))
        except (RuntimeError, ValueError, TypeError, KeyError, AttributeError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
            raise SrpError(f"{checkpoint}: checkpoint does not fit this run ({type(e).__name__}: {first})") from None
        log(f"resumed from {checkpoint} after epoch {start_epoch}")
    padding, flip, cut = AUGMENT[dataset]
    n = len(xtr)
    batches = n // batch_size  # drop the last partial batch
    if limit_batches is not None:
        batches = min(batches, int(limit_batches))
    batches = max(batches, 1)
    total_steps = epochs * batches
    ups = [m.up for _, m in qcfs_modules(model)]
    xtr_t = torch.from_numpy(xtr)
    ytr_t = torch.from_numpy(ytr)
    t_start = time.time()
    for epoch in range(start_epoch, epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum = correct = seen = 0
        t0 = time.time()
        if workers > 0:
            loader = torch.utils.data.DataLoader(
                _Batches(xtr_t, ytr_t, perm, batch_size, batches, seed, epoch, padding, flip, cut, policy),
                batch_size=None, shuffle=False, num_workers=int(workers), pin_memory=dev.type == "cuda")
            it = enumerate(loader)
        else:
            it = ((b, None) for b in range(batches))
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(it, total=batches, desc=f"epoch {epoch + 1}/{epochs}", leave=False, file=sys.stderr,
                       mininterval=5.0, dynamic_ncols=True)
            it = bar
        for b, batch in it:
            step = epoch * batches + b
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, total_steps, lr)
            if batch is None:
                idx = perm[b * batch_size:(b + 1) * batch_size]
                xb = augment_batch(xtr_t[idx].float().div_(255.0), gen, padding, flip, cut, policy)
                yb = ytr_t[idx]
            else:
                xb, yb = batch
            xb = norm(xb.to(dev, non_blocking=True))
            yb = yb.to(dev, non_blocking=True)
            with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=bool(amp)):
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():  # keep every threshold positive (see LAMBDA_MIN)
                for up in ups:
                    up.clamp_(min=LAMBDA_MIN)
            loss_sum += loss.item() * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(yb)
            if bar is not None and b % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        if bar is not None:
            bar.close()
        test_acc, _ = evaluate(model, xte, yte, norm, limit_batches=limit_batches)
        lams = [m.threshold for _, m in qcfs_modules(model)]
        rec = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen,
               "test_acc": test_acc, "seconds": time.time() - t0}
        history.append(rec)
        log(f"epoch {epoch + 1}/{epochs} loss {rec['loss']:.4f} train_acc {rec['train_acc']:.4f} "
            f"test_acc {test_acc:.4f} lr {opt.param_groups[0]['lr']:.5f} time {rec['seconds']:.0f}s "
            f"lambda [{' '.join(f'{v:.2f}' for v in lams)}]")
        if checkpoint:
            state = {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "optimizer": opt.state_dict(),
                     "generator": gen.get_state(), "epoch": epoch + 1, "config": config, "history": history}
            if amp:
                state["scaler"] = scaler.state_dict()
            _save_atomic(state, checkpoint)
        if _stop_after is not None and epoch + 1 >= _stop_after:  # tests: simulate an interruption
            return None
    if activation == "relu":
        xc = norm(to_unit(xtr[:max(1, int(calibration_images))]))
        ths = calibrate_thresholds(model, xc)
        config["calibrated"] = True
        log(f"thresholds: {RELU_PCT}th percentile of each ReLU layer's positive activations on "
            f"{len(xc)} training images: [{' '.join(f'{v:.2f}' for v in ths)}]")
        if checkpoint:
            _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(),
                          "generator": gen.get_state(), "epoch": epochs,
                          "config": config, "history": history}, checkpoint)
    acc, count = evaluate(model, xte, yte, norm, limit_batches=limit_batches)
    log(f"final ANN test accuracy {acc:.4f} on {count} images; "
        f"training wall time {time.time() - t_start:.0f}s")
    from .export import export_model

    model = model.cpu()
    graph = export_model(model, out, arch=arch, dataset=dataset, L=L, width=width,
                         ann_accuracy=acc, extra={"ann_accuracy_images": int(count),
                                                  "epochs": int(epochs), "train": config,
                                                  "source_activation": activation})
    log(f"wrote {out}")
    return graph
