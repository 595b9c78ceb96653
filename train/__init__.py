"""PyTorch side of srp-np (installed as ``srp_np.train``; needs the ``[train]`` extra).

* :mod:`.qcfs`    -- the QCFS activation (Eq. 7) with trainable threshold ``up``.
* :mod:`.activations` -- other sources for SRP (Fig. 7): TCL (trainable clip), OPI-style ReLU.
* :mod:`.models`  -- VGG-16 (CIFAR variant), ResNet-18/20/34 with QCFS.
* :mod:`.augment` -- random crop with padding, horizontal flip, Cutout (no torchvision).
* :mod:`.train`   -- ``srp-np train``: SGD + cosine schedule, resumable checkpoints.
* :mod:`.export`  -- BN folding and export to the srp-np/1 model format, and
  import of checkpoints of the authors' code (``srp-np export``).
* :mod:`.from_torch` -- any traceable QCFS network (torch.fx): :func:`from_torch`,
  ``srp-np export --module pkg.mod:factory``.

Importing this package imports torch; the rest of srp-np never does.
"""
