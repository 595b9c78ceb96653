"""Data readers (NumPy only).

Every reader returns ``(x, y)`` with ``x`` uint8 of shape N x C x H x W (or
float32 in [0, 1] for ``.npz`` files that hold floats) and ``y`` int64 labels.
Nothing here downloads anything.

Data sets and their normalisation constants:

================ ============================== ==============================
name             mean                           std
================ ============================== ==============================
fashion-mnist    0.2860                         0.3530
cifar10          0.4914 0.4822 0.4465           0.2470 0.2435 0.2616
cifar100         0.5071 0.4865 0.4409           0.2673 0.2564 0.2762
imagenet         0.485 0.456 0.406              0.229 0.224 0.225
================ ============================== ==============================
"""
from __future__ import annotations

import gzip
import pickle
import struct
import zipfile
from importlib import resources
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .errors import SrpError
from .fileio import READ_ERRORS, npy_member_header, open_regular, read_npy_member
from .limits import check_memory

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagenet")

DATASET_STATS: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

NUM_CLASSES = {"fashion-mnist": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}

DEFAULT_FMNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def dataset_stats(name: str):
    """(mean, std) lists for a data set name."""
    key = normalize_name(name)
    mean, std = DATASET_STATS[key]
    return list(mean), list(std)


def normalize_name(name: str) -> str:
    key = name.lower().replace("_", "-")
    aliases = {"fmnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
               "cifar-10": "cifar10", "cifar-100": "cifar100"}
    key = aliases.get(key, key)
    if key not in DATASETS:
        raise SrpError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")
    return key


