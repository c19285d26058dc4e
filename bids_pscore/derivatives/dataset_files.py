"""The files of the output folder as a whole: what makes it a BIDS derivatives dataset
(dataset_description.json, .bidsignore, README.md), the atlas at its root and the group tables."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from .. import atlas as bn_atlas
from .. import bids
from ..fileio import write_json, write_nifti, write_text, write_tsv
from ..grid import GRID_AFFINE
from . import layout
from .columns import ATLAS_COLUMNS, FLAG_DESCRIPTIONS, GROUP_COLUMNS
from .sidecars import grid_metadata, software_versions


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


def write_dataset_files(output_dir, bids_dir):
    """The files that make ``output_dir`` a BIDS derivatives dataset."""
    write_json(output_dir / "dataset_description.json", dataset_description(bids_dir, container_record(os.environ)))
    write_text(output_dir / ".bidsignore", "\n".join(layout.BIDSIGNORE) + "\n")
    write_text(output_dir / "README.md", output_readme(bids_dir))


def write_atlas(output_dir, template, grid_atlas):
    """The atlas at the output root (BIDS 1.11): the label image on the grid, from which every
    region score can be recomputed, its look-up table, their sidecar and the atlas description."""
    root = Path(output_dir)
    paths = {k: root / v for k, v in layout.atlas_paths(template).items()}
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


def write_group_tables(folder, tables, normalisation, lambda_, model, flags="patent", flag_cutoff=None, notes=None):
    """Write each group table as TSV with a JSON sidecar in ``folder`` (group.group_folder); return the folder.
    ``notes``: what every sidecar says besides (the selection, warnings, the minimum numbers the analysis needs)."""
    folder = Path(folder)
    for key, frame in tables.items():
        path = folder / layout.GROUP_FILES[key]
        write_tsv(path, frame, "%.6g")
        columns = {c: {"Description": GROUP_COLUMNS.get(c, "from participants.tsv")} for c in frame.columns}
        write_json(layout.sidecar_path(path), {
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
        for path in (folder / layout.GROUP_FILES[key], layout.sidecar_path(folder / layout.GROUP_FILES[key])):
            path.unlink(missing_ok=True)
    return folder
