"""What the output folder holds and says: the P-score derivatives of a session (SPEC section 8),
the group tables, and every sidecar and dataset file; each file written atomically.

Tables are TSV with 'n/a' for missing values, as BIDS does, and load straight into pandas;
each table and map has a JSON sidecar that says what every value means.
"""

import json
import os
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from . import atlas as bn_atlas
from . import bids
from .fileio import write_json, write_nifti, write_text, write_tsv
from .grid import GRID_AFFINE, GRID_TEXT, cube_bounds
from .model.preprocessing import PreprocParams
from .pscore import AD_THRESHOLD

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

# "SoftwareVersions" is reserved by BIDS (a string, for the scanner); ours name every package
TOOL_VERSIONS_KEY = "ToolVersions"
# the preprocessed T1w's sidecar: how its intensity was put on [0, 1] (steps.standardise's map)
INTENSITY_MAP_KEY = "IntensityMap"
SOFTWARE = ("bids_pscore", "nipype", "antspyx", "deepbet", "nilearn", "nibabel", "pybids", "torch")


def software_versions():
    """Installed versions of the software that shapes the outputs."""
    found = {}
    for name in SOFTWARE:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "n/a"
    return found


def container_record(environ):
    """GeneratedBy.Container of dataset_description.json, or None outside a container.

    The image sets BIDS_PSCORE_CONTAINER; Apptainer and Singularity, which run images built
    from it, add their own variables with the image file.
    """
    image_file = environ.get("APPTAINER_CONTAINER") or environ.get("SINGULARITY_CONTAINER")
    if image_file:
        kind = "apptainer" if environ.get("APPTAINER_CONTAINER") else "singularity"
        return {"Type": kind, "Tag": Path(image_file).name}
    if environ.get("BIDS_PSCORE_CONTAINER"):
        return {"Type": environ["BIDS_PSCORE_CONTAINER"], "Tag": f"bids_pscore:{software_versions()['bids_pscore']}"}
    return None


def dataset_description(bids_dir, container=None):
    """dataset_description.json of the output folder, a BIDS derivatives dataset.

    ``container`` is ``container_record()``'s answer.
    """
    generated = {
        "Name": "bids_pscore",
        "Version": software_versions()["bids_pscore"],
        "Description": "P-score neurodegeneration biomarker (US patent 12383189) from T1w images",
    }
    if container:
        generated["Container"] = container
    return {
        "Name": "bids_pscore: P-score neurodegeneration biomarker",
        "BIDSVersion": bids.BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [{"URL": "bids:raw:"}],
        "DatasetLinks": {"raw": str(Path(bids_dir).resolve())},
    }


def grid_metadata(template):
    """What every sidecar of a file on the reference grid (``res-1p5``) says of its space."""
    return {
        "SpatialReference": f"{template} template (nilearn) on the SPM12/CAT12 grid",
        "Resolution": {bids.GRID_RES_LABEL: f"{GRID_TEXT} isotropic voxels, bounding box [-90 -126 -72; 90 90 108] mm"},
    }


def output_readme(bids_dir):
    """README.md of the output folder: what it is and where its files are described."""
    return (
        "# bids_pscore derivatives\n\n"
        f"P-scores (an interpretable neurodegeneration biomarker, US patent 12383189) of the T1w images of "
        f"{Path(bids_dir).resolve()}, made by bids_pscore {software_versions()['bids_pscore']}.\n\n"
        "- `sub-*/[ses-*/]anat/`: per T1w, the preprocessed image and brain masks, the transforms to the template, "
        "and the P-scores (`*_pscore.tsv`, `*_pscore.nii.gz`, `*_pscore.json`); every file has a JSON sidecar "
        "that says what each value means.\n"
        "- `space-*_atlas-Brainnetome_res-1p5_dseg.*`: the atlas of the region scores on their grid.\n"
        "- `sub-*.html`: one report per subject; `group/`: the group level's tables and report (`group_*/`: of a subset).\n"
        "- `logs/CITATION.md` (and `.bib`): the methods paragraph and the references to cite.\n\n"
        "The model that made the scores is named, with its checksum, in every `*_desc-summary_pscore.json`.\n"
    )


