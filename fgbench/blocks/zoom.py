"""Attention zoom (CNET Sec. 3.2.2; Multi-FusNet's "Gaussian-enhanced" image).

CNET: "we superimpose [the channels of the top feature map] and use bilinear
upsampling to get the attention map ... normalized (Eq. 2). Then a Gaussian
function is constructed centered at the maximum of the image response, which
is unevenly sampled ... The details of attention zoom is referred from
Saliency-Sampler [44]" (Recasens et al., "Learning to zoom", ECCV 2018).

Two steps, both batched and run without gradients (the zoom is a data
augmentation; the authors' code wraps it in ``torch.no_grad``):

1. :func:`peak_saliency` — saliency on a ``grid x grid`` lattice:
   ``base + exp(-d^2 / (2 (sigma * grid)^2))`` with ``d`` the distance to the
   maximum of the channel-summed, max-normalised feature map.  The defaults
   (grid 31, sigma 0.08, base 0.09) are the authors' code's, whose mode that
   keeps only the strongest peak is the one the paper describes.
2. :func:`saliency_sample` — the Saliency Sampler: each output location
   samples the input at the saliency-weighted mean of the lattice positions
   under a Gaussian kernel (full width at half maximum ``fwhm`` cells, the
   lattice replicate-padded by ``grid - 1``), so salient regions attract more
   samples and are magnified.  A uniform saliency gives the identity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def peak_saliency(feature_map: torch.Tensor, grid: int = 31, sigma: float = 0.08, base: float = 0.09) -> torch.Tensor:
    """``(B, 1, grid, grid)`` saliency: a Gaussian at the response maximum on a constant floor."""
    att = feature_map.detach().float().sum(1, keepdim=True)
    att = F.interpolate(att, size=(grid, grid), mode="bilinear", align_corners=True)
    flat = att.flatten(1)
    peak = flat.argmax(1)
    py = torch.div(peak, grid, rounding_mode="floor").float()
    px = (peak % grid).float()
    pos = torch.arange(grid, device=att.device, dtype=torch.float32)
    d2 = (pos[None, :, None] - py[:, None, None]) ** 2 + (pos[None, None, :] - px[:, None, None]) ** 2
    width = max(sigma * grid, 1e-3)
    return (base + torch.exp(-d2 / (2 * width ** 2))).unsqueeze(1)


@torch.no_grad()
def saliency_sample(images: torch.Tensor, saliency: torch.Tensor, fwhm: float = 13.0) -> torch.Tensor:
    """Resample ``images`` (B, C, H, W) so that regions of high ``saliency`` (B, 1, g, g) are magnified."""
    B, _, H, W = images.shape
    g = saliency.shape[-1]
    pad = g - 1
    device = images.device
    s = F.pad(saliency.float(), (pad, pad, pad, pad), mode="replicate")
    coords = (torch.arange(g + 2 * pad, device=device, dtype=torch.float32) - pad) / max(g - 1, 1)
    taps = torch.arange(2 * pad + 1, device=device, dtype=torch.float32) - pad
    k = torch.exp(-4 * math.log(2) * taps ** 2 / fwhm ** 2)
    kx, ky = k.view(1, 1, 1, -1), k.view(1, 1, -1, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, kx), ky)

    stacked = torch.cat([s, s * coords.view(1, 1, 1, -1), s * coords.view(1, 1, -1, 1)], 0)
    mass, sx, sy = blur(stacked).split(B, 0)
    grid_xy = torch.cat([sx / mass, sy / mass], 1).mul(2).sub(1).clamp(-1, 1)
    grid_xy = F.interpolate(grid_xy, size=(H, W), mode="bilinear", align_corners=True)
    out = F.grid_sample(images.float(), grid_xy.permute(0, 2, 3, 1), mode="bilinear",
                        padding_mode="border", align_corners=True)
    return out.to(images.dtype)


@torch.no_grad()
def attention_zoom(images: torch.Tensor, feature_map: torch.Tensor, grid: int = 31, sigma: float = 0.08,
                   base: float = 0.09, fwhm: float = 13.0) -> torch.Tensor:
    """The attention-zoomed ``images`` (same shape), magnified around the peak of ``feature_map``."""
    with torch.autocast(images.device.type, enabled=False):
        return saliency_sample(images, peak_saliency(feature_map, grid, sigma, base), fwhm)
