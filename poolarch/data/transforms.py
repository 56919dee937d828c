"""Batched tensor transforms: the paper's synthetic studies and the small-dataset augmentation.

Everything here works on float batches ``(N, C, H, W)`` in ``[0, 1]`` on any device, and on single
images ``(C, H, W)`` (the per-sample path of the streaming loaders). Randomness comes from an
optional CPU ``torch.Generator`` (the in-memory loaders seed one per (seed, epoch, rank) so that an
epoch is reproducible); without one, torch's global RNG is used (DataLoader workers seed it).

Synthetic studies of Jang et al. 2023, Sec. 3 (``variant=`` of :func:`poolarch.data.load_data`):

* ``stretch-v`` -- stretch x2 vertically (bilinear), then crop back to ``(H, W)``: a random crop
  in training mode, the centre crop in eval mode (CIFAR-stretch-V);
* ``stretch-h`` -- the same horizontally;
* ``tile`` -- downscale x0.5 (area), tile the ``(H//2, W//2)`` image in a 4x4 grid:
  output ``(4*(H//2), 4*(W//2))`` (CIFAR-tile: 16x16 tiles -> 64x64);
* ``large`` -- downscale x0.5 (area), upscale (bilinear) to ``(4*(H//2), 4*(W//2))`` (CIFAR-large:
  16x16 -> 64x64). ``tile`` and ``large`` share the base image and the output size.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._registry import Registry

__all__ = [
    "VARIANTS",
    "crop",
    "random_crop",
    "random_hflip",
    "normalize",
    "stretch",
    "downscale_half",
    "tile",
    "enlarge",
    "Variant",
    "Stretch",
    "Tile",
    "Enlarge",
    "BatchAugment",
    "Normalize",
    "PerSample",
    "make_variant",
    "list_variants",
]


def _as_batch(x: Tensor) -> tuple[Tensor, bool]:
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise ValueError(f"x must be (N, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    return x, False


def _randint(high: int, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``n`` integers uniform in ``[0, high]`` drawn on the CPU, moved to ``device``."""
    return torch.randint(0, high + 1, (n,), generator=generator).to(device)


# -- pure functions ---------------------------------------------------------------------------
def crop(x: Tensor, top: Tensor, left: Tensor, size: Sequence[int], flip: Tensor | None = None) -> Tensor:
    """Per-sample crop: ``out[i] = x[i, :, top[i]:top[i]+h, left[i]:left[i]+w]``, mirrored
    left-right where ``flip[i]`` (optional bool ``(N,)``). One ``torch.gather``.

    x: ``(N, C, H, W)``; top, left: int tensors ``(N,)``; size: ``(h, w)``. Returns ``(N, C, h, w)``.
    """
    h, w = int(size[0]), int(size[1])
    n, c, height, width = x.shape
    dev = x.device
    rows = top.to(dev).long().view(n, 1, 1) + torch.arange(h, device=dev).view(1, h, 1)
    step = torch.arange(w, device=dev).view(1, 1, w)
    if flip is not None:
        step = torch.where(flip.to(dev).view(n, 1, 1), (w - 1) - step, step)
    cols = left.to(dev).long().view(n, 1, 1) + step
    index = (rows * width + cols).view(n, 1, h * w).expand(n, c, h * w)
    return torch.gather(x.reshape(n, c, height * width), 2, index).view(n, c, h, w)


def random_crop(x: Tensor, size: Sequence[int] | None = None, padding: int = 0,
                generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad by ``padding`` pixels on every side, then crop ``size`` (default: the input size)
    at an independent uniform random position per sample. ``(N, C, H, W) -> (N, C, h, w)``."""
    x, single = _as_batch(x)
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    h, w = (x.shape[-2], x.shape[-1]) if size is None else (int(size[0]), int(size[1]))
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
    if h > x.shape[-2] or w > x.shape[-1]:
        raise ValueError(f"crop size {(h, w)} larger than the (padded) input {tuple(x.shape[-2:])}")
    n = x.shape[0]
    top = _randint(x.shape[-2] - h, n, generator, x.device)
    left = _randint(x.shape[-1] - w, n, generator, x.device)
    out = crop(x, top, left, (h, w))
    return out[0] if single else out


def random_hflip(x: Tensor, p: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each sample left-right with probability ``p``. Shape unchanged."""
    x, single = _as_batch(x)
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device).view(-1, 1, 1, 1)
    out = torch.where(flip, x.flip(-1), x)
    return out[0] if single else out


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x - mean) / std`` per channel; x ``(N, C, H, W)`` or ``(C, H, W)``."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return (x - m) / s


def stretch(x: Tensor, factor: float = 2.0, dim: int = -2) -> Tensor:
    """Bilinear stretch of the height (``dim=-2``) or width (``dim=-1``) by ``factor``."""
    x, single = _as_batch(x)
    if dim not in (-2, -1, 2, 3):
        raise ValueError(f"dim must be -2 (height) or -1 (width), got {dim}")
    h, w = x.shape[-2:]
    size = (round(h * factor), w) if dim in (-2, 2) else (h, round(w * factor))
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return out[0] if single else out


