"""The AutoAugment CIFAR-10 policy of the authors' training code, in torch (no torchvision, no PIL).

hzc1208/ANN2SNN_SRP (``dataprocess.py``) and putshua/SNN_conversion_QCFS train CIFAR-10 and
CIFAR-100 with ``RandomCrop(32, 4)``, ``RandomHorizontalFlip``, ``CIFAR10Policy()`` (the 25
sub-policies of Cubuk et al. 2019, "AutoAugment", as implemented on PIL images by
DeepVoltaire/AutoAugment), then ``Cutout``. :class:`CIFAR10Policy` here applies the same 25
sub-policies, with the same probabilities and magnitude tables, to one image (C×H×W float in
[0, 1], treated as 8-bit: every operation's result is rounded to a multiple of 1/255, as PIL's
uint8 images are). Each sub-policy is ``(p1, op1, m1, p2, op2, m2)``: op1 is applied with
probability p1 and magnitude ``RANGES[op1][m1]``, then op2 likewise; the signed operations
(shear, translate, rotate, colour, contrast, sharpness, brightness) draw the sign ±1 uniformly.

The operations, as PIL computes them (``ImageOps`` / ``ImageEnhance``), with fill 128/255:

* shearX/Y: output pixel (x, y) samples input (x + m·y, y) / (x, y + m·x), bicubic;
* translateX/Y: shift by m·W (m·H) pixels, nearest;
* rotate: m degrees counter-clockwise about the centre, nearest;
* colour, contrast, sharpness, brightness: ``blend(degenerate, img, 1 + m)`` =
  ``degenerate + (1 + m)·(img − degenerate)``, degenerate = the greyscale image (ITU-R 601-2 luma
  L = (299 R + 587 G + 114 B)/1000), its mean (rounded to an integer level), the image smoothed by
  [[1,1,1],[1,5,1],[1,1,1]]/13 (border pixels kept), black;
* posterize: keep the m high bits; solarize: invert the levels ≥ m; invert: 255 − level;
* autocontrast: stretch each channel's [min, max] to [0, 255];
* equalize: each channel's histogram equalisation (PIL's lookup table).

All randomness comes from the ``torch.Generator`` passed in.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

FILL = 128.0 / 255.0

RANGES = {
    "shearX": np.linspace(0, 0.3, 10),
    "shearY": np.linspace(0, 0.3, 10),
    "translateX": np.linspace(0, 150 / 331, 10),
    "translateY": np.linspace(0, 150 / 331, 10),
    "rotate": np.linspace(0, 30, 10),
    "color": np.linspace(0.0, 0.9, 10),
    "posterize": np.round(np.linspace(8, 4, 10), 0).astype(int),
    "solarize": np.linspace(256, 0, 10),
    "contrast": np.linspace(0.0, 0.9, 10),
    "sharpness": np.linspace(0.0, 0.9, 10),
    "brightness": np.linspace(0.0, 0.9, 10),
    "autocontrast": [0] * 10,
    "equalize": [0] * 10,
    "invert": [0] * 10,
}

# The 25 sub-policies of CIFAR10Policy (p1, op1, magnitude index 1, p2, op2, magnitude index 2).
CIFAR10_POLICY = [
    (0.1, "invert", 7, 0.2, "contrast", 6), (0.7, "rotate", 2, 0.3, "translateX", 9),
    (0.8, "sharpness", 1, 0.9, "sharpness", 3), (0.5, "shearY", 8, 0.7, "translateY", 9),
    (0.5, "autocontrast", 8, 0.9, "equalize", 2),
    (0.2, "shearY", 7, 0.3, "posterize", 7), (0.4, "color", 3, 0.6, "brightness", 7),
    (0.3, "sharpness", 9, 0.7, "brightness", 9), (0.6, "equalize", 5, 0.5, "equalize", 1),
    (0.6, "contrast", 7, 0.6, "sharpness", 5),
    (0.7, "color", 7, 0.5, "translateX", 8), (0.3, "equalize", 7, 0.4, "autocontrast", 8),
    (0.4, "translateY", 3, 0.2, "sharpness", 6), (0.9, "brightness", 6, 0.2, "color", 8),
    (0.5, "solarize", 2, 0.0, "invert", 3),
    (0.2, "equalize", 0, 0.6, "autocontrast", 0), (0.2, "equalize", 8, 0.8, "equalize", 4),
    (0.9, "color", 9, 0.6, "equalize", 6), (0.8, "autocontrast", 4, 0.2, "solarize", 8),
    (0.1, "brightness", 3, 0.7, "color", 0),
    (0.4, "solarize", 5, 0.9, "autocontrast", 3), (0.9, "translateY", 9, 0.7, "translateY", 9),
    (0.9, "autocontrast", 2, 0.8, "solarize", 3), (0.8, "equalize", 8, 0.1, "invert", 3),
    (0.7, "translateY", 9, 0.9, "autocontrast", 1),
]

SIGNED = {"shearX", "shearY", "translateX", "translateY", "rotate", "color", "contrast", "sharpness", "brightness"}


def _q(x: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels (what a PIL uint8 image holds), clipped to [0, 1]."""
    return torch.round(x.clamp(0, 1) * 255.0) / 255.0


