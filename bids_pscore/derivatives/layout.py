"""The layout of the output folder: the name of every file the app writes (SESSION_OUTPUTS for one
T1w, the group files, the atlas, the reports), their sidecars and their BIDS URIs.
The one place that names outputs; what they hold is written by the other modules of ``derivatives``.
"""

from dataclasses import dataclass
from pathlib import Path

from ..bids import BIDS_ENTITY_ORDER, SOURCE_ENTITIES, source_entities

# the order of entities in output names: BIDS order, with fMRIPrep's transform entities from, to
# and mode (not in the schema) before space, where fMRIPrep puts them
_SPACE = BIDS_ENTITY_ORDER.index("space")
OUTPUT_ENTITY_ORDER = BIDS_ENTITY_ORDER[:_SPACE] + ("from", "to", "mode") + BIDS_ENTITY_ORDER[_SPACE:]
GRID_RES_LABEL = "1p5"
# BIDS validator 3 ignores patterns that end with a slash: folders are named bare
BIDSIGNORE = ("logs", "*_xfm.*", "*_pscore.*", "*_normative.*", "*_qc.json", "*.html", "figures", "group", "group_*")
# the space of outputs on the raw T1w's own voxel grid; named so that their sidecars are not
# inherited by the same outputs on the template grid (which carry space-<template>)
NATIVE_SPACE = "T1w"


@dataclass(frozen=True)
class Output:
    """How one file of a session's outputs is named, which step writes it and what it is."""

    step: str  # what writes it (the steps of session_outputs)
    suffix: str
    extension: str
    role: str  # what the file is, in words (the report's links)
    desc: str | None = None
    space: str | None = None  # "grid": space-<template>_res-1p5; "native": space-T1w; "xfm": from-T1w_to-<template>_mode-image
    atlas: bool = False  # atlas-<atlas>: a table or map over the atlas's regions
    figure: bool = False  # a report's figure, in sub-<label>/figures/

    @property
    def sidecar(self):
        """Whether the file has a JSON sidecar (sidecar_path): every data file that is not JSON itself."""
        return not self.figure and self.extension != ".json"


