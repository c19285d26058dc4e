"""Where inside its cube each selected base classifier finds evidence of AD (docs/relevance.md).

The relevance r(v) >= 0 of a voxel is its positive share of the classifier's AD margin, the
difference of its two logits (the margin does not saturate as the probability does). Every
method measures it against a baseline cube: the per-cube mean grey level (``None``) or a voxel
by voxel one, such as the mean of the training controls. Nothing here knows BIDS or the grid:
inputs and outputs are cubes.
"""

import numpy as np
import torch

from .networks import BaseClassifiers

METHODS = ("gradient_x_input", "integrated_gradients", "occlusion")
# what bids_pscore-train records in a bundle (its "relevance" entry, with the reference statistics);
# chosen by benchmarks/relevance_methods.py (docs/relevance.md)
RELEVANCE = {
    "method": "gradient_x_input",
    "options": {},
    "smoothing_voxels": 0.0,
    "description": "gradient x input: the positive part of (x - the cube's mean grey level) times the gradient of the AD margin",
}


def selected_base(ensemble):
    """The base classifiers of the selected cubes only, as a module of their own (same outputs)."""
    full, selected = ensemble.base, ensemble.selected.cpu()
    sub = BaseClassifiers(len(selected))
    for source, target in zip([*full.convs, full.classify], [*sub.convs, sub.classify]):
        rows = source.out_channels // full.n_cubes
        index = (selected[:, None] * rows + torch.arange(rows)).ravel()
        target.weight.data.copy_(source.weight.data[index])
        target.bias.data.copy_(source.bias.data[index])
    sub.set_input_statistics(full.input_mean[selected], full.input_scale[selected])
    return sub.eval()


def ad_margin(base, cubes):
    """AD logit minus control logit of every cube; (batch, n_cubes)."""
    logits = base(cubes)[1]
    return logits[..., 1] - logits[..., 0]


def _baseline(base, cubes, baseline):
    if baseline is None:
        return base.input_mean.view(1, -1, 1, 1, 1).expand_as(cubes)
    return torch.as_tensor(baseline, dtype=cubes.dtype).expand_as(cubes)


def gradient_x_input(base, cubes, baseline=None):
    """(x - baseline) times the margin's gradient at x."""
    x = cubes.detach().clone().requires_grad_(True)
    ad_margin(base, x).sum().backward()
    return (x.grad * (cubes - _baseline(base, cubes, baseline))).detach()


def integrated_gradients(base, cubes, baseline=None, steps=8):
    """(x - baseline) times the margin's gradient averaged along the straight path from the baseline
    (midpoint rule); the attributions of a cube add up to its margin minus the baseline's."""
    start = _baseline(base, cubes, baseline)
    total = torch.zeros_like(cubes)
    for alpha in (np.arange(steps) + 0.5) / steps:
        x = (start + float(alpha) * (cubes - start)).detach().requires_grad_(True)
        ad_margin(base, x).sum().backward()
        total += x.grad
    return (total / steps * (cubes - start)).detach()


@torch.no_grad()
def occlusion(base, cubes, baseline=None, block=5):
    """The drop of the margin when a block of block^3 voxels is replaced by the baseline, spread over
    the block; one image at a time."""
    if cubes.shape[0] != 1:
        raise ValueError("occlusion takes one image at a time")
    size = cubes.shape[-1]
    if size % block:
        raise ValueError(f"block {block} does not divide the cube size {size}")
    start = _baseline(base, cubes, baseline)
    reference = ad_margin(base, cubes)[0]
    per_axis = size // block
    drops = torch.empty(per_axis**3, cubes.shape[1])
    offsets = [(i, j, k) for i in range(per_axis) for j in range(per_axis) for k in range(per_axis)]
    for first in range(0, len(offsets), 25):
        batch = cubes.repeat(len(offsets[first : first + 25]), 1, 1, 1, 1)
        for row, (i, j, k) in enumerate(offsets[first : first + 25]):
            box = (row, slice(None), slice(i * block, (i + 1) * block), slice(j * block, (j + 1) * block), slice(k * block, (k + 1) * block))
            batch[box] = start[(0, *box[1:])]
        drops[first : first + len(batch)] = reference - ad_margin(base, batch)
    per_block = drops.T.reshape(1, -1, per_axis, per_axis, per_axis) / block**3
    return per_block.repeat_interleave(block, 2).repeat_interleave(block, 3).repeat_interleave(block, 4)


def cube_relevance(base, cubes, method="gradient_x_input", baseline=None, **options):
    """r >= 0 for every voxel of every cube: the positive part of the method's attribution.

    ``base`` is a ``BaseClassifiers`` (e.g. ``selected_base(ensemble)``); ``cubes`` a float array
    (n_images, n_cubes, 25, 25, 25); ``baseline`` None or broadcastable to one image's cubes.
    Returns float32 numpy of the cubes' shape.
    """
    if method not in METHODS:
        raise ValueError(f"unknown relevance method {method!r}; choose one of {', '.join(METHODS)}")
    function = {"gradient_x_input": gradient_x_input, "integrated_gradients": integrated_gradients, "occlusion": occlusion}[method]
    cubes = torch.as_tensor(np.asarray(cubes, np.float32))
    if method == "occlusion":
        attribution = torch.cat([function(base, cubes[i : i + 1], baseline, **options) for i in range(len(cubes))])
    else:
        attribution = function(base, cubes, baseline, **options)
    return attribution.clamp(min=0).numpy()


def relevance_on_grid(base, cubes, selected, record, baseline=None):
    """Relevance of every voxel of the selected cubes on the grid, 0 in the other cubes; (n, *grid).

    ``base`` holds the selected cubes only (``selected_base``), ``cubes`` is (n, 150, 25, 25, 25),
    ``record`` the bundle's "relevance" entry (method, options, smoothing in voxels).
    """
    from scipy.ndimage import gaussian_filter

    from ..grid import N_CUBES, paste_cubes

    selected = np.asarray(selected)
    relevance = cube_relevance(base, np.asarray(cubes)[:, selected], record["method"], baseline, **record.get("options", {}))
    sigma = record.get("smoothing_voxels", 0.0)
    if sigma:
        # within each cube only: a cube's relevance says where its own classifier looked
        relevance = gaussian_filter(relevance, (0, 0, sigma, sigma, sigma), mode="constant")
    on_grid = np.zeros((len(relevance), N_CUBES, *relevance.shape[2:]), np.float32)
    on_grid[:, selected] = relevance
    return paste_cubes(on_grid)