def recorded_intensity_map(sidecar):
    """(subtracted, divided_by) that a preprocessed T1w's ``sidecar`` (a dict) records; (0, 1) for
    outputs made before the map was recorded, all by a percentile, to which the gate's ratio is blind."""
    recorded = sidecar.get(INTENSITY_MAP_KEY)
    return (0.0, 1.0) if recorded is None else (float(recorded["Subtracted"]), float(recorded["DividedBy"]))


def preproc_sidecars(t1w_relpath, paths, params, input_skull_stripped, intensity_map):
    """JSON sidecars of the preprocessing derivatives, keyed like their ``bids.session_outputs``;
    ``intensity_map`` is ``steps.standardise``'s (subtracted, divided_by)."""
    raw = bids.raw_uri(t1w_relpath)
    template = params["template"]
    grid = grid_metadata(template)
    software = {TOOL_VERSIONS_KEY: software_versions()}
    transforms = [bids.own_uri(paths["xfm_warp"]), bids.own_uri(paths["xfm_affine"])]
    return {
        "t1w_grid": {
            "Description": "T1w bias-corrected (N4), skull-stripped, registered to MNI (rigid+affine+SyN), "
            "smoothed inside the brain mask and scaled to [0, 1]; the input of the P-score model",
            "Sources": [raw, bids.own_uri(paths["mask_grid"])] + transforms,
            "SkullStripped": True,
            "InputSkullStripped": bool(input_skull_stripped),
            "SmoothingFWHM": params["fwhm_mm"],
            "SmoothingFWHMUnits": "mm",
            "IntensityNormalisation": PreprocParams.from_dict(params).standardisation_text,
            INTENSITY_MAP_KEY: {
                "Subtracted": intensity_map[0],
                "DividedBy": intensity_map[1],
                "Description": "the image is (I - Subtracted) / DividedBy inside the brain, clipped to [0, 1], "
                "I the smoothed brain; the quality gate measures I",
            },  # fmt: skip
            "PreprocessingParameters": params,
            **grid,
            **software,
        },
        "mask_grid": {
            "Description": "brain mask brought onto the grid with the registration (nearest neighbour)",
            "Type": "Brain",
            "Sources": [bids.own_uri(paths["mask_native"])] + transforms,
            **grid,
            **software,
        },
        "mask_native": {
            "Description": "brain mask on the voxel grid of the input T1w (same shape and affine): multiply the T1w by it",
            "Type": "Brain",
            "Sources": [raw],
            "SpatialReference": raw,
            "Method": "input already skull-stripped: its non-zero region" if input_skull_stripped else "deepbet",
            **software,
        },
        "xfm_affine": {
            "Description": "ANTs affine (rigid + affine stages), subject T1w to template; apply after the warp",
            "FromSpace": "T1w",
            "ToSpace": template,
            "Sources": [raw],
            **software,
        },
        "xfm_warp": {
            "Description": "ANTs SyN displacement field, subject T1w to template; "
            "antsApplyTransforms -t <warp> -t <affine> maps the T1w onto the grid",
            "FromSpace": "T1w",
            "ToSpace": template,
            "Sources": [raw],
            **software,
        },
    }


def write_dataset_files(output_dir, bids_dir):
    """The files that make ``output_dir`` a BIDS derivatives dataset."""
    write_json(output_dir / "dataset_description.json", dataset_description(bids_dir, container_record(os.environ)))
    write_text(output_dir / ".bidsignore", "\n".join(bids.BIDSIGNORE) + "\n")
    write_text(output_dir / "README.md", output_readme(bids_dir))


