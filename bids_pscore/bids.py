"""The input side of BIDS: finding the T1w inputs with pybids, their entities, labels and filters, and
why a file is not taken. The outputs are named by ``derivatives.layout``; what the dataset's tables
say (labels, ages, acquisition times) is read by ``tabular``.
"""

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
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
VALIDATOR_TIMEOUT_S = 600


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