# Every file the participant level writes for one T1w, in the order Sources and the report's links list
# them: the one description of a session's outputs, from which the sink, the writers of session_files,
# remove_outputs, --reports-only, the group reader and the reports take every name.
PREPROCESSING, CHECKS, QC, PSCORE, RELEVANCE, NORMATIVE, FIGURES = "preprocessing", "checks", "qc", "pscore", "relevance", "normative", "figures"
SESSION_OUTPUTS = {
    # the preprocessing workflow's sink
    "t1w_grid": Output(PREPROCESSING, "T1w", ".nii.gz", "preprocessed T1w on the template grid", desc="preproc", space="grid"),
    "mask_grid": Output(PREPROCESSING, "mask", ".nii.gz", "brain mask on the template grid", desc="brain", space="grid"),
    "mask_native": Output(PREPROCESSING, "mask", ".nii.gz", "brain mask in the T1w's own space", desc="brain", space="native"),
    "xfm_affine": Output(PREPROCESSING, "xfm", ".mat", "affine transform, T1w to template", desc="affine", space="xfm"),
    "xfm_warp": Output(PREPROCESSING, "xfm", ".nii.gz", "non-linear warp, T1w to template", desc="warp", space="xfm"),
    # the report's preprocessing checks, drawn by the workflow (fMRIPrep's reportlets)
    "figure_brainmask": Output(CHECKS, "T1w", ".png", "brain mask check", desc="brainmask", figure=True),
    "figure_registration": Output(CHECKS, "T1w", ".png", "registration check", desc="registration", figure=True),
    # the quality gate's record (bids_pscore.qc)
    "qc": Output(QC, "qc", ".json", "image quality gate record (JSON)"),
    # the P-scores (SPEC section 8)
    "cube_table": Output(PSCORE, "pscore", ".tsv", "cube P-scores (TSV)", desc="cubes", space="grid"),
    "voxel_map": Output(PSCORE, "pscore", ".nii.gz", "voxel-level P-score map", desc="voxel", space="grid"),
    "region_table": Output(PSCORE, "pscore", ".tsv", "region P-scores (TSV)", desc="regions", atlas=True),
    # not desc-regions: the region table's sidecar (a subset of its entities) would describe it
    "region_map": Output(PSCORE, "pscore", ".nii.gz", "region-level P-score map", desc="regionmap", space="grid", atlas=True),
    "summary": Output(PSCORE, "pscore", ".json", "P-score summary (JSON)", desc="summary"),
    # the relevance-weighted P-scores (docs/relevance.md)
    "relevance_voxel_map": Output(RELEVANCE, "pscore", ".nii.gz", "relevance-weighted voxel-level P-score map", desc="relevancevoxel", space="grid"),
    "relevance_region_table": Output(RELEVANCE, "pscore", ".tsv", "relevance-weighted region P-scores (TSV)", desc="relevanceregions", atlas=True),
    "relevance_region_map": Output(RELEVANCE, "pscore", ".nii.gz", "relevance-weighted region-level P-score map", desc="relevanceregionmap",
                                   space="grid", atlas=True),
    "relevance_summary": Output(RELEVANCE, "pscore", ".json", "relevance-weighted P-score summary (JSON)", desc="relevancesummary"),
    # the comparison with the normative reference (SPEC 10)
    "normative_voxel_map": Output(NORMATIVE, "normative", ".nii.gz", "deviation from healthy people, voxel z map", desc="zmap", space="grid"),
    "normative_region_table": Output(NORMATIVE, "normative", ".tsv", "regions against healthy people (TSV)", desc="regions", atlas=True),
    # the subject report's figures of the scores
    "voxel_figure": Output(FIGURES, "pscore", ".png", "voxel-level P-score figure", desc="voxel", figure=True),
    "region_figure": Output(FIGURES, "pscore", ".png", "region-level P-score figure", desc="regions", figure=True),
    "bars_figure": Output(FIGURES, "bars", ".png", "ranked region P-scores figure", desc="regions", figure=True),
    "normative_figure": Output(FIGURES, "normative", ".png", "deviation from healthy people figure", desc="zmap", figure=True),
    "relevance_voxel_figure": Output(FIGURES, "pscore", ".png", "relevance-weighted voxel-level P-score figure", desc="relevancevoxel", figure=True),
    "relevance_region_figure": Output(FIGURES, "pscore", ".png", "relevance-weighted region-level P-score figure", desc="relevanceregions",
                                      figure=True),
    "relevance_bars_figure": Output(FIGURES, "bars", ".png", "ranked relevance-weighted region P-scores figure", desc="relevanceregions",
                                    figure=True),
}  # fmt: skip
# what the preprocessing leaves (the sink, the quality gate) and what the scoring and the report add
PREPROCESSING_STEPS = (PREPROCESSING, CHECKS, QC)
SCORING_STEPS = (PSCORE, RELEVANCE, NORMATIVE, FIGURES)
ATLAS = "Brainnetome"


def derivative_path(entities, suffix, extension, figure=False, **derived):
    """Relative path of an output named after its source entities plus this app's own: in
    sub-<label>/[ses-<label>/]anat/, or with ``figure`` in sub-<label>/figures/."""
    named = {k: entities[k] for k in SOURCE_ENTITIES if k in entities} | {k: v for k, v in derived.items() if v is not None}
    # BIDS order across both: chunk, a source entity, comes after space
    parts = [f"{k}-{named[k]}" for k in OUTPUT_ENTITY_ORDER if k in named]
    folder = Path(f"sub-{entities['sub']}")
    if figure:
        folder /= "figures"
    else:
        folder = (folder / f"ses-{entities['ses']}" if "ses" in entities else folder) / "anat"
    return folder / ("_".join(parts + [suffix]) + extension)