# ----------------------------------------------------------------------------- idx

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """Read an idx file (optionally gzip-compressed), as used by (Fashion-)MNIST.

    The header is read first and the size it declares checked against the memory
    available before the data is read (or decompressed). A FIFO or device is refused."""
    path = Path(path)
    if not path.exists():
        raise SrpError(f"{path}: no such file")
    with open_regular(path, "idx file") as raw:
        try:
            f = gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else raw
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES:
                raise SrpError(f"{path}: not an idx file (bad magic number)")
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            ndim = head[3]
            dims = f.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise SrpError(f"{path}: truncated idx header")
            shape = struct.unpack(">" + "I" * ndim, dims)
            nbytes = (int(np.prod(shape, dtype=object)) if ndim else 1) * dtype.itemsize
            check_memory(2 * nbytes, f"{path}: idx data of shape {list(shape)}", "this file is too large")
            data = f.read(nbytes + 1)
        except SrpError:
            raise
        except READ_ERRORS as e:
            raise SrpError(f"{path}: cannot read idx file ({type(e).__name__}: {e})") from None
    if len(data) != nbytes:
        raise SrpError(f"{path}: idx file size does not match its header shape {shape}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_images(x: np.ndarray, where) -> np.ndarray:
    """idx images as uint8 (integer pixels 0..255) or float32 (float pixels in [0, 1]);
    anything else is refused rather than converted into garbage."""
    if x.dtype == np.uint8:
        return x
    with np.errstate(all="ignore"):
        if np.issubdtype(x.dtype, np.integer):
            if x.size and (x.min() < 0 or x.max() > 255):
                raise SrpError(f"{where}: integer idx images must hold pixels 0..255")
            return x.astype(np.uint8)
        if x.size and (not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1):
            raise SrpError(f"{where}: float idx images must hold raw pixels in [0, 1]")
        return x.astype(np.float32)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz", stem.replace("-idx", ".idx")):
        p = directory / name
        if p.exists():
            return p
    raise SrpError(f"{directory}: no {stem}[.gz] (expected the Fashion-MNIST idx files; "
                   f"on Debian: apt install dataset-fashion-mnist, or pass `data_dir`)")


def load_fashion_mnist(split: str = "test", data_dir: Optional[str] = None):
    """Fashion-MNIST from the idx(.gz) files in ``data_dir``
    (default /usr/share/datasets/fashion-mnist, Debian's dataset-fashion-mnist)."""
    d = Path(data_dir or DEFAULT_FMNIST_DIR)
    if not d.is_dir():
        raise SrpError(f"{d}: Fashion-MNIST directory not found (apt install dataset-fashion-mnist, or pass `data_dir`)")
    prefix = {"train": "train", "test": "t10k"}[split]
    x = read_idx(_find(d, f"{prefix}-images-idx3-ubyte"))
    y = read_idx(_find(d, f"{prefix}-labels-idx1-ubyte"))
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise SrpError(f"{d}: Fashion-MNIST {split} images {x.shape} and labels {y.shape} do not match")
    if 0 in x.shape[1:]:
        raise SrpError(f"{d}: Fashion-MNIST {split} images are {x.shape[1]}x{x.shape[2]}: empty")
    if not np.issubdtype(y.dtype, np.integer):
        raise SrpError(f"{d}: Fashion-MNIST {split} labels must be integers, got {y.dtype}")
    return np.ascontiguousarray(_idx_images(x, d)[:, None]), y.astype(np.int64)


# ----------------------------------------------------------------------------- CIFAR

class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for the CIFAR python batches: only builtins containers and
    NumPy arrays may be created; anything else is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("builtins", "bytes"), ("builtins", "list"), ("builtins", "dict"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_cifar_pickle(path: Path) -> dict:
    if not path.exists():
        raise SrpError(f"{path}: no such file (expected the CIFAR python-version batches)")
    try:
        with open_regular(path, "CIFAR batch") as f:
            d = _RestrictedUnpickler(f, encoding="bytes").load()
    except SrpError:
        raise
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a bad file
        raise SrpError(f"{path}: not a CIFAR python batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise SrpError(f"{path}: not a CIFAR python batch (not a dict)")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_arrays(path: Path, label_key: str):
    d = _load_cifar_pickle(path)
    if "data" not in d or label_key not in d:
        raise SrpError(f"{path}: CIFAR batch lacks 'data' or '{label_key}'")
    try:
        with np.errstate(all="ignore"):
            data = np.asarray(d["data"])
            labels = np.asarray(d[label_key])
    except (ValueError, TypeError, OverflowError, RecursionError) as e:
        raise SrpError(f"{path}: CIFAR batch holds malformed arrays ({type(e).__name__})") from None
    if not np.issubdtype(data.dtype, np.integer) or not np.issubdtype(labels.dtype, np.integer):
        raise SrpError(f"{path}: CIFAR batch must hold integer data and labels, got {data.dtype} and {labels.dtype}")
    if data.ndim != 2 or data.shape[1] != 3072 or labels.ndim != 1 or data.shape[0] != labels.shape[0]:
        raise SrpError(f"{path}: CIFAR batch has data of shape {data.shape} for labels of shape {labels.shape}")
    if data.size and (data.min() < 0 or data.max() > 255):
        raise SrpError(f"{path}: CIFAR batch pixels must lie in 0..255")
    return data.astype(np.uint8).reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar(name: str, split: str = "test", data_dir: Optional[str] = None):
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``,
    ``test``) python-version batches from ``data_dir`` (the folder itself or
    its parent holding ``cifar-10-batches-py`` / ``cifar-100-python``)."""
    name = normalize_name(name)
    if data_dir is None:
        raise SrpError(f"{name}: pass `data_dir` (the folder of the python-version batches)")
    d = Path(data_dir)
    sub = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
    if (d / sub).is_dir():
        d = d / sub
    if not d.is_dir():
        raise SrpError(f"{d}: directory not found")
    if name == "cifar10":
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        key = "labels"
    else:
        files = ["train" if split == "train" else "test"]
        key = "fine_labels"
    xs, ys = zip(*(_cifar_arrays(d / f, key) for f in files))
    return np.concatenate(xs), np.concatenate(ys)


# ----------------------------------------------------------------------------- ImageFolder

_IMG_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


def _decode_image(p: Path, size: int, resize: int) -> np.ndarray:
    """One image file → 3×size×size uint8: short side resized to ``resize`` (bilinear), centre crop ``size``."""
    from PIL import Image

    try:
        with open_regular(p, "image") as fh, Image.open(fh) as im:    # a FIFO named x.jpg never blocks
            im = im.convert("RGB")
            w, h = im.size
            s = resize / min(w, h)
            nw, nh = max(size, round(w * s)), max(size, round(h * s))
            im = im.resize((nw, nh), Image.BILINEAR)
            left, top = (nw - size) // 2, (nh - size) // 2
            im = im.crop((left, top, left + size, top + size))
            return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    except SrpError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as e:
        raise SrpError(f"{p}: cannot read image ({type(e).__name__}: {str(e)[:120]})") from None


def _folder_items(root: Path) -> list:
    try:
        from PIL import Image  # noqa: F401
    except ImportError:
        raise SrpError("reading image folders needs Pillow: pip install pillow") from None
    if not root.is_dir():
        raise SrpError(f"{root}: directory not found")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise SrpError(f"{root}: no class subfolders")
    items = []
    for ci, c in enumerate(classes):
        for p in sorted((root / c).iterdir()):
            if p.suffix.lower() in _IMG_EXT:
                items.append((p, ci))
    if not items:
        raise SrpError(f"{root}: no images found in the class subfolders")
    return items


# ----------------------------------------------------------------------------- streaming sources

class ArraySource:
    """Images already in memory (``.npz``, idx, CIFAR, the shipped split) as a data source.

    A data source knows its labels (``labels``, N) without decoding any image and
    yields raw images on demand: ``read(start, stop)`` → ``(x, y)`` (uint8 or float32
    N×C×H×W), ``take(indices)`` → a source of those images, ``batches(size)`` → an
    iterator of ``(x, y)``. Memory: the arrays themselves.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, origin: str = "arrays"):
        self.x, self.labels, self.origin = x, np.asarray(y, dtype=np.int64), origin

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def read(self, start: int = 0, stop: int | None = None):
        return self.x[start:stop], self.labels[start:stop]

    def take(self, indices) -> "ArraySource":
        idx = _as_index(indices, len(self))
        return ArraySource(self.x[idx], self.labels[idx], self.origin)

    def batches(self, size: int, start: int = 0, stop: int | None = None):
        return _batches(self, size, start, stop)

    def fingerprint(self) -> str:
        """SHA-256 of the images and labels."""
        from .store import data_sha256

        return data_sha256(self.x, self.labels)

    @property
    def image_shape(self) -> tuple:
        return tuple(self.x.shape[1:])


class ImageFolderSource:
    """An ImageNet-style folder (one subfolder of images per class, classes sorted by name),
    decoded lazily: listing the folder reads no image; ``read(start, stop)`` decodes just
    those files (short side resized to ``resize``, centre crop ``size``, uint8 3×size×size).
    Memory: one batch of decoded images plus the list of file names. Needs Pillow."""

    def __init__(self, root, size: int = 224, resize: int = 256, items: list | None = None):
        self.root, self.size, self.resize = Path(root), int(size), int(resize)
        self.items = _folder_items(self.root) if items is None else list(items)
        self.labels = np.array([c for _, c in self.items], dtype=np.int64)
        self.origin = f"image folder {self.root}"

    def __len__(self) -> int:
        return len(self.items)

    def read(self, start: int = 0, stop: int | None = None):
        items = self.items[start:stop]
        x = np.empty((len(items), 3, self.size, self.size), np.uint8)
        for i, (p, _) in enumerate(items):
            x[i] = _decode_image(p, self.size, self.resize)
        return x, np.array([c for _, c in items], dtype=np.int64)

    def take(self, indices) -> "ImageFolderSource":
        idx = _as_index(indices, len(self))
        return ImageFolderSource(self.root, self.size, self.resize, [self.items[i] for i in np.arange(len(self))[idx]])

    def batches(self, size: int, start: int = 0, stop: int | None = None):
        return _batches(self, size, start, stop)

    def fingerprint(self) -> str:
        """SHA-256 of the file list: relative path, size, modification time and label of each file, and the
        decoding settings (reading every file to hash it would cost a pass over the data)."""
        import hashlib

        h = hashlib.sha256(f"folder size={self.size} resize={self.resize}".encode())
        for p, c in self.items:
            try:
                st = p.stat()
                h.update(f"{p.relative_to(self.root)}|{st.st_size}|{st.st_mtime_ns}|{c}\n".encode())
            except (OSError, ValueError):
                h.update(f"{p}|?|{c}\n".encode())
        return h.hexdigest()

    @property
    def image_shape(self) -> tuple:
        return (3, self.size, self.size)


def _as_index(indices, n: int):
    if isinstance(indices, slice):
        return indices
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise SrpError(f"image index out of range 0..{n - 1}")
    return idx


def _batches(source, size: int, start: int = 0, stop: int | None = None):
    stop = len(source) if stop is None else min(int(stop), len(source))
    for s in range(int(start), stop, int(size)):
        yield source.read(s, min(stop, s + int(size)))


SUBSETS = ("first", "balanced")


def subset_indices(labels, limit: int | None, subset: str = "first") -> np.ndarray:
    """Which images ``--limit N --subset first|balanced`` evaluates (ascending indices).

    * ``first``: the first N images in data order (for a class-sorted image folder, the
      first classes only);
    * ``balanced``: a deterministic class-balanced subset: the images are taken class by
      class in rounds (round k takes each class's k-th image in data order, classes in label
      order) until N are taken, so class counts differ by at most one (unless a class runs
      out of images). The same N always gives the same images.
    """
    labels = np.asarray(labels)
    n = int(labels.shape[0])
    if subset not in SUBSETS:
        raise SrpError(f"`subset` must be one of {', '.join(SUBSETS)}, got {subset!r}")
    if limit is None or limit >= n:
        return np.arange(n)
    if subset == "first":
        return np.arange(int(limit))
    order = np.argsort(labels, kind="stable")                 # grouped by class, data order inside
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    rank = np.arange(n) - np.repeat(starts, counts)           # position of each image inside its class
    chosen = order[np.lexsort((labels[order], rank))[:int(limit)]]
    return np.sort(chosen)


def load_image_folder(root, size: int = 224, resize: int = 256, limit: Optional[int] = None):
    """ImageNet-style folder (one subfolder of JPEG/PNG images per class, classes
    sorted by name): resize the short side to ``resize``, center-crop ``size``.
    Reads every image into memory (see :class:`ImageFolderSource` to stream). Needs Pillow."""
    src = ImageFolderSource(root, size, resize)
    if limit is not None:
        src = src.take(slice(0, limit))
    check_memory(len(src) * 3 * size * size * 8, f"{root}: {len(src)} images of 3x{size}x{size}",
                 "evaluate fewer images (`limit`)")
    return src.read()


def dataset_source(name: str, split: str = "test", data_dir: Optional[str] = None):
    """A data source for a data set name: image folders (ImageNet) are decoded lazily;
    the other formats are single files read whole (:class:`ArraySource`)."""
    key = normalize_name(name)
    if key != "imagenet":
        x, y = load_dataset(key, split, data_dir)
        return ArraySource(x, y, f"{key} {split} split")
    if data_dir is None:
        raise SrpError("imagenet: pass `data_dir` (folder with train/ and val/ class subfolders)")
    d = Path(data_dir)
    sub = d / ("train" if split == "train" else "val")
    return ImageFolderSource(sub if sub.is_dir() else d)


# ----------------------------------------------------------------------------- npz

def load_npz_data(path):
    """An ``.npz`` with ``x`` (N x C x H x W, uint8 or float in [0, 1]) and ``y`` (N labels).

    Only ``x`` and ``y`` are read, after their declared sizes have been checked against
    the memory available; a FIFO or device is refused before anything is read."""
    if str(path) == "":
        raise SrpError("data file: empty file name")
    path = Path(path)
    if not path.exists():
        raise SrpError(f"{path}: no such file")
    with open_regular(path, "data file") as f:
        try:
            with zipfile.ZipFile(f) as zf:
                members = {(i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i
                           for i in zf.infolist()}
                if "x" not in members or "y" not in members:
                    raise SrpError(f"{path}: data file needs arrays 'x' and 'y', has {sorted(members)[:10]}")
                heads = {k: npy_member_header(zf, members[k]) for k in ("x", "y")}
                total = sum(int(np.prod(s, dtype=object)) * dt.itemsize for s, dt in heads.values())
                check_memory(2 * total, f"{path}: data arrays x, y", "this data file is too large (split it)")
                x, y = read_npy_member(zf, members["x"]), read_npy_member(zf, members["y"])
        except SrpError:
            raise
        except READ_ERRORS as e:
            raise SrpError(f"{path}: not a readable .npz file ({type(e).__name__}: {str(e)[:120]})") from None
    if x.ndim != 4:
        raise SrpError(f"{path}: x must be N x C x H x W, got shape {x.shape}")
    if 0 in x.shape[1:]:
        raise SrpError(f"{path}: x holds empty images (shape {x.shape})")
    if y.ndim != 1 or len(y) != len(x):
        raise SrpError(f"{path}: y must hold one label per image ({len(x)}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise SrpError(f"{path}: y must be integer labels, got {y.dtype}")
    if x.dtype == np.uint8:
        pass
    elif np.issubdtype(x.dtype, np.floating):
        with np.errstate(all="ignore"):
            if x.size and (not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1):
                raise SrpError(f"{path}: float x must lie in [0, 1] (raw pixels, before normalisation)")
        x = x.astype(np.float32)
    else:
        raise SrpError(f"{path}: x must be uint8 or float in [0, 1], got {x.dtype}")
    return x, y.astype(np.int64)


def load_shipped_test_set():
    """The committed Fashion-MNIST 10k test split (``srp_np/_data/fashion_mnist_test.npz``)."""
    try:
        ref = resources.files("srp_np._data").joinpath("fashion_mnist_test.npz")
        with resources.as_file(ref) as p:
            return load_npz_data(p)
    except ModuleNotFoundError:
        p = Path(__file__).resolve().parent.parent / "data" / "fashion_mnist_test.npz"
        return load_npz_data(p)


def load_dataset(name: str, split: str = "test", data_dir: Optional[str] = None):
    """Dispatch on a data set name (see :data:`DATASETS`)."""
    key = normalize_name(name)
    if key == "fashion-mnist":
        if split == "test" and data_dir is None and not Path(DEFAULT_FMNIST_DIR).is_dir():
            return load_shipped_test_set()
        return load_fashion_mnist(split, data_dir)
    if key in ("cifar10", "cifar100"):
        return load_cifar(key, split, data_dir)
    if data_dir is None:
        raise SrpError("imagenet: pass `data_dir` (folder with train/ and val/ class subfolders)")
    d = Path(data_dir)
    sub = d / ("train" if split == "train" else "val")
    return load_image_folder(sub if sub.is_dir() else d)


# ----------------------------------------------------------------------------- helpers

def to_float(x: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]; float input is returned as float32."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return x.astype(np.float32, copy=False)


def fit_to_shape(x: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    """Fit images N x C x H x W to a model's ``input_shape`` [C, H, W]: equal
    shapes pass through; smaller images are zero-padded (raw pixel 0) centered,
    e.g. Fashion-MNIST 28x28 -> 32x32 for CIFAR-geometry models.  A channel
    mismatch or larger images are an error."""
    C, H, W = (int(v) for v in input_shape)
    if x.ndim != 4:
        raise SrpError(f"images must be N x C x H x W, got shape {x.shape}")
    n, c, h, w = x.shape
    if 0 in (c, h, w):
        raise SrpError(f"images of shape {c}x{h}x{w} are empty")
    if (c, h, w) == (C, H, W):
        return x
    if c != C:
        raise SrpError(f"the model wants {C} input channel(s), the data has {c}")
    if h > H or w > W:
        raise SrpError(f"images of {h}x{w} do not fit the model's {H}x{W} input (no cropping is done)")
    top, left = (H - h) // 2, (W - w) // 2
    out = np.zeros((n, c, H, W), dtype=x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out
