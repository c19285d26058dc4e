"""Image quality gate: measures of a preprocessed T1w that tell a brain T1w from an image that is
not one (noise, another contrast, a mask, a part of a head, a failed registration).

Pure numpy, no I/O. Every real head at hand fell inside the default ranges, and each kind of
meaningless input outside at least one (docs/usage.md, "Quality gate"; ``benchmarks/quality_gate.py``).
"""

import json
import math
from pathlib import Path

import numpy as np

from .errors import UsageError

# measure -> (lowest, highest) accepted; None: no bound on that side
# measured (benchmarks/quality_gate.py) on 24 IXI heads, 2 other heads, 4 skull-stripped brains and
# 2 generated heads: volume 1127-1965 ml, correlation 0.625-0.801, ratio 1.23-1.58; on 12
# meaningless images made from 2 IXI heads: correlation at most 0.461 (half a head), ratio at most
# 1.007 except half heads and rotated heads (caught by correlation), volume 0.1 or above 2077 ml
DEFAULT_BOUNDS = {
    "brain_volume_ml": (800.0, 2400.0),
    "template_correlation": (0.55, None),
    "wm_gm_ratio": (1.1, None),
}
DESCRIPTIONS = {
    "brain_volume_ml": "volume of the brain mask in the T1w's own space (ml)",
    "template_correlation": "correlation of the preprocessed brain with the template, inside the template's brain mask",
    "wm_gm_ratio": "median intensity of the template's white matter over that of its grey matter, in the smoothed brain before its "
    "intensity was standardised (T1 contrast: above 1)",
}


def measures(brain, mask, template, template_mask, grey, white, brain_volume_ml):
    """The gate's measures of one preprocessed T1w on the grid.

    ``brain`` and ``mask`` are the image and brain mask on the grid, ``template`` and
    ``template_mask`` the registration template there, ``grey`` and ``white`` the template's
    tissue probabilities; ``brain_volume_ml`` is measured in the T1w's own space, where
    registration has not yet scaled it to the template.
    """
    brain, mask, template_mask = np.asarray(brain, float), np.asarray(mask, bool), np.asarray(template_mask, bool)
    inside = brain[template_mask]
    correlation = float(np.corrcoef(inside, np.asarray(template)[template_mask])[0, 1]) if inside.std() > 0 else 0.0
    white_voxels = brain[(np.asarray(white) > 0.9) & mask]
    grey_voxels = brain[(np.asarray(grey) > 0.6) & (np.asarray(white) < 0.2) & mask]
    if white_voxels.size and grey_voxels.size and np.median(grey_voxels) > 0:
        ratio = float(np.median(white_voxels) / np.median(grey_voxels))
    else:
        ratio = 0.0  # no tissue where the template has it: nothing like a T1w brain
    return {"brain_volume_ml": round(float(brain_volume_ml), 1), "template_correlation": round(correlation, 4),
            "wm_gm_ratio": round(ratio, 4)}  # fmt: skip


def failures(values, bounds=DEFAULT_BOUNDS):
    """One line per measure outside its range, e.g. 'template_correlation 0.41 is below 0.75'."""
    found = []
    for name, (low, high) in bounds.items():
        value = values[name]
        if low is not None and value < low:
            found.append(f"{name} {value:g} is below {low:g}")
        elif high is not None and value > high:
            found.append(f"{name} {value:g} is above {high:g}")
    return found


def record(values, bounds=DEFAULT_BOUNDS):
    """What a session's outputs say of its quality gate."""
    failed = failures(values, bounds)
    return {"Passed": not failed, "Failures": failed, "Measures": values,
            "Thresholds": {k: list(v) for k, v in bounds.items()}, "Descriptions": DESCRIPTIONS}  # fmt: skip


def parse_bounds(text):
    """--qc-thresholds: JSON (inline or a file) of measure -> [low, high], null for no bound,
    merged over the defaults; or 'off' to score every image whatever its measures."""
    if text is None:
        return DEFAULT_BOUNDS
    if text.strip() == "off":
        return {name: (None, None) for name in DEFAULT_BOUNDS}
    source = Path(text)
    try:
        given = json.loads(source.read_text() if source.is_file() else text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--qc-thresholds {text!r} is neither JSON nor a readable JSON file ({exc}); "
                         'e.g. --qc-thresholds \'{"template_correlation": [0.6, null]}\'') from None  # fmt: skip
    if not isinstance(given, dict):
        raise UsageError(f"--qc-thresholds must map measures to [low, high], got {text!r}")
    merged = dict(DEFAULT_BOUNDS)
    for name, bounds in given.items():
        if name not in DEFAULT_BOUNDS:
            raise UsageError(f"--qc-thresholds: unknown measure {name!r}; the measures are {', '.join(DEFAULT_BOUNDS)}")
        if not (isinstance(bounds, list) and len(bounds) == 2 and all(b is None or isinstance(b, (int, float)) and math.isfinite(b) for b in bounds)):
            raise UsageError(f"--qc-thresholds: {name} needs [low, high] with numbers or null, got {bounds!r}")
        merged[name] = tuple(None if b is None else float(b) for b in bounds)
    return merged
