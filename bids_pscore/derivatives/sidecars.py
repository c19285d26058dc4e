"""What the sidecars say besides the columns: the software that made a file, the model that scored it,
the grid it lies on, and the preprocessing derivatives' own sidecars."""

from importlib.metadata import PackageNotFoundError, version

from ..grid import GRID_TEXT
from ..model.preprocessing import PreprocParams
from . import layout

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


def grid_metadata(template):
    """What every sidecar of a file on the reference grid (``res-1p5``) says of its space."""
    return {
        "SpatialReference": f"{template} template (nilearn) on the SPM12/CAT12 grid",
        "Resolution": {layout.GRID_RES_LABEL: f"{GRID_TEXT} isotropic voxels, bounding box [-90 -126 -72; 90 90 108] mm"},
    }


def recorded_intensity_map(sidecar):
    """(subtracted, divided_by) that a preprocessed T1w's ``sidecar`` (a dict) records; (0, 1) for
    outputs made before the map was recorded, all by a percentile, to which the gate's ratio is blind."""
    recorded = sidecar.get(INTENSITY_MAP_KEY)
    return (0.0, 1.0) if recorded is None else (float(recorded["Subtracted"]), float(recorded["DividedBy"]))


def preproc_sidecars(t1w_relpath, paths, params, input_skull_stripped, intensity_map):
    """JSON sidecars of the preprocessing derivatives, keyed like their ``layout.session_outputs``;
    ``intensity_map`` is ``steps.standardise``'s (subtracted, divided_by)."""
    raw = layout.raw_uri(t1w_relpath)
    template = params["template"]
    grid = grid_metadata(template)
    software = {TOOL_VERSIONS_KEY: software_versions()}
    transforms = [layout.own_uri(paths["xfm_warp"]), layout.own_uri(paths["xfm_affine"])]
    return {
        "t1w_grid": {
            "Description": "T1w bias-corrected (N4), skull-stripped, registered to MNI (rigid+affine+SyN), "
            "smoothed inside the brain mask and scaled to [0, 1]; the input of the P-score model",
            "Sources": [raw, layout.own_uri(paths["mask_grid"])] + transforms,
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
            },
            "PreprocessingParameters": params,
            **grid,
            **software,
        },
        "mask_grid": {
            "Description": "brain mask brought onto the grid with the registration (nearest neighbour)",
            "Type": "Brain",
            "Sources": [layout.own_uri(paths["mask_native"])] + transforms,
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


def model_record(model_card):
    """What a sidecar and a summary say of the model that made the file (``Model``): name, version, checksums, warning."""
    model = {
        "Name": model_card.get("name"),
        "Version": model_card.get("version"),
        "SHA256": model_card.get("sha256"),
        "MetadataSHA256": model_card.get("metadata_sha256"),
    }
    if model_card.get("warning"):
        model["Warning"] = model_card["warning"]
    return model
