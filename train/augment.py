"""Batch data augmentation in torch (no torchvision): random crop with zero
padding, horizontal flip, Cutout (DeVries & Taylor 2017).  All randomness comes
from the ``torch.Generator`` passed in, so runs are reproducible.

The batch is raw pixels (float in [0, 1], before normalisation), so the crop's
padding and Cutout's hole are raw 0 exactly as torchvision's transforms on PIL
images / the authors' ``Cutout`` (applied after normalisation there; we follow
the common torchvision order and cut on the raw image).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, gen: torch.Generator) -> torch.Tensor:
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    xp = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])  # n x h
    cols = (dx[:, None] + torch.arange(w)[None, :])  # n x w
    idx_n = torch.arange(n)[:, None, None]
    out = xp.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]  # n h w c
    return out.permute(0, 3, 1, 2).contiguous()


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def cutout(x: torch.Tensor, length: int, gen: torch.Generator) -> torch.Tensor:
    """One square hole of side ``length`` per image, centre uniform over the
    image (clipped at the border), as in DeVries & Taylor's Cutout."""
    if length <= 0:
        return x
    n, c, h, w = x.shape
    cy = torch.randint(0, h, (n,), generator=gen)
    cx = torch.randint(0, w, (n,), generator=gen)
    ys = torch.arange(h)[None, :]
    xs = torch.arange(w)[None, :]
    my = ((ys >= (cy[:, None] - length // 2)) & (ys < (cy[:, None] + length - length // 2)))
    mx = ((xs >= (cx[:, None] - length // 2)) & (xs < (cx[:, None] + length - length // 2)))
    hole = my[:, :, None] & mx[:, None, :]
    return x.masked_fill(hole[:, None], 0.0)


def augment(x: torch.Tensor, gen: torch.Generator, padding: int = 4, flip: bool = True,
            cutout_length: int = 0) -> torch.Tensor:
    x = random_crop(x, padding, gen)
    if flip:
        x = random_flip(x, gen)
    if cutout_length:
        x = cutout(x, cutout_length, gen)
    return x