def _write_table(path, frame, columns, metadata=None):
    write_tsv(path, frame, "%.9g")
    sidecar = {k: {"Description": v, **({"Units": UNITS[k]} if k in UNITS else {})} for k, v in columns.items()}
    write_json(bids.sidecar_path(path), {**(metadata or {}), **sidecar})


def _write_map(path, data, sidecar, template):
    img = nib.Nifti1Image(np.asarray(data, np.float32), GRID_AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(GRID_AFFINE, 4)  # MNI
    img.set_qform(GRID_AFFINE, 4)
    write_nifti(path, img)
    write_json(bids.sidecar_path(path), {**sidecar, **grid_metadata(template)})


def _region_frame(scores):
    """The region table of one session's ``pscore.Scores``."""
    regions = bn_atlas.region_table()[["index", "label", "name", "hemisphere", "lobe", "gyrus"]].copy()
    regions["p_region"] = scores.region[0]
    regions["p_region_norm"] = scores.region_norm[0]
    regions["degenerative"] = scores.degenerative[0]
    return regions


def _model_record(model_card):
    model = {
        "Name": model_card.get("name"),
        "Version": model_card.get("version"),
        "SHA256": model_card.get("sha256"),
        "MetadataSHA256": model_card.get("metadata_sha256"),
    }
    if model_card.get("warning"):
        model["Warning"] = model_card["warning"]
    return model


# BIDS defines the dseg table's "index" (the label value in the image) and "name"
ATLAS_COLUMNS = {
    "name": "region label, hemisphere first (e.g. L.mAmyg); the label column of the region tables",
    "abbreviation": "Brainnetome's abbreviation of the region",
    "full_name": "full region name",
    "hemisphere": "L or R",
    "lobe": "lobe of the region",
    "gyrus": "gyrus of the region",
    "mni_center": "Brainnetome's MNI coordinates of the region's centre (x y z, mm)",
}


def write_atlas(output_dir, template, grid_atlas):
    """The atlas at the output root (BIDS 1.11): the label image on the grid, from which every
    region score can be recomputed, its look-up table, their sidecar and the atlas description."""
    root = Path(output_dir)
    paths = {k: root / v for k, v in bids.atlas_paths(template).items()}
    table = bn_atlas.region_table()
    lut = table.rename(columns={"label": "name", "name": "full_name"})[["index", *ATLAS_COLUMNS]]
    write_tsv(paths["table"], lut)
    img = nib.Nifti1Image(np.asarray(grid_atlas, np.int16), GRID_AFFINE)
    img.header.set_xyzt_units("mm", "sec")
    img.set_sform(GRID_AFFINE, 4)  # MNI
    img.set_qform(GRID_AFFINE, 4)
    write_nifti(paths["image"], img)
    write_json(paths["sidecar"], {
        "Description": f"{bn_atlas.ATLAS_NAME} atlas (246 regions) on the grid of the P-score outputs: each voxel holds the region "
                       "index of the majority of its sub-voxel samples (bids_pscore.atlas.resample_labels); the region scores are "
                       "means of the voxel map over these regions",
        **grid_metadata(template),
        **{column: {"Description": text} for column, text in ATLAS_COLUMNS.items()},
    })  # fmt: skip
    write_json(paths["description"], {
        "AtlasName": bn_atlas.ATLAS_NAME,
        "License": "free for non-commercial use with attribution, share alike; commercial use needs a licence from the "
                   "Brainnetome Center (bids_pscore/data/atlas/LICENSE.md)",
        "Description": "The Human Brainnetome Atlas: 210 cortical and 36 subcortical regions defined by connectional "
                       "architecture; maximum-probability map thresholded at 25%, 1.25 mm, FSL MNI152 space",
        "Authors": ["Lingzhong Fan", "Hai Li", "Junjie Zhuo", "Yu Zhang", "Jiaojian Wang", "Liangfu Chen", "Zhengyi Yang",
                    "Congying Chu", "Sangma Xie", "Angela R. Laird", "Peter T. Fox", "Simon B. Eickhoff", "Chunshui Yu", "Tianzi Jiang"],
        "ReferencesAndLinks": [bn_atlas.CITATION, "https://atlas.brainnetome.org"],
        "Species": "homo sapiens",
    })  # fmt: skip
    return paths


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
        "Sources": sources + [bids.own_uri(bids.atlas_paths(template)["image"])], "Model": model,
    }, template)  # fmt: skip
    flagged = regions.loc[regions["degenerative"], "label"].tolist()
    Summary(float(scores.whole[0]), float(lambda_), flagged, texts["normalisation"], template, model, sources, **summary_fields).write(
        paths[summary_key]
    )


