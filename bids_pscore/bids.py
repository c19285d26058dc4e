"""Everything BIDS: finding the T1w inputs and naming the outputs (their content: ``derivatives``).

This is the one place that knows BIDS naming; the rest of the package asks it for paths.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .errors import NoT1wError, NotBIDSError, NothingSelectedError, UsageError

log = logging.getLogger(__name__)

# 1.11 brought back the atlas- entity with atlas-<label>_description.json
BIDS_VERSION = "1.11.1"
LABEL = re.compile(r"^[A-Za-z0-9]+$")


def _schema_entities():
    """From the BIDS schema that bidsschematools ships: the short names of the entities allowed on
    a raw anat T1w, and of every entity, each in BIDS order."""
    from bidsschematools.schema import load_schema

    schema = load_schema()
    short = {name: schema.objects.entities[name].name for name in schema.rules.entities}
    t1w_rule = next(rule for rule in schema.rules.files.raw.anat.values() if "T1w" in rule.suffixes)
    return tuple(short[name] for name in schema.rules.entities if name in t1w_rule.entities), tuple(short.values())


# entities of the source T1w carried into every output name and node name: all that BIDS allows on
# a T1w (sub ses task acq ce rec run echo part chunk), so that two T1w told apart by any of them
# never share outputs
SOURCE_ENTITIES, BIDS_ENTITY_ORDER = _schema_entities()
# the entities this app adds
DERIVED_ENTITIES = ("from", "to", "mode", "space", "atlas", "res", "desc")
# the order of entities in output names: BIDS order, with fMRIPrep's transform entities from, to
# and mode (not in the schema) before space, where fMRIPrep puts them
_SPACE = BIDS_ENTITY_ORDER.index("space")
OUTPUT_ENTITY_ORDER = BIDS_ENTITY_ORDER[:_SPACE] + ("from", "to", "mode") + BIDS_ENTITY_ORDER[_SPACE:]
GRID_RES_LABEL = "1p5"
VALIDATOR_TIMEOUT_S = 600
# BIDS validator 3 ignores patterns that end with a slash: folders are named bare
BIDSIGNORE = ("logs", "*_xfm.*", "*_pscore.*", "*_normative.*", "*_qc.json", "*.html", "figures", "group", "group_*")
# the space of outputs on the raw T1w's own voxel grid; named so that their sidecars are not
# inherited by the same outputs on the template grid (which carry space-<template>)
NATIVE_SPACE = "T1w"


def clean_label(label, prefix):
    """'sub-01' or '01' -> '01'; anything outside BIDS label characters is a usage error."""
    text = str(label)
    if text.startswith(f"{prefix}-"):
        text = text[len(prefix) + 1 :]
    if not LABEL.match(text):
        raise UsageError(f"invalid {prefix} label {label!r}: BIDS labels contain only letters and digits (give e.g. '{prefix}-01' or '01')")
    return text


def source_entities(path):
    """The entities of a BIDS file name that outputs keep, e.g. {'sub': '01', 'run': '2'}: of a raw
    T1w, or of the T1w behind any of its outputs (the inverse of ``session_outputs``)."""
    pairs = dict(part.split("-", 1) for part in Path(path).name.split("_") if "-" in part)
    return {key: pairs[key] for key in SOURCE_ENTITIES if key in pairs}


@dataclass(frozen=True)
class T1wInput:
    """One T1w image to process: its path and where it sits in the dataset."""

    path: Path
    relpath: str
    entities: dict = field(hash=False)

    @property
    def label(self):
        """Short human name, e.g. 'sub-01 ses-1 run-2'."""
        return " ".join(f"{k}-{v}" for k, v in self.entities.items())

    @property
    def ident(self):
        """A name safe for nipype node names, unique within a dataset."""
        return "_".join(f"{k}_{v}" for k, v in self.entities.items())


def _stored_index(bids_dir, validate, database_dir):
    """The folder of pybids' stored index in ``database_dir``, built first if missing.

    pybids does not record whether names were validated, so each setting has its own. The
    index is built in a temporary folder and renamed into place, so that jobs that start
    together never read a half-written one: the first rename wins, the others are dropped.
    """
    from bids import BIDSLayout
    from bids.layout.db import ConnectionManager

    folder = Path(database_dir) / ("validated" if validate else "unvalidated")
    if ConnectionManager.exists(str(folder)):
        return folder
    try:
        Path(database_dir).mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=database_dir, prefix=".building-"))
    except OSError as exc:
        raise UsageError(f"{database_dir}: cannot hold the BIDS index ({exc.strerror}); give --bids-database-dir a writable folder") from None
    try:
        BIDSLayout(str(bids_dir), validate=validate, database_path=str(building))
        building.rename(folder)
    except OSError:
        pass  # another job stored its index first
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return folder


def dataset_description(folder):
    """The folder's dataset_description.json as a dict; empty when it is missing or not a JSON object."""
    try:
        description = json.loads((Path(folder) / "dataset_description.json").read_text())
    except (OSError, ValueError):
        return {}
    return description if isinstance(description, dict) else {}


