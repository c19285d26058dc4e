"""Writes the P-score derivatives of one session (SPEC section 8), every file atomically.

Tables are TSV with 'n/a' for missing values, as BIDS does, and load straight into pandas;
each table and map has a JSON sidecar that says what every value means.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from . import atlas as bn_atlas
from . import bids
from .fileio import atomic_path, write_json
from .grid import GRID_AFFINE, cube_bounds

CUBE_COLUMNS = {
    "cube": "cube index c = ix * 30 + iy * 5 + iz (SPEC section 3)",
    "ix": "cube position along the grid's first axis (0-4)",
    "iy": "cube position along the grid's second axis (0-5)",
    "iz": "cube position along the grid's third axis (0-4)",
    "i_start": "first grid voxel of the cube along the first axis", "i_stop": "one past its last voxel",
    "j_start": "first grid voxel along the second axis", "j_stop": "one past its last voxel",
    "k_start": "first grid voxel along the third axis", "k_stop": "one past its last voxel",
    "x_min_mm": "MNI x of the cube's voxel centres, minimum", "x_max_mm": "maximum",
    "y_min_mm": "MNI y of the cube's voxel centres, minimum", "y_max_mm": "maximum",
    "z_min_mm": "MNI z of the cube's voxel centres, minimum", "z_max_mm": "maximum",
    "brain_voxels": "M_ic: brain-mask voxels of this image inside the cube",
    "selected": "whether the meta-classifier uses this cube's base classifier",
    "weight": "w_c: the meta-classifier's 1-D convolution weight of the cube (n/a if not selected)",
    "p_ad": "p_ic: the cube's base classifier's probability of AD",
    "p_cube": "P_cube = w_c * p_ic (0 if not selected)",
}  # fmt: skip
REGION_COLUMNS = {
    "index": "Brainnetome region index (odd: left, even: right)",
    "label": "region label, hemisphere first (e.g. L.mAmyg)",
    "name": "full region name",
    "hemisphere": "L or R",
    "lobe": "lobe of the region",
    "gyrus": "gyrus of the region",
    "p_region": "P_region: sum of P_voxel over the region divided by its voxel count (raw, signed)",
    "p_region_norm": "P_region normalised by the model's reference min and max, clipped to [0, 1]",
    "degenerative": "whether p_region_norm exceeds the model's lambda",
}


# units of the columns that have one; the others are indices, labels, flags or unitless scores
UNITS = {
    **{f"{a}_{e}_mm": "mm" for a in "xyz" for e in ("min", "max")},
    **{f"{a}_{e}": "voxel index" for a in "ijk" for e in ("start", "stop")},
    "brain_voxels": "voxels", "p_ad": "probability",
    "p_cube": "arbitrary (signed)", "weight": "arbitrary (signed)", "p_region": "arbitrary (signed) per voxel",
    "p_region_norm": "normalised score in [0, 1]",
}  # fmt: skip


def _write_table(path, frame, columns):
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.9g")
    sidecar = {k: {"Description": v, **({"Units": UNITS[k]} if k in UNITS else {})} for k, v in columns.items()}
    write_json(bids.sidecar_path(path), sidecar)


def _write_map(path, data, sidecar):
    img = nib.Nifti1Image(np.asarray(data, np.float32), GRID_AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(GRID_AFFINE, 4)  # MNI
    img.set_qform(GRID_AFFINE, 4)
    with atomic_path(path) as tmp:
        img.to_filename(tmp)
    write_json(bids.sidecar_path(path), sidecar)


def write_atlas_lut(output_dir):
    """atlas-Brainnetome_dseg.tsv at the output root: the look-up table of the region maps."""
    table = bn_atlas.region_table()
    lut = table.rename(columns={"label": "name", "name": "full_name"})[
        ["index", "name", "abbreviation", "full_name", "hemisphere", "lobe", "gyrus", "mni_center"]
    ]
    path = Path(output_dir) / bids.ATLAS_LUT
    with atomic_path(path) as tmp:
        lut.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    return path


def write_session(output_dir, entities, template, scores, voxel_map, region_map, ad_probability,
                  predicted_class, weights, selected, threshold, model_card, t1w_relpath):
    """Write the cube, voxel, region and whole-brain outputs of one session; return their paths.

    ``scores`` is a ``pscore.Scores`` of one image; ``voxel_map`` and ``region_map`` are its
    P_voxel and normalised P_region painted on the grid.
    """
    root = Path(output_dir)
    paths = {k: root / v for k, v in bids.pscore_paths(entities, template).items()}
    model = {"Name": model_card.get("name"), "Version": model_card.get("version"), "SHA256": model_card.get("sha256")}
    sources = [bids.raw_uri(t1w_relpath)] + [bids.own_uri(p) for p in bids.preproc_paths(entities, template).values()]

    cubes = pd.DataFrame(cube_bounds())
    cubes["brain_voxels"] = scores.brain_voxels[0]
    cubes["selected"] = np.asarray(selected, bool)
    cubes["weight"] = np.where(cubes["selected"], np.asarray(weights, float), np.nan)
    cubes["p_ad"] = scores.p_ad[0]
    cubes["p_cube"] = scores.cube[0]
    _write_table(paths["cube_table"], cubes, CUBE_COLUMNS)

    table = bn_atlas.region_table()
    regions = table[["index", "label", "name", "hemisphere", "lobe", "gyrus"]].copy()
    regions["p_region"] = scores.region[0]
    regions["p_region_norm"] = scores.region_norm[0]
    regions["degenerative"] = scores.degenerative[0]
    _write_table(paths["region_table"], regions, REGION_COLUMNS)

    _write_map(paths["voxel_map"], voxel_map, {
        "Description": "P_voxel: each selected cube's P_cube spread evenly over its brain voxels; 0 outside the brain",
        "Units": "arbitrary (signed, sums to P_cube within each cube)", "Sources": sources, "Model": model,
    })  # fmt: skip
    _write_map(paths["region_map"], region_map, {
        "Description": "normalised P_region of each Brainnetome region painted over the region; 0 outside the atlas",
        "Units": "normalised score in [0, 1]", "Atlas": f"{bn_atlas.ATLAS_NAME}: {bn_atlas.CITATION}",
        "Sources": sources, "Model": model,
    })  # fmt: skip
    flagged = regions.loc[regions["degenerative"], "label"].tolist()
    write_json(paths["summary"], {
        "WholeBrainPScore": float(scores.whole[0]),
        "WholeBrainPScoreRange": [0, len(regions)],
        "ADProbability": float(ad_probability),
        "PredictedClass": predicted_class,
        "Lambda": float(threshold),
        "NumberOfDegenerativeRegions": len(flagged),
        "DegenerativeRegions": flagged,
        "Normalisation": "reference: the model's training images (min and max per region)",
        "Atlas": bn_atlas.ATLAS_NAME,
        "Model": model,
        "Sources": sources,
    })  # fmt: skip
    return paths