@dataclass(frozen=True)
class Summary:
    """One spread's whole-brain results as its summary JSON says them: ``*_desc-summary_pscore.json``
    (summary.schema.json beside this module) and the relevance-weighted ``*_desc-relevancesummary_pscore.json``,
    which has no class. The one place the files' keys are spelt: the participant level writes them
    through it, and --reports-only, a rerun's reuse and the group level read them back through it."""

    whole: float  # whole-brain P-score
    threshold: float  # lambda
    degenerative: list  # labels of the regions above lambda
    normalisation: str
    space: str
    model: dict  # _model_record
    sources: list
    ad_probability: float | None = None  # the class, the probability's summary only
    predicted_class: str | None = None
    class_reliable: bool | None = None  # None: the model has no class domain (not checked)
    class_domain: dict | None = None  # class_domain_summary's "ClassDomain"
    normative: dict | None = None  # normative_summary, with a normative reference
    description: str | None = None  # the relevance summary's, with its voxel map's
    voxel_map: str | None = None

    @property
    def model_checksum(self):
        """model.json's metadata_sha256 (None if the summary has none): the model that scored the session."""
        return self.model.get("MetadataSHA256")

    @staticmethod
    def class_fields(class_summary):
        """The Summary's class fields from ``class_domain_summary``."""
        return {"class_reliable": class_summary["ClassReliable"], "class_domain": class_summary["ClassDomain"]}

    def to_json(self):
        """The file's content, keys in the order the file has them."""
        return {
            **({"Description": self.description, "VoxelMap": self.voxel_map} if self.description is not None else {}),
            "WholeBrainPScore": self.whole,
            "WholeBrainPScoreRange": [0, bn_atlas.N_REGIONS],
            **({"ADProbability": self.ad_probability, "PredictedClass": self.predicted_class, "ClassReliable": self.class_reliable,
                "ClassDomain": self.class_domain} if self.ad_probability is not None else {}),
            **({"NumberOfAtrophicRegions": self.normative["NumberOfAtrophicRegions"], "AtrophicRegions": self.normative["AtrophicRegions"],
                "Normative": self.normative} if self.normative else {}),
            "Lambda": self.threshold,
            "NumberOfDegenerativeRegions": len(self.degenerative),
            "DegenerativeRegions": self.degenerative,
            "Normalisation": self.normalisation,
            "Atlas": bn_atlas.ATLAS_NAME,
            "Space": self.space,
            "Model": self.model,
            "Sources": self.sources,
        }  # fmt: skip

    def write(self, path):
        write_json(path, self.to_json())

    @classmethod
    def from_json(cls, path, relevance=False):
        """A summary file read back (``relevance``: the relevance-weighted one); KeyError if it lacks a key such a
        file always has, ValueError if it is not JSON. Summaries written before the class domain have no class
        reliability: None, as for a model without a domain."""
        data = json.loads(Path(path).read_text())
        spread = (data["WholeBrainPScore"], data["Lambda"], data["DegenerativeRegions"], data["Normalisation"], data["Space"], data["Model"],
                  data["Sources"])  # fmt: skip
        if relevance:
            return cls(*spread, description=data["Description"], voxel_map=data["VoxelMap"])
        return cls(*spread, data["ADProbability"], data["PredictedClass"], data.get("ClassReliable"), data.get("ClassDomain"), data.get("Normative"))