def load_layout(bids_dir, validate=True, database_dir=None):
    """Index a BIDS dataset read-only; raise NotBIDSError if it is not one.

    With ``database_dir``, pybids keeps its index there and a later call reads it back instead
    of walking the dataset again (one-subject jobs on a cluster share one index).
    """
    from bids import BIDSLayout
    from bids.exceptions import BIDSValidationError

    bids_dir = Path(bids_dir)
    if not bids_dir.is_dir():
        raise NotBIDSError(f"{bids_dir}: is not a folder; give the root of a BIDS dataset")
    if not (bids_dir / "dataset_description.json").is_file():
        raise NotBIDSError(
            f"{bids_dir}: has no dataset_description.json, so it is not a BIDS dataset; "
            "give the dataset's root folder (or add the file, see the BIDS specification)"
        )
    dataset_type = dataset_description(bids_dir).get("DatasetType", "raw")
    if dataset_type != "raw":
        # a derivative's T1w (fMRIPrep's desc-preproc, space-...) were processed already: preprocessed again
        # and scored as raw, they would give wrong P-scores
        raise NotBIDSError(f"{bids_dir / 'dataset_description.json'}: says DatasetType {dataset_type!r}, so its T1w are not raw images; "
                           "give the raw BIDS dataset (DatasetType 'raw', e.g. the one a derivative's DatasetLinks name)")  # fmt: skip
    try:
        if database_dir is None:
            layout = BIDSLayout(str(bids_dir), validate=validate)
        else:
            layout = BIDSLayout(str(bids_dir), validate=validate, database_path=str(_stored_index(bids_dir, validate, database_dir)))
    except (BIDSValidationError, ValueError, json.JSONDecodeError) as exc:
        raise NotBIDSError(f"{bids_dir}: is not a valid BIDS dataset ({exc}); fix it or pass --skip-bids-validation") from None
    # a stored index names its own dataset, and pybids would silently use that one
    if Path(layout.root).resolve() != bids_dir.resolve():
        raise UsageError(f"{database_dir}: holds the index of {layout.root}, not of {bids_dir}; give --bids-database-dir another folder")
    return layout


def validator_command():
    """The BIDS validator (bids-validator-deno, a dependency of the container), or None.

    Looked for beside this Python first: a virtual environment's scripts are often not on PATH.
    """
    beside = Path(sys.executable).parent / "bids-validator-deno"
    if beside.is_file():
        return str(beside)
    return shutil.which("bids-validator-deno")


def run_validator(bids_dir, subjects, command):
    """Issues of the BIDS validator on the top-level files and the given subjects only.

    The validator takes a folder, so it is shown a temporary one that links the dataset's
    top-level entries and the selected ``sub-*`` folders. Returns a list of dicts with
    severity, code, location and message.
    """
    root = Path(bids_dir).resolve()
    with tempfile.TemporaryDirectory(prefix="bids_pscore_validate_") as view:
        for entry in root.iterdir():
            if not entry.name.startswith("sub-") or entry.name.removeprefix("sub-") in subjects:
                Path(view, entry.name).symlink_to(entry)
        try:
            result = subprocess.run([command, view, "--format", "json"], capture_output=True, text=True, timeout=VALIDATOR_TIMEOUT_S)
            issues = json.loads(result.stdout)["issues"]["issues"]
        except (OSError, subprocess.TimeoutExpired, ValueError, KeyError) as exc:
            raise NotBIDSError(f"{root}: the BIDS validator ({command}) did not run to the end ({type(exc).__name__}: {exc}); "
                               "pass --skip-bids-validation to go on without it") from None  # fmt: skip
    return [{"severity": i.get("severity"), "code": i.get("code"), "location": i.get("location") or "",
             "message": " ".join(": ".join(str(i[k]) for k in ("subCode", "issueMessage") if i.get(k)).split())}
            for i in issues]  # fmt: skip