def downscale_half(x: Tensor) -> Tensor:
    """Area downscale to ``(H//2, W//2)`` (= 2x2 average pooling for even sizes)."""
    x, single = _as_batch(x)
    out = F.interpolate(x, size=(x.shape[-2] // 2, x.shape[-1] // 2), mode="area")
    return out[0] if single else out


def tile(x: Tensor, grid: int = 4) -> Tensor:
    """Repeat each image in a ``grid x grid`` mosaic: ``(N, C, h, w) -> (N, C, grid*h, grid*w)``."""
    return x.repeat(*([1] * (x.dim() - 2)), grid, grid)


def enlarge(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear upscale to ``size``."""
    x, single = _as_batch(x)
    out = F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return out[0] if single else out


# -- modules ----------------------------------------------------------------------------------
class Variant(nn.Module):
    """Base of the synthetic-study transforms; ``training`` selects random vs deterministic crops."""

    name = "identity"

    def output_size(self, size: Sequence[int]) -> tuple[int, int]:
        """Output ``(H, W)`` for an input of ``size``."""
        return int(size[0]), int(size[1])

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return x


class Stretch(Variant):
    """Stretch ``factor`` x along one axis, crop back to the input size (random in training mode,
    centred in eval mode). ``axis``: ``"v"`` (height) or ``"h"`` (width)."""

    def __init__(self, axis: str = "v", factor: float = 2.0) -> None:
        super().__init__()
        if axis not in ("v", "h"):
            raise ValueError(f"axis must be 'v' or 'h', got {axis!r}")
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.axis, self.factor = axis, factor
        self.name = f"stretch-{axis}"

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x, single = _as_batch(x)
        h, w = x.shape[-2:]
        big = stretch(x, self.factor, dim=-2 if self.axis == "v" else -1)
        slack = big.shape[-2] - h if self.axis == "v" else big.shape[-1] - w
        if self.training:
            offset = _randint(slack, x.shape[0], generator, x.device)
        else:
            offset = torch.full((x.shape[0],), slack // 2, dtype=torch.long, device=x.device)
        zero = torch.zeros_like(offset)
        top, left = (offset, zero) if self.axis == "v" else (zero, offset)
        out = crop(big, top, left, (h, w))
        return out[0] if single else out

    def extra_repr(self) -> str:
        return f"axis={self.axis!r}, factor={self.factor}"


class Tile(Variant):
    """Downscale x0.5 (area), then tile ``grid x grid``: ``(H, W) -> (grid*(H//2), grid*(W//2))``."""

    name = "tile"

    def __init__(self, grid: int = 4) -> None:
        super().__init__()
        self.grid = grid

    def output_size(self, size: Sequence[int]) -> tuple[int, int]:
        return self.grid * (int(size[0]) // 2), self.grid * (int(size[1]) // 2)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return tile(downscale_half(x), self.grid)

    def extra_repr(self) -> str:
        return f"grid={self.grid}"


class Enlarge(Variant):
    """Downscale x0.5 (area), then upscale (bilinear) by ``factor``:
    ``(H, W) -> (factor*(H//2), factor*(W//2))``."""

    name = "large"

    def __init__(self, factor: int = 4) -> None:
        super().__init__()
        self.factor = factor

    def output_size(self, size: Sequence[int]) -> tuple[int, int]:
        return self.factor * (int(size[0]) // 2), self.factor * (int(size[1]) // 2)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return enlarge(downscale_half(x), self.output_size(x.shape[-2:]))

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


VARIANTS: Registry[Callable[[], Variant]] = Registry("variant")
VARIANTS.register("stretch-v", lambda: Stretch("v"))
VARIANTS.register("stretch-h", lambda: Stretch("h"))
VARIANTS.register("tile", Tile)
VARIANTS.register("large", Enlarge)


def list_variants() -> list[str]:
    """Names accepted by ``variant=``."""
    return VARIANTS.names()


def make_variant(name: str | None) -> Variant:
    """The synthetic-study transform ``name`` (``None`` -> identity)."""
    if name is None:
        return Variant()
    return VARIANTS.get(name)()


class BatchAugment(nn.Module):
    """Random crop with zero padding ``padding`` and (if ``flip``) random horizontal flip."""

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        super().__init__()
        self.padding, self.flip = padding, flip

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        x, single = _as_batch(x)
        n, h, w = x.shape[0], x.shape[-2], x.shape[-1]
        p = self.padding
        if p:
            x = F.pad(x, (p, p, p, p))
        top = _randint(2 * p, n, generator, x.device)
        left = _randint(2 * p, n, generator, x.device)
        flip = (torch.rand(n, generator=generator) < 0.5) if self.flip else None
        out = crop(x, top, left, (h, w), flip)  # crop and flip in one gather
        return out[0] if single else out

    def extra_repr(self) -> str:
        return f"padding={self.padding}, flip={self.flip}"


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.mean, self.std = tuple(mean), tuple(std)

    def forward(self, x: Tensor) -> Tensor:
        return normalize(x, self.mean, self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


class PerSample(nn.Module):
    """Adapter: apply a batched transform to one ``(C, H, W)`` image (torchvision pipelines)."""

    def __init__(self, transform: nn.Module) -> None:
        super().__init__()
        self.transform = transform

    def forward(self, x: Tensor) -> Tensor:
        return self.transform(x.unsqueeze(0))[0]