def remove_outputs(output_dir, entities, template, preprocessing=True):
    """Delete the scores of one T1w (bids.SCORING_STEPS) and their sidecars, with its preprocessing
    unless told not to: what failed in this run must not leave an earlier run's outputs to be taken
    for current, and a rescore replaces the whole set (a file an earlier model wrote and this one
    does not would be taken for this model's). The summary goes first: without it neither the group
    level nor the reports take the other files for a scored session. Returns the number of files removed."""
    steps = bids.SCORING_STEPS + (bids.PREPROCESSING_STEPS if preprocessing else ())
    outputs = bids.session_outputs(entities, template, *steps)
    first = {"summary": outputs.pop("summary")}
    removed = 0
    for relpath in bids.with_sidecars(first | outputs):
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
    paths = {k: root / v for k, v in bids.session_outputs(entities, template, bids.PSCORE).items()}
    sources = [bids.raw_uri(t1w_relpath)] + [bids.own_uri(p) for p in bids.session_outputs(entities, template, bids.PREPROCESSING).values()]

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
    }, lambda_, template, _model_record(model_card), sources, {
        "ad_probability": float(ad_probability), "predicted_class": predicted_class, "normative": normative,
        **Summary.class_fields(class_domain or class_domain_summary(None, None)),
    })  # fmt: skip
    return paths


def normative_summary(deviation, record, labels, age, sex):
    """What the session's summary says of its comparison with the model's normative reference
    (``record``: model.json's "normative")."""
    import math

    flagged = labels[deviation.atrophic].tolist()
    known_age = age is not None and not (isinstance(age, float) and math.isnan(age))
    calibration = record.get("calibration", {})
    summary = {
        "NumberOfAtrophicRegions": len(flagged),
        "AtrophicRegions": flagged,
        "Rule": record.get("rule"),
        "Threshold": record["threshold"],
        "FalseFlagsPerHealthyImage": calibration.get("false_flags_per_healthy_image"),
        "Reference": record.get("reference"),
        "SHA256": record.get("sha256"),  # of normative.safetensors: which reference, as Model.SHA256 says which weights
        "Age": float(age) if known_age else None,
        "Sex": sex if sex not in (None, "", "n/a") else None,
        "AgeAdjusted": deviation.age_adjusted and record["covariates"]["age"],
        "MedianRegionZ": deviation.overall_level,  # the flags' z are relative to it
        "Distance": deviation.distance,
        "DistanceThreshold": record["distance_threshold"],
        "Reliable": deviation.reliable,
        # the AD probability's decision moved by the reference's controls (bids_pscore-normative --calibrate-class)
        **({"ClassCalibration": record["class_calibration"]} if "class_calibration" in record else {}),
    }
    cautions = []
    if not deviation.reliable:
        cautions.append(
            f"this scan is far from the model's normative reference (median |z| {deviation.distance:.2f} > {record['distance_threshold']:.2f}, "
            "the most its healthy images reach), e.g. another scanner or protocol: its atrophic flags are not reliable; build a reference "
            "from healthy scans of your own site with bids_pscore-normative"
        )
    ages = (record.get("reference") or {}).get("age") or {}
    if record["covariates"]["age"] and not known_age:
        cautions.append(
            f"the age of this session is unknown (participants.tsv or sessions.tsv 'age'): compared with healthy people of the "
            f"reference's median age ({record['covariates'].get('age_centre', float('nan')):g}), so its flags are less certain"
        )
    elif record["covariates"]["age"] and "min" in ages and not ages["min"] <= age <= ages["max"]:
        cautions.append(f"age {age:g} is outside the normative reference's ages ({ages['min']:g}-{ages['max']:g}): its expected values "
                        "are extrapolated")  # fmt: skip
    if cautions:
        summary["Caution"] = "; ".join(cautions)
    return summary