def validation_errors(bids_dir, issues, shown=5):
    """NotBIDSError naming the validator's first errors, or None when there is none."""
    errors = [i for i in issues if i["severity"] == "error"]
    if not errors:
        return None
    listed = "; ".join(f"{i['code']} {i['location']}" + (f" ({i['message']})" if i["message"] else "") for i in errors[:shown])
    more = f" and {len(errors) - shown} more" if len(errors) > shown else ""
    return NotBIDSError(
        f"{bids_dir}: the BIDS validator found {len(errors)} error(s): {listed}{more}; fix them "
        f"(bids-validator-deno {bids_dir} tells more) or pass --skip-bids-validation"
    )


# what the scan for unused T1w looks for: any NIfTI with T1w in its name, in any case
T1W_LIKE = re.compile(r"t1w.*\.nii(\.gz)?$", re.IGNORECASE)


def invalid_label(relpath):
    """The first entity label of a path that is not letters and digits only (BIDS), or None.

    pybids indexes 'ses-a b' as session 'a b', which no later step can carry."""
    for chunk in re.split(r"[/_]", str(relpath).split(".", 1)[0]):
        key, sep, value = chunk.partition("-")
        if sep and not re.fullmatch(r"[A-Za-z0-9]+", value):
            return f"{key}-{value}"
    return None


def why_not_raw(relpath):
    """Why a T1w of the dataset is not a raw T1w, or None when it is one.

    A template's image (tpl-<label>/, BIDS 1.11 atlas datasets) or a derivative's (desc-, space-,
    res-: fMRIPrep's outputs) has entities that BIDS does not allow on a raw T1w; pybids indexes
    them all when it does not validate names."""
    parts = Path(relpath).parts
    if parts[0].startswith("tpl-") or parts[-1].startswith("tpl-"):
        return "it is a template's image (tpl-<label>), not a participant's: it is not an input"
    if not parts[0].startswith("sub-") or len(parts) == 1:
        return "it is outside any sub-<label> folder; move it to sub-<label>/[ses-<label>/]anat/"
    keys = [part.split("-", 1)[0] for part in parts[-1].split("_") if "-" in part]
    derived = [f"{key}-" for key in keys if key not in SOURCE_ENTITIES]
    if derived:
        return (f"its {' '.join(derived)} are not allowed on a raw T1w (a derivative's entities), so it is a processed image, "
                "not an input; give the raw T1w it was made from")  # fmt: skip
    return None


def why_not_indexed(relpath):
    """Why a T1w-like file is not taken as a raw T1w: the first broken BIDS naming rule."""
    parts = Path(relpath).parts
    name = parts[-1]
    bad = invalid_label(relpath)
    if bad:
        return f"its label {bad!r} holds characters other than letters and digits; rename the folder and the file"
    not_raw = why_not_raw(relpath)
    if not_raw:
        return not_raw
    if parts[-2] != "anat":
        return f"it is in {'/'.join(parts[:-1])}/, not in an anat/ folder; move it into sub-<label>/[ses-<label>/]anat/"
    entities = source_entities(name)
    folder_ses = parts[1].removeprefix("ses-") if parts[1].startswith("ses-") else None
    if entities.get("sub") != parts[0].removeprefix("sub-") or entities.get("ses") != folder_ses:
        return "the sub-/ses- of its name do not match its folders; rename it after them"
    if not re.search(r"_T1w\.nii(\.gz)?$", name):
        return "its suffix is not _T1w (case matters, nothing after it but .nii[.gz]); rename it"
    return "its name is not valid BIDS (entity order, or characters other than letters and digits in a label); rename it"


