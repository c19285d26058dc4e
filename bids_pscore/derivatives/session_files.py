"""The files of one scored T1w: the P-score tables, maps and summaries (SPEC section 8), the
relevance-weighted ones and the comparison with the normative reference; each file written
atomically with its JSON sidecar, and removed together.

Tables are TSV with 'n/a' for missing values, as BIDS does, and load straight into pandas;
each table and map has a JSON sidecar that says what every value means.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import atlas as bn_atlas
from ..fileio import write_json, write_nifti, write_tsv
from ..grid import GRID_AFFINE, cube_bounds
from . import layout
from .columns import CUBE_COLUMNS, NORMATIVE_COLUMNS, REGION_COLUMNS, UNITS
from .records import Summary, class_domain_summary
from .sidecars import grid_metadata, model_record


def _write_table(path, frame, columns, metadata=None):
    write_tsv(path, frame, "%.9g")
    sidecar = {k: {"Description": v, **({"Units": UNITS[k]} if k in UNITS else {})} for k, v in columns.items()}
    write_json(layout.sidecar_path(path), {**(metadata or {}), **sidecar})


def _write_map(path, data, sidecar, template):
    img = nib.Nifti1Image(np.asarray(data, np.float32), GRID_AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(GRID_AFFINE, 4)  # MNI
    img.set_qform(GRID_AFFINE, 4)
    write_nifti(path, img)
    write_json(layout.sidecar_path(path), {**sidecar, **grid_metadata(template)})


def _region_frame(scores):
    """The region table of one session's ``pscore.Scores``."""
    regions = bn_atlas.region_table()[["index", "label", "name", "hemisphere", "lobe", "gyrus"]].copy()
    regions["p_region"] = scores.region[0]
    regions["p_region_norm"] = scores.region_norm[0]
    regions["degenerative"] = scores.degenerative[0]
    return regions


def _write_spread(paths, keys, scores, voxel_map, region_map, texts, lambda_, template, model, sources, summary_fields):
    """Region table, voxel map, region map and summary of one spread of the cube scores.

    ``keys`` name the four files in ``paths`` (region table, voxel map, region map, summary);
    ``texts`` hold the region columns, the two maps' descriptions and the normalisation;
    ``summary_fields`` the Summary's fields that only this spread has.
    """
    region_key, voxel_key, region_map_key, summary_key = keys
    regions = _region_frame(scores)
    _write_table(paths[region_key], regions, texts["columns"])
    _write_map(paths[voxel_key], voxel_map, {
        "Description": texts["voxel"], "Units": "arbitrary (signed, sums to P_cube within each cube)", "Sources": sources, "Model": model,
    }, template)  # fmt: skip
    _write_map(paths[region_map_key], region_map, {
        "Description": texts["region_map"], "Units": "normalised score in [0, 1]", "Atlas": f"{bn_atlas.ATLAS_NAME}: {bn_atlas.CITATION}",
        "Sources": sources + [layout.own_uri(layout.atlas_paths(template)["image"])], "Model": model,
    }, template)  # fmt: skip
    flagged = regions.loc[regions["degenerative"], "label"].tolist()
    Summary(float(scores.whole[0]), float(lambda_), flagged, texts["normalisation"], template, model, sources, **summary_fields).write(
        paths[summary_key]
    )


def remove_outputs(output_dir, entities, template, preprocessing=True):
    """Delete the scores of one T1w (layout.SCORING_STEPS) and their sidecars, with its preprocessing
    unless told not to: what failed in this run must not leave an earlier run's outputs to be taken
    for current, and a rescore replaces the whole set (a file an earlier model wrote and this one
    does not would be taken for this model's). The summary goes first: without it neither the group
    level nor the reports take the other files for a scored session. Returns the number of files removed."""
    steps = layout.SCORING_STEPS + (layout.PREPROCESSING_STEPS if preprocessing else ())
    outputs = layout.session_outputs(entities, template, *steps)
    first = {"summary": outputs.pop("summary")}
    removed = 0
    for relpath in layout.with_sidecars(first | outputs):
        path = Path(output_dir) / relpath
        if path.is_file():
            path.unlink()
            removed += 1
    return removed