def class_domain_summary(deviation, record):
    """What the summary says beside the AD probability of whether the class can be given for this scan:
    its ``deviation`` from the class domain (the heads the class was set on; ``record``: model.json's
    "class_domain"). Both None for a bundle without a domain: the class was not checked."""
    if record is None:
        return {"ClassReliable": None, "ClassDomain": None}
    domain = {"Distance": deviation.distance, "DistanceThreshold": record["distance_threshold"], "Reference": record["reference"],
              "FromClassCalibration": record["from_class_calibration"], "SHA256": record["sha256"]}  # fmt: skip
    if not deviation.reliable:
        domain["Caution"] = (
            f"the class is not reliable: this scan is far from the heads the model's class was set on (median |z| {deviation.distance:.2f} > "
            f"{record['distance_threshold']:.2f}, the most they reach), e.g. another scanner, where a model may call every healthy head AD; "
            "calibrate the class on healthy scans of this scanner (bids_pscore-normative --calibrate-class) or use a model trained on it"
        )
    return {"ClassReliable": deviation.reliable, "ClassDomain": domain}


def class_mark(class_domain):
    """The words beside the AD probability of a scan whose class is not reliable (the console and the
    report); "" otherwise (``class_domain``: the summary's "ClassDomain")."""
    if not class_domain or "Caution" not in class_domain:
        return ""
    heads = "the site's heads the class was calibrated on" if class_domain["FromClassCalibration"] else "the model's training scanner"
    return f"class not reliable: scan unlike {heads}"


NORMATIVE_COLUMNS = {
    "index": REGION_COLUMNS["index"], "label": REGION_COLUMNS["label"], "name": REGION_COLUMNS["name"],
    "hemisphere": REGION_COLUMNS["hemisphere"], "lobe": REGION_COLUMNS["lobe"], "gyrus": REGION_COLUMNS["gyrus"],
    "grey_level": "mean preprocessed grey level of the region (what the networks see)",
    "grey_level_expected": "the healthy mean grey level for the person's age and sex (the normative reference), shifted by the "
                           "brain's overall level (the summary's MedianRegionZ spreads): what the region would show without regional loss",
    "grey_level_z": "(grey_level - grey_level_expected) / the reference's robust spread: the region's z relative to the median z of the "
                    "brain's regions; negative: less tissue than the rest of the brain would say",
    "pscore": "normalised region P-score (as in the region table of the P-scores)",
    "pscore_expected": "the healthy normalised region P-score for the person's age and sex",
    "pscore_z": "-(pscore - pscore_expected) / the reference's robust spread; negative: more degeneration than expected",
    "atrophic": "whether grey_level_z is below the reference's calibrated threshold",
}  # fmt: skip


def write_normative(output_dir, entities, template, deviation, summary, model_card, t1w_relpath):
    """Write one session's comparison with the normative reference (SPEC 10): the voxel-wise
    deviation map and the region table; return their paths."""
    root = Path(output_dir)
    paths = {k: root / v for k, v in bids.session_outputs(entities, template, bids.NORMATIVE).items()}
    sources = [bids.raw_uri(t1w_relpath), bids.own_uri(bids.output_path(entities, "t1w_grid", template))]
    regions = bn_atlas.region_table()[["index", "label", "name", "hemisphere", "lobe", "gyrus"]].copy()
    for feature in deviation.region_z:
        regions[feature] = deviation.region_value[feature]
        regions[f"{feature}_expected"] = deviation.region_expected[feature]
        regions[f"{feature}_z"] = deviation.region_z[feature]
    regions["atrophic"] = deviation.atrophic
    reference = {k: summary[k] for k in ("Rule", "Threshold", "FalseFlagsPerHealthyImage", "AgeAdjusted", "Reliable")}
    _write_table(paths["normative_region_table"], regions, {c: NORMATIVE_COLUMNS[c] for c in regions.columns},
                 {"Description": "each region against the model's normative reference of healthy images (SPEC 10)", **reference,
                  "Sources": sources, "Model": _model_record(model_card)})  # fmt: skip
    _write_map(paths["normative_voxel_map"], deviation.voxel_z, {
        "Description": "voxel-wise deviation from the normative reference: (grey level - expected for age and sex) / robust spread, "
                       "relative to the median of the brain's voxels; negative: less tissue than expected; 0 outside the template's brain mask",
        "Units": "z (standard deviations of healthy people)", **reference, "Sources": sources, "Model": _model_record(model_card),
    }, template)  # fmt: skip
    return paths


