"""A store of finished work, so that an interrupted sweep resumes where it stopped.

Each finished unit of work (the ANN counts of one batch of images, the counts of
one sweep cell τ on one batch) is written as one small JSON file in a folder,
named by the SHA-256 of its key. The key holds everything the counts depend on:

* the model: SHA-256 of its graph (canonical JSON) and of every array
  (name, dtype, shape, bytes), :func:`model_sha256`;
* the data: SHA-256 of the batch's normalised float32 inputs and its labels,
  :func:`data_sha256` (so a different image, label, order, padding or
  normalisation misses);
* the settings: τ, T, dtype, mask ε, the kind of work and srp-np's version.

Any change of model, data or settings therefore gives a different key and
misses the store; a hit returns exactly the integers a fresh computation gives
(the simulator's results do not depend on batch size or thread count, so the
counts of a batch are a pure function of the key). Entries are written
atomically (:func:`srp_np.fileio.atomic_write`): an interrupted write leaves
no entry, never a half-written one, and a corrupt entry is ignored (recomputed).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .errors import SrpError

STORE_FORMAT = "srp-np-store/1"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("srp-np")
    except Exception:  # noqa: BLE001 - not installed: the source tree
        return "source"


def _hash_array(h, a: np.ndarray) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{list(a.shape)}".encode())
    h.update(a.tobytes())


def model_sha256(model) -> str:
    """SHA-256 of a model: its graph as canonical JSON and every array (name, dtype, shape, bytes)."""
    cached = getattr(model, "_srp_np_sha256", None)
    if cached:
        return cached
    h = hashlib.sha256()
    h.update(json.dumps(model.graph, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(model.arrays):
        h.update(name.encode() + b"\0")
        _hash_array(h, np.asarray(model.arrays[name]))
    digest = h.hexdigest()
    try:
        object.__setattr__(model, "_srp_np_sha256", digest)
    except (AttributeError, TypeError):
        pass
    return digest


def data_sha256(*arrays) -> str:
    """SHA-256 of arrays (dtype, shape and bytes of each, in order)."""
    h = hashlib.sha256()
    for a in arrays:
        _hash_array(h, np.asarray(a))
    return h.hexdigest()


class ResultStore:
    """Finished work in a folder, one JSON file per key (see the module docstring).

    Parameters
    ----------
    root : path
        The folder (created if missing; its parent must exist).
    """

    def __init__(self, root):
        self.root = Path(root)
        if str(root) == "":
            raise SrpError("the store needs a folder name")
        if self.root.exists() and not self.root.is_dir():
            raise SrpError(f"store {self.root}: not a folder")
        try:
            self.root.mkdir(exist_ok=True)
        except OSError as e:
            raise SrpError(f"store {self.root}: cannot create the folder ({e.strerror or e})") from None
        if not os.access(self.root, os.W_OK):
            raise SrpError(f"store {self.root}: folder not writable")
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(**parts) -> str:
        """SHA-256 of the key's parts (canonical JSON) plus the store format and srp-np's version."""
        parts = {"format": STORE_FORMAT, "version": _version(), **parts}
        return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str):
        """The value stored under ``key``, or None (missing or unreadable entry: a miss)."""
        p = self._path(key)
        try:
            with open(p, encoding="utf-8") as f:
                entry = json.load(f)
            if entry.get("format") != STORE_FORMAT or entry.get("key") != key:
                raise ValueError("not an entry of this key")
        except (OSError, ValueError, AttributeError):
            self.misses += 1
            return None
        self.hits += 1
        return entry["value"]

    def put(self, key: str, value, about: dict | None = None) -> None:
        """Store ``value`` (JSON-serialisable) under ``key``, atomically. ``about``: readable context."""
        from .fileio import atomic_write

        text = json.dumps({"format": STORE_FORMAT, "key": key, "about": about or {}, "value": value})

        def write(tmp):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)

        atomic_write(self._path(key), write)

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*.json"))
