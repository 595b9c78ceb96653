import numpy as np
import pytest

from srp_np.model import save_model
from srp_np.testing import random_resnet, random_vgg


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(1234)


def make_model(kind: str, input_shape=(3, 12, 12), n_calib=8, seed=0, **kw):
    x = np.random.default_rng(seed + 100).random((n_calib,) + tuple(input_shape))
    builder = random_vgg if kind == "vgg" else random_resnet
    return builder(input_shape=input_shape, rng=seed, calibrate_x=x, **kw)


@pytest.fixture(scope="session")
def model_files(tmp_path_factory):
    """A small random VGG-shaped model on 1×28×28 inputs and matching data files."""
    d = tmp_path_factory.mktemp("models")
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, (24, 1, 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, 24)
    m = random_vgg(input_shape=(1, 28, 28), widths=(4, 8), fc=16, rng=3, calibrate_x=x / 255.0)
    m.graph["dataset"] = "fashion-mnist"
    m.graph["arch"] = "tiny-vgg"
    save_model(d / "model.npz", m.graph, m.arrays)
    np.savez(d / "data.npz", x=x, y=y)
    return d


def load_script(path, name: str):
    """Import the Python file ``path`` (a script outside the packages, e.g. ``docs/tutorials/build.py``)
    as module ``name``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def returns_in_time(fn, timeout=20):
    """Run ``fn`` in a thread; fail (instead of hanging the suite) if it does not return in
    ``timeout`` seconds. Returns ``{"value": ...}`` or ``{"error": exception}``."""
    import threading

    out = {}

    def go():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked"
    return out