def write_relevance(output_dir, entities, template, scores, voxel_map, region_map, lambda_, method, model_card, t1w_relpath):
    """Write the relevance-weighted voxel, region and whole-brain outputs of one session beside
    SPEC's (which stay as they are); return their paths. ``method`` says how the relevance was made."""
    root = Path(output_dir)
    paths = {k: root / v for k, v in bids.session_outputs(entities, template, bids.RELEVANCE).items()}
    sources = [bids.raw_uri(t1w_relpath)] + [bids.own_uri(p) for p in bids.session_outputs(entities, template, bids.PREPROCESSING).values()]
    sources.append(bids.own_uri(bids.output_path(entities, "cube_table", template)))
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
    }, lambda_, template, _model_record(model_card), sources, {
        "description": "whole-brain P-score and degenerative regions from the relevance-weighted voxel map (not SPEC's even spread)",
        "voxel_map": spread,
    })  # fmt: skip
    return paths


GROUP_COLUMNS = {
    "participant_id": "subject", "session_id": "session (n/a without sessions)", "t1w": "the scored T1w's name, without suffix",
    "acq_time": "acquisition time", "time_source": "file the acquisition time came from",
    "order_by": "what the subject's sessions are ordered by: acq_time, or session label when a time is missing",
    "session_index": "position of the session in the subject's order (0 first)",
    "years_from_first": "years since the subject's first session (n/a when ordered by label)",
    "diagnosis": "diagnosis from --label-column", "ad_probability": "the meta-classifier's probability of AD",
    "predicted_class": f"AD if ad_probability >= {AD_THRESHOLD:g}, else control",
    "class_reliable": "the session lies within the distance threshold of the heads the model's class was set on (its class domain); "
                      "false (e.g. another scanner): its AD probability and predicted class are not reliable; n/a: not checked (a model "
                      "without a class domain)",
    "whole_brain_pscore_reference": "sum of the region scores normalised by the model's reference cohort (0-246)",
    "whole_brain_pscore_cohort": "sum of the region scores normalised over the analysed sessions (0-246)",
    "normalisation": "normalisation of the P-scores (and of patent flags)",
    "flags": "which flags n_degenerative, degenerative_regions and the other tables count: normative or patent (see Flags)",
    "grey_level_z": "the region's grey-level z against the model's normative reference (negative: less tissue than expected)",
    "atrophic": "grey_level_z below the normative reference's calibrated threshold",
    "normative_reliable": "the session lies within the normative reference's distance threshold; false (e.g. another scanner): its atrophic "
                          "flags are not reliable, and normative flags counted here leave them out",
    "n_degenerative": "number of flagged regions (see Flags)", "degenerative_regions": "labels of the flagged regions (see Flags)",
    "index": "Brainnetome region index", "label": "region label (hemisphere first, e.g. L.mAmyg)", "name": "full region name",
    "p_region": "raw region P-score", "p_region_norm_reference": "region score normalised by the model's reference cohort",
    "p_region_norm_cohort": "region score normalised by the minimum and maximum over the analysed sessions",
    "degenerative": "the region is flagged (see Flags)",
    "rank": "rank by frequency among sessions predicted AD (1: the most frequent; regions as frequent share a rank; n/a: never degenerative there)",
    "sessions_predicted_ad": "sessions predicted AD", "degenerative_predicted_ad": "of them, sessions in which the region is degenerative",
    "frequency_predicted_ad": "share of sessions predicted AD in which the region is degenerative",
    "sessions_labelled_ad": "sessions labelled AD", "degenerative_labelled_ad": "of them, sessions in which the region is degenerative",
    "frequency_labelled_ad": "share of sessions labelled AD in which the region is degenerative",
    "regions": "the set of regions, joined by ' + '", "size": "number of regions in the set",
    "support": "share of sessions predicted AD in which all regions of the set are degenerative",
    "sessions": "number of sessions (of the set's support, or of the subject)",
    "unit": "unit of slope and onset, one for the whole group: year (acquisition times of every followed subject known) or session",
    "first": "the subject's first session", "last": "the subject's last session",
    "slope": "least-squares slope of the normalised region score per unit", "start": "score at the first session",
    "end": "score at the last session", "onset_session": "first session with the region above lambda (n/a: never)",
    "onset": "time of that session from the subject's first (0: already above lambda at the first)",
    "order": "order of involvement across subjects (regions as early, in as many subjects, share an order; 0: never involved)",
    "median_onset": "median onset over involved subjects",
    "mean_onset": "mean onset over involved subjects", "subjects_involved": "subjects in which the region crosses lambda",
    "subjects_followed": "subjects with two or more sessions", "share_involved": "subjects_involved / subjects_followed",
    "n_ad": "subjects labelled AD (first session each)", "n_control": "subjects labelled control (first session each)",
    "median_ad": "median normalised score in AD", "median_control": "median normalised score in controls",
    "u": "Mann-Whitney U of AD against control", "p": "two-sided p value",
    "rank_biserial_r": "rank-biserial correlation (effect size; > 0: higher in AD)",
    "q_fdr": "Benjamini-Hochberg false-discovery-rate q over the tested regions",
}  # fmt: skip