def write_session(
    output_dir,
    entities,
    template,
    scores,
    voxel_map,
    region_map,
    ad_probability,
    predicted_class,
    weights,
    selected,
    lambda_,
    model_card,
    t1w_relpath,
    normative=None,
    class_domain=None,
):
    """Write the cube, voxel, region and whole-brain outputs of one session; return their paths.

    ``scores`` is a ``pscore.Scores`` of one image; ``voxel_map`` and ``region_map`` are its
    P_voxel and normalised P_region painted on the grid; ``normative`` (``normative_summary``)
    adds the regions flagged against the normative reference to the summary, ``class_domain``
    (``class_domain_summary``) whether its class is reliable (null without: not checked).
    """
    root = Path(output_dir)
    paths = {k: root / v for k, v in layout.session_outputs(entities, template, layout.PSCORE).items()}
    sources = [layout.raw_uri(t1w_relpath)] + [layout.own_uri(p) for p in layout.session_outputs(entities, template, layout.PREPROCESSING).values()]

    cubes = pd.DataFrame(cube_bounds())
    cubes["brain_voxels"] = scores.brain_voxels[0]
    cubes["selected"] = np.asarray(selected, bool)
    cubes["weight"] = np.where(cubes["selected"], np.asarray(weights, float), np.nan)
    cubes["p_ad"] = scores.p_ad[0]
    cubes["p_cube"] = scores.cube[0]
    _write_table(paths["cube_table"], cubes, CUBE_COLUMNS, grid_metadata(template))

    _write_spread(paths, ("region_table", "voxel_map", "region_map", "summary"), scores, voxel_map, region_map, {
        "columns": REGION_COLUMNS,
        "voxel": "P_voxel: each selected cube's P_cube spread evenly over its brain voxels; 0 outside the brain",
        "region_map": "normalised P_region of each Brainnetome region painted over the region; 0 outside the atlas",
        "normalisation": "reference: the model's reference images (min and max per region; the validation split of models trained by this version)",
    }, lambda_, template, model_record(model_card), sources, {
        "ad_probability": float(ad_probability), "predicted_class": predicted_class, "normative": normative,
        **Summary.class_fields(class_domain or class_domain_summary(None, None)),
    })  # fmt: skip
    return paths


def write_normative(output_dir, entities, template, deviation, summary, model_card, t1w_relpath):
    """Write one session's comparison with the normative reference (SPEC 10): the voxel-wise
    deviation map and the region table; return their paths."""
    root = Path(output_dir)
    paths = {k: root / v for k, v in layout.session_outputs(entities, template, layout.NORMATIVE).items()}
    sources = [layout.raw_uri(t1w_relpath), layout.own_uri(layout.output_path(entities, "t1w_grid", template))]
    regions = bn_atlas.region_table()[["index", "label", "name", "hemisphere", "lobe", "gyrus"]].copy()
    for feature in deviation.region_z:
        regions[feature] = deviation.region_value[feature]
        regions[f"{feature}_expected"] = deviation.region_expected[feature]
        regions[f"{feature}_z"] = deviation.region_z[feature]
    regions["atrophic"] = deviation.atrophic
    reference = {k: summary[k] for k in ("Rule", "Threshold", "FalseFlagsPerHealthyImage", "AgeAdjusted", "Reliable")}
    _write_table(paths["normative_region_table"], regions, {c: NORMATIVE_COLUMNS[c] for c in regions.columns},
                 {"Description": "each region against the model's normative reference of healthy images (SPEC 10)", **reference,
                  "Sources": sources, "Model": model_record(model_card)})  # fmt: skip
    _write_map(paths["normative_voxel_map"], deviation.voxel_z, {
        "Description": "voxel-wise deviation from the normative reference: (grey level - expected for age and sex) / robust spread, "
                       "relative to the median of the brain's voxels; negative: less tissue than expected; 0 outside the template's brain mask",
        "Units": "z (standard deviations of healthy people)", **reference, "Sources": sources, "Model": model_record(model_card),
    }, template)  # fmt: skip
    return paths


def write_relevance(output_dir, entities, template, scores, voxel_map, region_map, lambda_, method, model_card, t1w_relpath):
    """Write the relevance-weighted voxel, region and whole-brain outputs of one session beside
    SPEC's (which stay as they are); return their paths. ``method`` says how the relevance was made."""
    root = Path(output_dir)
    paths = {k: root / v for k, v in layout.session_outputs(entities, template, layout.RELEVANCE).items()}
    sources = [layout.raw_uri(t1w_relpath)] + [layout.own_uri(p) for p in layout.session_outputs(entities, template, layout.PREPROCESSING).values()]
    sources.append(layout.own_uri(layout.output_path(entities, "cube_table", template)))
    spread = ("P_voxel_rel: each selected cube's P_cube spread over its brain voxels in proportion to their relevance to the "
              f"cube's classifier ({method}; docs/relevance.md); 0 outside the brain")  # fmt: skip
    keys = ("relevance_region_table", "relevance_voxel_map", "relevance_region_map", "relevance_summary")
    _write_spread(paths, keys, scores, voxel_map, region_map, {
        "columns": {
            **REGION_COLUMNS,
            "p_region": "P_region of the relevance-weighted voxel map: its sum over the region divided by the region's voxel count (raw, signed)",
            "p_region_norm": "p_region normalised by the model's relevance reference min and max, clipped to [0, 1]",
            "degenerative": "whether p_region_norm exceeds the model's relevance lambda",
        },
        "voxel": spread,
        "region_map": "normalised relevance-weighted P_region of each Brainnetome region painted over the region; 0 outside the atlas",
        "normalisation": "reference: the model's reference images (min and max per region of the relevance-weighted scores)",
    }, lambda_, template, model_record(model_card), sources, {
        "description": "whole-brain P-score and degenerative regions from the relevance-weighted voxel map (not SPEC's even spread)",
        "voxel_map": spread,
    })  # fmt: skip
    return paths
