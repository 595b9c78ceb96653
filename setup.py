"""Install srp-np: the library, the ``srp-np`` command, the shipped models and data.

The repository's top-level folders are mapped into the ``srp_np`` namespace so
that nothing generic (``cli``, ``train``) lands in site-packages:

=========== ======================
folder      installed as
=========== ======================
srp_np/     srp_np
cli/        srp_np.cli
train/      srp_np.train  (PyTorch; extra ``[train]``)
weights/    srp_np._weights  (shipped ``.npz`` models)
data/       srp_np._data  (shipped Fashion-MNIST test split)
=========== ======================
"""
from setuptools import setup

setup(
    name="srp-np",
    version="0.1.0",
    description=(
        "CPU event-driven simulator for ANN-SNN conversion with residual membrane "
        "potential (SRP, Hao et al. AAAI 2023)"
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["srp_np", "srp_np.kernels", "srp_np.opset", "srp_np.engine", "srp_np.cli", "srp_np.train", "srp_np._weights", "srp_np._data"],
    package_dir={
        "srp_np": "srp_np",
        "srp_np.kernels": "srp_np/kernels",
        "srp_np.cli": "cli",
        "srp_np.train": "train",
        "srp_np._weights": "weights",
        "srp_np._data": "data",
    },
    package_data={"srp_np._weights": ["*.npz", "*.md"], "srp_np._data": ["*.npz", "*.md", "LICENSE*"]},
    install_requires=["numpy>=1.24", "numba>=0.58", "scipy>=1.10", "click>=8.0", "tqdm>=4.60", "rich>=12", "threadpoolctl>=3.1"],
    extras_require={
        "train": ["torch==2.13.0"],
        "plot": ["matplotlib>=3.5"],
        "nir": ["nir>=1.0.6; python_version>='3.10'"],   # srp-np nir export/import (HDF5 through h5py)
        "dev": ["pytest>=7", "hypothesis>=6", "matplotlib>=3.5", "pexpect>=4.8", "nbclient>=0.7", "nbformat>=5.7",
                "ipykernel>=6", "nbconvert>=7", "latex2mathml>=3.70"],
        "docs": ["nbconvert>=7", "nbclient>=0.7", "nbformat>=5.7", "ipykernel>=6", "matplotlib>=3.5",
                 "latex2mathml>=3.70"],   # equations as MathML: the pages work offline
        "dask": ["dask[distributed]>=2024.1"],   # --workers / --scheduler (issue 12)
    },
    entry_points={"console_scripts": ["srp-np=srp_np.cli.main:main"]},
)