def output_path(entities, key, template=None, atlas=ATLAS):
    """Relative path of one file of a T1w's outputs (``key`` of SESSION_OUTPUTS); ``template`` names
    the files on its grid and the transforms to it, and only those."""
    output = SESSION_OUTPUTS[key]
    if output.space in ("grid", "xfm") and template is None:
        raise ValueError(f"the name of {key} holds the template: give it")
    derived = {
        None: {},
        "grid": dict(space=template, res=GRID_RES_LABEL),
        "native": dict(space=NATIVE_SPACE),
        "xfm": {"from": "T1w", "to": template, "mode": "image"},
    }[output.space]
    return derivative_path(entities, output.suffix, output.extension, output.figure, atlas=atlas if output.atlas else None, desc=output.desc,
                           **derived)  # fmt: skip


def session_outputs(entities, template, *steps, atlas=ATLAS):
    """{key: relative path} of every file of one T1w's outputs (SESSION_OUTPUTS), or of those that
    ``steps`` write. Its inverse is ``source_entities``: the T1w's entities from any of these paths."""
    return {key: output_path(entities, key, template, atlas) for key, output in SESSION_OUTPUTS.items() if not steps or output.step in steps}


def with_sidecars(outputs):
    """The files of ``session_outputs``' answer: each path, then its JSON sidecar where it has one."""
    files = []
    for key, relpath in outputs.items():
        files += [relpath, sidecar_path(relpath)] if SESSION_OUTPUTS[key].sidecar else [relpath]
    return files


def t1w_name(entities):
    """The scored T1w's name without its suffix, e.g. 'sub-01_ses-1_run-2': the start of each of its outputs' names."""
    return "_".join(f"{k}-{entities[k]}" for k in SOURCE_ENTITIES if k in entities)


def subject_report_path(subject):
    """Relative path of a subject's report (its figures: SESSION_OUTPUTS' in sub-<label>/figures/)."""
    return Path(f"sub-{subject}.html")


# the model's figure, the same in every subject's report
MODEL_FIGURE = Path("figures") / "model_desc-cubeweights.png"


def atlas_paths(template, atlas=ATLAS):
    """Root-level atlas files (BIDS 1.11): the label image on the grid, its look-up table, the
    sidecar of both, and the atlas description."""
    stem = f"space-{template}_atlas-{atlas}_res-{GRID_RES_LABEL}_dseg"
    return {
        "image": Path(f"{stem}.nii.gz"),
        "table": Path(f"{stem}.tsv"),
        "sidecar": Path(f"{stem}.json"),
        "description": Path(f"atlas-{atlas}_description.json"),
    }


def summary_files(output_dir):
    """Every participant-level summary in an output folder (one per scored T1w), named exactly as
    session_outputs names it (a file that only ends like one, e.g. with an entity it has not, is not one)."""
    root = Path(output_dir)
    summary = SESSION_OUTPUTS["summary"]
    found = root.glob(f"sub-*/**/anat/*_desc-{summary.desc}_{summary.suffix}{summary.extension}")
    return sorted(path for path in found for entities in [source_entities(path)]
                  if "sub" in entities and output_path(entities, "summary") == path.relative_to(root))  # fmt: skip


# the group level's outputs, under <output_dir>/group/ (a subset's beside it: group.group_folder; both in .bidsignore)
GROUP_DIR = "group"
# the methods paragraph and its references (bids_pscore.citation writes them)
CITATION_MD = "logs/CITATION.md"
CITATION_BIB = "logs/CITATION.bib"
GROUP_FILES = {
    "sessions": "sessions.tsv", "regions": "regions.tsv", "frequency": "degeneration_frequency.tsv",
    "sets": "codegeneration_sets.tsv", "trajectories": "trajectories.tsv", "onset": "onset_order.tsv",
    "comparison": "group_comparison.tsv", "report": "report.html", "figures": "figures",
}  # fmt: skip


def sidecar_path(path):
    """The JSON sidecar that belongs to a data file."""
    name = Path(path).name
    stem = name.split(".", 1)[0]
    return Path(path).with_name(stem + ".json")


def raw_uri(relpath):
    """BIDS URI of a file of the input dataset (linked as 'raw' in dataset_description)."""
    return f"bids:raw:{relpath}"


def own_uri(relpath):
    """BIDS URI of a file of this derivatives dataset."""
    return f"bids::{Path(relpath).as_posix()}"