def _levels(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255.0).to(torch.int64)


def _cubic_weights(d: torch.Tensor):
    """PIL's bicubic (libImaging Geometry.c: the cubic convolution with a = -1) as four tap weights."""
    return (-d + 2 * d ** 2 - d ** 3, 1 - 2 * d ** 2 + d ** 3, d + d ** 2 - d ** 3, -d ** 2 + d ** 3)


def _affine(img, a, b, c, d, e, f, mode):
    """PIL's ``Image.transform(AFFINE, (a, b, c, d, e, f), resample, fillcolor=128)``.

    Output pixel (x, y) (centre at x + 0.5, y + 0.5) reads the input at
    ``xin = a·(x+.5) + b·(y+.5) + c``, ``yin = d·(x+.5) + e·(y+.5) + f``; a point outside
    [0, W)×[0, H) gets the fill colour, one inside is interpolated from the pixels around
    ``(xin − .5, yin − .5)`` with the indices clamped to the image (libImaging Geometry.c).
    """
    ch, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64) + 0.5, torch.arange(w, dtype=torch.float64) + 0.5,
                            indexing="ij")
    xin = a * xs + b * ys + c
    yin = d * xs + e * ys + f
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    lv = _levels(img).to(torch.float64)
    if mode == "nearest":
        xi = torch.floor(xin).clamp(0, w - 1).long()
        yi = torch.floor(yin).clamp(0, h - 1).long()
        out = lv[:, yi, xi]
    else:  # bicubic
        x0, y0 = xin - 0.5, yin - 0.5
        xf, yf = torch.floor(x0), torch.floor(y0)
        wx, wy = _cubic_weights(x0 - xf), _cubic_weights(y0 - yf)
        out = torch.zeros((ch, h, w), dtype=torch.float64)
        for j in range(4):
            yy = (yf.long() - 1 + j).clamp(0, h - 1)
            row = torch.zeros((ch, h, w), dtype=torch.float64)
            for i in range(4):
                xx = (xf.long() - 1 + i).clamp(0, w - 1)
                row = row + wx[i] * lv[:, yy, xx]
            out = out + wy[j] * row
        out = torch.where(out <= 0, 0.0, torch.where(out >= 255, 255.0, torch.trunc(out)))
    out = torch.where(inside[None], out, 128.0)
    return (out / 255.0).to(img.dtype)