def unused_t1w(bids_dir, selected, indexed):
    """T1w-like files at the dataset's root and under its sub-* and tpl-* folders that will not be
    processed, with why.

    ``selected`` and ``indexed`` are relative paths: the T1w to process and every T1w pybids
    found. Returns [(relative path, reason)] sorted by path.
    """
    root = Path(bids_dir)
    candidates = [p for p in root.glob("*") if p.is_file() or p.is_symlink()]
    candidates += [p for d in (*root.glob("sub-*"), *root.glob("tpl-*")) for p in d.rglob("*")]
    unused = []
    for path in candidates:
        relpath = path.relative_to(root).as_posix()
        if not T1W_LIKE.search(path.name) or relpath in selected:
            continue
        if relpath in indexed:
            reason = "not selected by --participant-label, --session-label or --bids-filter-file"
        else:
            reason = why_not_indexed(relpath)
        unused.append((relpath, reason))
    return sorted(unused)


FIXED_BY_THE_APP = {"suffix", "datatype", "extension", "subject", "session", "return_type", "scope"}


def load_filter_file(path):
    """Read a --bids-filter-file: {"t1w": {entity: value, ...}} as in fMRIPrep."""
    if path is None:
        return {}
    try:
        filters = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f'{path}: cannot read the BIDS filter file ({exc}); it must be JSON like {{"t1w": {{"acquisition": "mprage"}}}}') from None
    if not isinstance(filters, dict) or set(filters) - {"t1w"} or not isinstance(filters.get("t1w", {}), dict):
        raise UsageError(f'{path}: a BIDS filter file holds one key, "t1w", mapping entities to values')
    fixed = sorted(set(filters.get("t1w", {})) & FIXED_BY_THE_APP)
    if fixed:
        # the app reads T1w images only, and subjects and sessions are chosen by their own options
        raise UsageError(f"{path}: the filter file cannot set {', '.join(fixed)}: the app reads *_T1w.nii[.gz] in anat/, and "
                         "--participant-label and --session-label choose subjects and sessions; remove these keys")  # fmt: skip
    return filters.get("t1w", {})


T1W_QUERY = dict(suffix="T1w", datatype="anat", extension=[".nii", ".nii.gz"], return_type="filename")


def is_raw_t1w(relpath):
    """Whether a T1w that pybids found is a raw T1w that the app can take (see why_not_indexed)."""
    return not invalid_label(relpath) and not why_not_raw(relpath)


def indexed_t1w(layout):
    """Relative paths of every raw T1w pybids found in the dataset."""
    found = (Path(p).relative_to(layout.root).as_posix() for p in layout.get(**T1W_QUERY))
    return {relpath for relpath in found if is_raw_t1w(relpath)}


def find_t1w(layout, participant_labels=None, session_labels=None, filters=None):
    """Every T1w of the selected subjects and sessions, sorted by path."""
    query = dict(T1W_QUERY)
    root = Path(layout.root)
    all_t1w = layout.get(**query)
    if not all_t1w:
        raise NoT1wError(f"{layout.root}: contains no T1w image (sub-*/[ses-*/]anat/*_T1w.nii[.gz]); check the dataset or point to another one")
    if not any(is_raw_t1w(Path(p).relative_to(root).as_posix()) for p in all_t1w):
        first = min(Path(p).relative_to(root).as_posix() for p in all_t1w)
        raise NoT1wError(f"{layout.root}: contains no raw T1w that can be taken ({len(all_t1w)} T1w, e.g. {first}: {why_not_indexed(first)}); "
                         "give the raw BIDS dataset")  # fmt: skip
    for entity, prefix, wanted, present in (
        ("subject", "sub", participant_labels, layout.get_subjects()),
        ("session", "ses", session_labels, layout.get_sessions()),
    ):
        if not wanted:
            continue
        missing = sorted(set(wanted) - set(present))
        if missing:
            raise NothingSelectedError(
                f"{layout.root}: no {entity} {', '.join(f'{prefix}-{m}' for m in missing)}; "
                f"available: {', '.join(f'{prefix}-{s}' for s in sorted(present)) or 'none'}"
            )
        query[entity] = list(wanted)
    query.update(filters or {})
    try:
        selected = layout.get(**query)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"the BIDS filters cannot be applied: {exc}") from None
    if not selected:
        raise NothingSelectedError(
            f"{layout.root}: the participant/session labels and filters select no T1w ({len(all_t1w)} T1w in the dataset); loosen the selection"
        )
    usable = [p for p in sorted(selected) if is_raw_t1w(Path(p).relative_to(root).as_posix())]
    if not usable:  # check_inputs names each file left out and why
        first = min(Path(p).relative_to(root).as_posix() for p in selected)
        raise NothingSelectedError(f"{layout.root}: no selected T1w can be taken (e.g. {first}: {why_not_indexed(first)})")
    return [T1wInput(path=Path(p), relpath=Path(p).relative_to(root).as_posix(), entities=source_entities(p)) for p in usable]


