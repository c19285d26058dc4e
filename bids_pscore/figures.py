"""The figures of one scored T1w (its voxel, region and ranked-region P-score figures, relevance-weighted
too, and its deviation from healthy people), drawn from the arrays of its outputs: below the workflow
that draws them for each T1w and the report that shows them with their captions."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from . import viz
from .atlas import region_name


def load(path):
    return np.asarray(nib.load(path).dataobj, np.float32)


def draw_score_figures(source, target, image, mask, paths, lambda_, kind, kept=()):
    """Voxel map, region map and ranked regions of SPEC's even spread (``kind`` "") or of the
    relevance-weighted spread ("relevance"), read from the maps and table under ``source`` and drawn
    under ``target``; ``paths`` hold the maps' and the figures' names, those in ``kept`` are not drawn
    again. Returns what the captions say of them: the colours and unit of the voxel scale, and the
    number of regions above ``lambda_``."""
    source, target = Path(source), Path(target)
    key = f"{kind}_" if kind else ""
    voxel = load(source / paths[f"{key}voxel_map"])
    table = pd.read_csv(source / paths[f"{key}region_table"], sep="\t")
    what = "relevance-weighted " if kind else ""
    name = paths[f"{key}voxel_figure"]
    # a cube holding few brain voxels spreads its score over them and dwarfs the rest: scale to
    # the 99th percentile of the brain's voxels instead of the maximum
    limit = float(np.percentile(np.abs(voxel[mask]), 99)) if mask.any() else 0.0
    limit = limit or float(np.abs(voxel).max()) or 1.0
    cmap, vmin, vmax, factor, unit, colours = viz.score_scale(voxel, limit)
    if name not in kept:
        viz.mosaic(target / name, image, overlay=voxel * factor, cmap=cmap, vmin=vmin, vmax=vmax,
                       title=f"{what}voxel-level P-score", colorbar_label=f"P_voxel{unit}")  # fmt: skip
    name = paths[f"{key}region_figure"]
    if name not in kept:  # cyan, since red outlines vanish in the red of the "hot" scale
        regions = load(source / paths[f"{key}region_map"])
        viz.mosaic(target / name, image, overlay=regions, contour=regions > lambda_, contour_colour="cyan", cmap="hot", vmin=0, vmax=1,
                       title=f"{what}region-level P-score (normalised), degenerative regions outlined in cyan",
                       colorbar_label="normalised P_region (0-1)")  # fmt: skip
    name = paths[f"{key}bars_figure"]
    if name not in kept:
        viz.ranked_bars(target / name, [region_name(label) for label in table["label"]], table["p_region_norm"].to_numpy(),
                            f"normalised {what}region P-score", lambda_, title=f"regions with the highest normalised {what}P-score")  # fmt: skip
    return {"colours": colours, "unit": unit, "above": int((table["p_region_norm"] > lambda_).sum())}


def draw_normative_figure(source, target, image, paths):
    """The voxel-wise deviation map under ``source`` with the atrophic regions of its table outlined,
    drawn under ``target``."""
    from .atlas import atlas_on_grid
    from .pscore import paint_regions

    source, target = Path(source), Path(target)
    z = load(source / paths["normative_voxel_map"])
    table = pd.read_csv(source / paths["normative_region_table"], sep="\t")
    flagged = paint_regions(table["atrophic"].astype(str).str.lower().eq("true").to_numpy(float), atlas_on_grid())[0] > 0
    # red is less tissue on this scale, so the flagged regions are outlined in yellow
    viz.mosaic(target / paths["normative_figure"], image, overlay=z, contour=flagged, cmap="RdBu", vmin=-5, vmax=5, contour_colour="yellow",
                   title="deviation from healthy people (z), atrophic regions outlined in yellow",
                   colorbar_label="z of the grey level (scale stops at -5 and 5)")  # fmt: skip
