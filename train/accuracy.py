"""Input normalisation and the ANN's test accuracy (shared by training and export)."""
from __future__ import annotations

import numpy as np
import torch

from srp_np import datasets as ds


class Normalizer:
    def __init__(self, mean, std, dtype=torch.float32):
        self.mean = torch.tensor(mean, dtype=dtype)[None, :, None, None]
        self.std = torch.tensor(std, dtype=dtype)[None, :, None, None]

    def __call__(self, x):
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def to_unit(x_uint8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(ds.to_float(x_uint8))


@torch.no_grad()
def evaluate(model, x, y, norm, batch_size=500, limit_batches=None, device=None):
    model.eval()
    device = device or next(model.parameters()).device
    correct = total = 0
    for b, i in enumerate(range(0, len(x), batch_size)):
        if limit_batches is not None and b >= limit_batches:
            break
        xb = norm(to_unit(x[i:i + batch_size]).to(device))
        pred = model(xb).argmax(1).cpu()
        correct += int((pred == torch.from_numpy(y[i:i + batch_size])).sum())
        total += len(pred)
    return correct / max(total, 1), total