def natural_key(label):
    """Sort key in which 'ses-10' comes after 'ses-2': digits compare as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(label))]


def unreadable_reason(t1w):
    """Why the T1w's file cannot be read, with the fix, or None when it can.

    A dataset installed with DataLad holds git-annex links whose content is fetched on demand:
    pybids indexes them, but until `datalad get` they point nowhere.
    """
    path = t1w.path
    if path.is_symlink() and not path.exists():
        return (f"{t1w.relpath} is a link to content that is not here (a DataLad/git-annex file not yet retrieved?): "
                f"run 'datalad get {t1w.relpath}' in the dataset, or fetch the file")  # fmt: skip
    if not os.access(path, os.R_OK):
        return f"{t1w.relpath} cannot be read by this user: fix its permissions (chmod a+r)"
    return None


def read_label_table(path):
    """participants.tsv or a sessions.tsv that labels training images: read strictly, since a row
    longer than the header would shift its values under the wrong columns (pandas takes the first as
    an index) and a file that is no table would end training in a traceback."""
    import warnings

    import pandas as pd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.ParserWarning, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot be read as a TSV table ({str(exc).splitlines()[0]}); write it as BIDS describes: UTF-8 text, "
                         "a header row, one tab-separated value per column in every row") from None  # fmt: skip


def read_labels(bids_dir, column, positive, negative):
    """Labels 1 (``positive``) or 0 (``negative``) from participants.tsv, else from sessions.tsv.

    Returns ({(subject, session or None): label}, a count of the other values, which are left
    out, and the file the labels came from).
    """
    root = Path(bids_dir)
    participants = root / "participants.tsv"
    tables = []
    if participants.is_file():
        table = read_label_table(participants)
        if column in table and "participant_id" in table:
            tables = [(table["participant_id"], None, table[column])]
            source = "participants.tsv"
    if not tables:
        for path in sorted(root.glob("sub-*/sub-*_sessions.tsv")):
            table = read_label_table(path)
            if column in table and "session_id" in table:
                tables.append(([path.name.split("_")[0]] * len(table), table["session_id"], table[column]))
        source = "sessions.tsv"
    if not tables:
        raise UsageError(
            f"{participants}: no column {column!r} there nor in any sub-*/sub-*_sessions.tsv; give --label-column a column that holds the labels"
        )
    labels, left_out = {}, Counter()
    for participants_col, sessions_col, values in tables:
        sessions = sessions_col if sessions_col is not None else [None] * len(values)
        for participant, session, value in zip(participants_col, sessions, values.str.strip()):
            key = (participant.removeprefix("sub-"), session.removeprefix("ses-") if session else None)
            if value in (positive, negative):
                labels[key] = int(value == positive)
            else:
                left_out[value or "n/a"] += 1
    return labels, dict(left_out), source


def ages_and_sexes(bids_dir, t1w_inputs):
    """Age in years (NaN when unknown) and sex (as written, 'n/a' when unknown) of each T1w.

    The age is the session's (``age`` of sub-*/sub-*_sessions.tsv), else the subject's
    (participants.tsv); the sex is the subject's (``sex``, else ``gender``). A file that cannot be
    read gives nothing.
    """
    import pandas as pd

    def read(path):
        try:
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False) if path.is_file() else pd.DataFrame()
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            log.warning("%s: cannot be read as a TSV table; its ages and sexes are not used", path)
            return pd.DataFrame()

    def number(text):
        try:
            return float(text)
        except (TypeError, ValueError):
            return float("nan")

    root = Path(bids_dir)
    participants = read(root / "participants.tsv")
    # BIDS names the column "sex"; datasets that call it "gender" (e.g. OpenNeuro's ds002748) are read, and told so
    sex_column = "sex" if "sex" in participants or "gender" not in participants else "gender"
    if sex_column == "gender":
        log.warning("%s: no 'sex' column, so the sex is read from its 'gender' column (BIDS calls it 'sex')", root / "participants.tsv")
    by_subject = {}
    if "participant_id" in participants:
        for _, row in participants.iterrows():
            by_subject[row["participant_id"].removeprefix("sub-")] = (number(row.get("age")), row.get(sex_column) or "n/a")
    ages, sexes, session_ages = [], [], {}
    for t in t1w_inputs:
        sub, ses = t.entities["sub"], t.entities.get("ses")
        if ses is not None and sub not in session_ages:
            table = read(root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv")
            session_ages[sub] = dict(zip(table["session_id"], map(number, table["age"]))) if {"session_id", "age"} <= set(table) else {}
        age, sex = by_subject.get(sub, (float("nan"), "n/a"))
        at_session = session_ages.get(sub, {}).get(f"ses-{ses}", float("nan")) if ses is not None else float("nan")
        ages.append(at_session if at_session == at_session else age)  # NaN != NaN: the subject's age then
        sexes.append(sex)
    return ages, sexes


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
        """Whether the file has a JSON sidecar (bids.sidecar_path): every data file that is not JSON itself."""
        return not self.figure and self.extension != ".json"


# Every file the participant level writes for one T1w, in the order Sources and the report's links list
# them: the one description of a session's outputs, from which the sink, the writers of derivatives.py,
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


def utc_timestamp(when):
    """An acq_time as a time-zone-free timestamp in UTC, so that times with and without a zone compare.

    BIDS allows both ``...T10:00:00Z`` and ``...T10:00:00`` (the scanner's local time, zone unknown).
    A time without a zone is taken as UTC: the error is at most a day, under 0.003 years, and
    trajectories are over years.
    """
    import pandas as pd

    stamp = pd.Timestamp(when)
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp


def acquisition_times(bids_dir):
    """When each session was acquired: {(sub, ses or None): (timestamp, source file name)}.

    ``acq_time`` of sub-*/sub-*_sessions.tsv first, else of the T1w's row in a scans.tsv; BIDS
    allows both. Sessions with neither are absent.
    """
    import pandas as pd

    def read(path):
        try:
            return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            log.warning("%s: cannot be read as a TSV table (%s); its acq_time is ignored", path, str(exc).splitlines()[0])
            return pd.DataFrame()

    root, times = Path(bids_dir), {}
    for path in sorted(root.glob("sub-*/sub-*_scans.tsv")) + sorted(root.glob("sub-*/ses-*/sub-*_scans.tsv")):
        table = read(path)
        if {"filename", "acq_time"} <= set(table.columns):
            for name, when in zip(table["filename"], table["acq_time"]):
                entities = source_entities(name)
                if name.endswith(("_T1w.nii.gz", "_T1w.nii")) and when not in ("", "n/a"):
                    times.setdefault((entities.get("sub", path.name.split("_")[0][4:]), entities.get("ses")), (when, path))
    for path in sorted(root.glob("sub-*/sub-*_sessions.tsv")):
        table = read(path)
        if {"session_id", "acq_time"} <= set(table.columns):
            for session, when in zip(table["session_id"], table["acq_time"]):
                if when not in ("", "n/a"):
                    times[(path.name.split("_")[0][4:], session.removeprefix("ses-"))] = (when, path)
    parsed = {}
    for key, (when, path) in times.items():
        try:
            parsed[key] = (utc_timestamp(when), "sessions.tsv" if path.name.endswith("_sessions.tsv") else "scans.tsv")
        except ValueError:
            log.warning("%s: acq_time %r is not a date and time (BIDS: YYYY-MM-DDThh:mm:ss); that session is ordered by its label", path, when)
    return parsed


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