def _grey(img):
    if img.shape[0] != 3:
        return img.mean(0, keepdim=True) if img.shape[0] != 1 else img
    lv = _levels(img)
    return ((lv[0] * 299 + lv[1] * 587 + lv[2] * 114 + 500) // 1000).to(img.dtype)[None] / 255.0


def _blend(degenerate, img, factor):
    return _q(degenerate + factor * (img - degenerate))


def shear_x(img, m):
    return _affine(img, 1, m, 0, 0, 1, 0, "bicubic")


def shear_y(img, m):
    return _affine(img, 1, 0, 0, m, 1, 0, "bicubic")


def translate_x(img, m):
    return _affine(img, 1, 0, m * img.shape[2], 0, 1, 0, "nearest")


def translate_y(img, m):
    return _affine(img, 1, 0, 0, 0, 1, m * img.shape[1], "nearest")


def rotate(img, degrees):
    """Counter-clockwise about the centre (PIL ``Image.rotate``), nearest, fill 128."""
    _, h, w = img.shape
    t = -math.radians(degrees)
    cx, cy = w / 2.0, h / 2.0
    a, b = math.cos(t), math.sin(t)
    # the inverse map: input = rotation of (output − centre) + centre, with y pointing down
    return _affine(img, a, b, cx - a * cx - b * cy, -b, a, cy + b * cx - a * cy, "nearest")


def color(img, m):
    return img if img.shape[0] != 3 else _blend(_grey(img).expand_as(img), img, 1 + m)


def contrast(img, m):
    mean = torch.round(_grey(img).mean() * 255.0) / 255.0
    return _blend(torch.full_like(img, float(mean)), img, 1 + m)


def sharpness(img, m):
    c, h, w = img.shape
    k = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=img.dtype) / 13.0
    sm = F.conv2d(img[:, None], k[None, None], padding=0)[:, 0]
    degenerate = img.clone()
    degenerate[:, 1:-1, 1:-1] = _q(sm)
    return _blend(degenerate, img, 1 + m)


def brightness(img, m):
    return _blend(torch.zeros_like(img), img, 1 + m)


def posterize(img, bits):
    lv = _levels(img)
    mask = ~((1 << (8 - int(bits))) - 1) & 0xFF
    return (lv & mask).to(img.dtype) / 255.0


def solarize(img, threshold):
    lv = _levels(img)
    return torch.where(lv >= threshold, 255 - lv, lv).to(img.dtype) / 255.0


def invert(img, _=None):
    return (255 - _levels(img)).to(img.dtype) / 255.0


def autocontrast(img, _=None):
    lv = _levels(img)
    out = []
    for ch in lv:
        lo, hi = int(ch.min()), int(ch.max())
        if hi <= lo:
            out.append(ch)
            continue
        scale = 255.0 / (hi - lo)
        offset = -lo * scale
        lut = torch.clamp((torch.arange(256, dtype=torch.float64) * scale + offset).to(torch.int64), 0, 255)
        lut[:lo] = 0
        out.append(lut[ch])
    return torch.stack(out).to(img.dtype) / 255.0


def equalize(img, _=None):
    lv = _levels(img)
    out = []
    for ch in lv:
        hist = torch.bincount(ch.reshape(-1), minlength=256)
        nz = hist[hist > 0]
        step = (int(nz.sum()) - int(nz[-1])) // 255 if len(nz) else 0
        if step == 0:
            out.append(ch)
            continue
        n = step // 2
        lut = []
        for i in range(256):
            lut.append(min(255, n // step))
            n += int(hist[i])
        out.append(torch.tensor(lut)[ch])
    return torch.stack(out).to(img.dtype) / 255.0


OPS = {"shearX": shear_x, "shearY": shear_y, "translateX": translate_x, "translateY": translate_y,
       "rotate": rotate, "color": color, "posterize": posterize, "solarize": solarize, "contrast": contrast,
       "sharpness": sharpness, "brightness": brightness, "autocontrast": autocontrast, "equalize": equalize,
       "invert": invert}


def apply_op(img, name, magnitude_index, sign=1):
    m = RANGES[name][magnitude_index]
    m = float(m) * sign if name in SIGNED else m
    return OPS[name](img, m)


class CIFAR10Policy:
    """One random sub-policy of :data:`CIFAR10_POLICY` per image (see the module docstring)."""

    def __init__(self, policy=CIFAR10_POLICY):
        self.policy = list(policy)

    def __call__(self, img: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        p1, op1, m1, p2, op2, m2 = self.policy[int(torch.randint(0, len(self.policy), (1,), generator=gen))]
        u = torch.rand(4, generator=gen, dtype=torch.float64)
        img = _q(img.to(torch.float64))
        if u[0] < p1:
            img = apply_op(img, op1, m1, 1 if u[1] < 0.5 else -1)
        if u[2] < p2:
            img = apply_op(img, op2, m2, 1 if u[3] < 0.5 else -1)
        return img

    def batch(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Apply to every image of an N×C×H×W batch (float in [0, 1])."""
        return torch.stack([self(img, gen) for img in x]).to(x.dtype)