FLAG_DESCRIPTIONS = {
    "normative": "degenerative = atrophic against the model's normative reference: grey-level z below its calibrated threshold "
                 "(SPEC 10); trajectories follow that z",
    "patent": "degenerative = normalised P-score above lambda (SPEC 5); trajectories follow the normalised score",
}  # fmt: skip


def write_group_tables(folder, tables, normalisation, lambda_, model, flags="patent", flag_cutoff=None, notes=None):
    """Write each group table as TSV with a JSON sidecar in ``folder`` (group.group_folder); return the folder.
    ``notes``: what every sidecar says besides (the selection, warnings, the minimum numbers the analysis needs)."""
    folder = Path(folder)
    for key, frame in tables.items():
        path = folder / bids.GROUP_FILES[key]
        write_tsv(path, frame, "%.6g")
        columns = {c: {"Description": GROUP_COLUMNS.get(c, "from participants.tsv")} for c in frame.columns}
        write_json(bids.sidecar_path(path), {
            "Normalisation": f"{normalisation}: " + ("the model's reference images" if normalisation == "reference"
                                                      else "minimum and maximum over the analysed sessions, and lambda over those "
                                                           "of them AD and predicted AD (SPEC 5's lambda, with the cohort as reference)"),
            "Lambda": lambda_, "Model": {"Name": model.get("Name"), "Version": model.get("Version"), "SHA256": model.get("SHA256")},
            "Flags": f"{flags}: {FLAG_DESCRIPTIONS[flags]}",
            **({"NormativeThreshold": flag_cutoff} if flags == "normative" else {}),
            **(notes or {}),
            **columns,
        })  # fmt: skip
    for key in {"sessions", "regions", "frequency", "sets", "trajectories", "onset", "comparison"} - set(tables):
        # a table this run did not make (e.g. no comparison without labels) must not survive from an earlier one
        for path in (folder / bids.GROUP_FILES[key], bids.sidecar_path(folder / bids.GROUP_FILES[key])):
            path.unlink(missing_ok=True)
    return folder
