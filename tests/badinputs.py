"""Bad inputs for the tests: meaningless "T1w" images made from a real head, for the image quality
gate (each keeps the head's header, voxel size and orientation, so that only its content is wrong),
files damaged as a full disk or a killed copy leaves them, and BAD_INPUTS: the bad inputs of the
command lines, each with the exit code and the one-line message it must end with."""

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .helpers import make_bids, small_image


def _like(img, data, dtype=np.float32):
    out = nib.Nifti1Image(np.asarray(data, dtype), img.affine)
    out.set_qform(img.affine, 1)
    out.set_sform(img.affine, 1)
    return out


def head_region(data):
    """The head: everything above a tenth of the range, holes filled."""
    return ndimage.binary_fill_holes(ndimage.binary_closing(data > 0.1 * data.max(), iterations=2))


def meaningless_images(img, seed=0):
    """name -> image, each a way a T1w can be no T1w at all (or no longer a whole head)."""
    rng = np.random.default_rng(seed)
    data = np.asarray(img.dataobj, np.float32)
    head = head_region(data)
    block = np.zeros(data.shape, np.float32)
    block[tuple(slice(s // 2, s // 2 + k) for s, k in zip(data.shape, (3, 2, 2)))] = 100.0  # 12 voxels
    half = data.copy()
    half[data.shape[0] // 2 :] = 0  # one hemisphere (and half the skull) cut off
    # T2-like: dark white matter, bright fluid; the head's grey levels inverted inside the head
    t2_like = np.where(head, data.max() - data, 0)
    return {
        "noise": _like(img, rng.normal(100, 30, data.shape).clip(0)),
        "t2like": _like(img, t2_like),
        "binarymask": _like(img, head * 1.0, np.uint8),
        "halfhead": _like(img, half),
        "block": _like(img, block),
        "rotated": _like(img, data[::-1, :, ::-1]),  # 180 degrees about the anterior axis, header unchanged
    }


def cut_short(path, keep_bytes=400):
    """Cut the file at ``path`` to its first bytes, as a full disk or a killed copy leaves it (a .nii.gz
    then ends before its end-of-stream marker)."""
    path.write_bytes(path.read_bytes()[:keep_bytes])


# The bad-input corpus of the command lines: each case makes its bad input under a test's folder and
# says what the command must answer (tests/test_badinputs.py runs them all). "{tmp}" in a message
# stands for that folder.


@dataclass(frozen=True)
class BadInput:
    id: str
    make: Callable  # make(tmp): builds the bad input under tmp and returns the command line, program first
    exit_code: int
    says: str  # a fragment of the one-line message, naming the file (or the option) at fault
    starts: bool = False  # the run starts and a session fails: its line is in the summary on stdout, not on stderr


def bold_image():
    img = nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), np.eye(4))
    img.header.set_zooms((1.0, 1.0, 1.0, 2.0))
    img.header.set_xyzt_units("mm", "sec")
    return img


def raw_dataset(tmp, files=()):
    """Valid raw BIDS (three T1w of two subjects and a BOLD run that the BIDS validator passes), plus ``files``."""
    return make_bids(tmp / "bids", {
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz": small_image(),
        "sub-01/ses-2/anat/sub-01_ses-2_acq-fast_run-2_T1w.nii.gz": small_image(),
        "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz": small_image(),
        # a valid BOLD run (4-D, TR in the header and the sidecar), so that the BIDS validator passes
        "sub-02/ses-1/func/sub-02_ses-1_task-rest_bold.nii.gz": bold_image(),
        "sub-02/ses-1/func/sub-02_ses-1_task-rest_bold.json": json.dumps({"TaskName": "rest", "RepetitionTime": 2.0}),
        **dict(files),
    })  # fmt: skip


def participant(tmp, *options, root=None):
    """bids_pscore on ``root`` (the raw dataset when None) with outputs in tmp/out and work in tmp/work."""
    return ["bids_pscore", root or raw_dataset(tmp), tmp / "out", "participant", "-w", tmp / "work", *options]


def with_filter(text):
    def make(tmp):
        (tmp / "filters.json").write_text(text)
        return participant(tmp, "--bids-filter-file", tmp / "filters.json")

    return make


def fmriprep_outputs(dataset_type):
    """fMRIPrep's outputs, two preprocessed T1w of one subject: once a 'Duplicate node name' traceback."""

    def make(tmp, *options):
        root = make_bids(tmp / "fmriprep", {
            "sub-01/anat/sub-01_desc-preproc_T1w.nii.gz": small_image(),
            "sub-01/anat/sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz": small_image(),
            "dataset_description.json": json.dumps({"Name": "fMRIPrep outputs", "BIDSVersion": "1.10.0", "DatasetType": dataset_type,
                                                    "GeneratedBy": [{"Name": "fMRIPrep"}]}),
        })  # fmt: skip
        return participant(tmp, *options, root=root)

    return make


def demo_model(tmp, text):
    """bids_pscore with the demo model copied to tmp/model, its model.json replaced by ``text``."""
    from bids_pscore.cohort import DEMO_MODEL

    model = Path(shutil.copytree(DEMO_MODEL, tmp / "model"))
    (model / "model.json").write_text(text)
    return participant(tmp, "--model", model, "--skip-bids-validation")


def demo_model_with(change):
    """The demo model with its model.json changed and sealed again, so that the change, not the
    checksum, is what loading finds."""

    def make(tmp):
        from bids_pscore.cohort import DEMO_MODEL
        from bids_pscore.model.bundle import metadata_sha256

        meta = json.loads((DEMO_MODEL / "model.json").read_text())
        change(meta)
        return demo_model(tmp, json.dumps({**meta, "metadata_sha256": metadata_sha256(meta)}))

    return make


def one_t1w(tmp, keep_bytes):
    root = make_bids(tmp / "bids", {"sub-01/anat/sub-01_T1w.nii.gz": small_image()})
    cut_short(root / "sub-01/anat/sub-01_T1w.nii.gz", keep_bytes)
    return root


def labelled(tmp, participants_tsv):
    """bids_pscore-train on a dataset whose participants.tsv is ``participants_tsv`` (text or bytes)."""
    root = make_bids(tmp / "bids", {"participants.tsv": participants_tsv, "sub-01/anat/sub-01_T1w.nii.gz": small_image()})
    return ["bids_pscore-train", root, tmp / "model", "--label-column", "group", "--positive", "AD", "--negative", "CN", "-w", tmp / "work"]


def blocked(tmp):
    (tmp / "a_file").write_text("not a folder")
    return tmp / "a_file"


def empty_folder(path):
    path.mkdir(parents=True)
    return path


def participant_on(tmp, folder, files, *options, description=True):
    """bids_pscore on a dataset of ``files`` in tmp/``folder`` (not the raw dataset)."""
    return participant(tmp, *options, root=make_bids(tmp / folder, files, description=description))


LABELS = ["../01", "01/02", "sub-0_1", "a b", ".."]
NO_LABEL_COLUMN = "{tmp}/bids/participants.tsv: no column 'group' there nor in any sub-*/sub-*_sessions.tsv"
NOT_A_TABLE = "{tmp}/bids/participants.tsv: cannot be read as a TSV table"
RAGGED_TSV = "participant_id\tage\nsub-01\t30\textra\nsub-02\t40\n"
BAD_FILTERS = {"t1w": {"suffix": "T2w", "session": "2", "acquisition": "fast"}}
NOT_A_BUNDLE = "{tmp}/model: not a bids_pscore model bundle (no model.json); pass the folder that bids_pscore-train wrote (--model)"

BAD_INPUTS = [
    # the command line
    *(BadInput(f"participant label {label!r}", lambda tmp, label=label: participant(tmp, "--participant-label", label),
               2, f"invalid sub label {label!r}: BIDS labels contain only letters and digits") for label in LABELS),
    BadInput("unknown analysis level", lambda tmp: ["bids_pscore", raw_dataset(tmp), tmp / "out", "session"], 17, "participant, group"),
    BadInput("subject not in the dataset", lambda tmp: participant(tmp, "--participant-label", "03"),
             18, "{tmp}/bids: no subject sub-03; available: sub-01, sub-02"),
    BadInput("session not in the dataset", lambda tmp: participant(tmp, "--session-label", "9"), 18, "{tmp}/bids: no session ses-9"),
    BadInput("filter file selecting nothing", with_filter(json.dumps({"t1w": {"acquisition": "slow"}})),
             18, "{tmp}/bids: the participant/session labels and filters select no T1w"),
    BadInput("filter file not JSON", with_filter("{not json"), 2, "{tmp}/filters.json: cannot read the BIDS filter file"),
    BadInput("filter file without t1w", with_filter(json.dumps({"bold": {}})), 2, '{tmp}/filters.json: a BIDS filter file holds one key, "t1w"'),
    # a filter file must not turn a T2w into "the T1w" nor override --session-label behind its back
    BadInput("filter file setting suffix and session", lambda tmp: [*with_filter(json.dumps(BAD_FILTERS))(tmp), "--session-label", "1"],
             2, "{tmp}/filters.json: the filter file cannot set session, suffix"),
    # the folders
    BadInput("output folder under a file", lambda tmp: ["bids_pscore", raw_dataset(tmp), blocked(tmp) / "out", "participant",
                                                        "-w", tmp / "work" / "nested"], 73, "{tmp}/a_file/out: the output folder cannot be written"),
    BadInput("work folder under a file", lambda tmp: ["bids_pscore", raw_dataset(tmp), tmp / "out" / "nested", "participant",
                                                      "-w", blocked(tmp) / "work", "--skip-bids-validation"],
             73, "{tmp}/a_file/work: the work folder cannot be written"),
    BadInput("output folder inside the BIDS folder", lambda tmp: ["bids_pscore", raw_dataset(tmp), tmp / "bids" / "results", "participant"],
             2, "{tmp}/bids/results: is inside the BIDS folder, which is never written to"),
    BadInput("work folder inside the output folder", lambda tmp: ["bids_pscore", raw_dataset(tmp), tmp / "out", "participant",
                                                                  "-w", tmp / "out" / "work", "--skip-bids-validation"],
             2, "{tmp}/out/work: the work folder must not be inside the output folder"),
    BadInput("group level before the participant level", lambda tmp: ["bids_pscore", raw_dataset(tmp), tmp / "out", "group"],
             66, "{tmp}/out: holds no participant-level P-score outputs (*_desc-summary_pscore.json); run the participant level first"),
    # the dataset
    BadInput("not a BIDS folder", lambda tmp: participant_on(tmp, "plain", {}, description=False),
             16, "{tmp}/plain: has no dataset_description.json"),
    BadInput("a BIDS folder that does not exist", lambda tmp: participant(tmp, root=tmp / "missing"), 16, "{tmp}/missing: is not a folder"),
    *(BadInput(f"derivatives dataset ({kind}){' unvalidated' if skip else ''}",
               lambda tmp, kind=kind, skip=skip: fmriprep_outputs(kind)(tmp, *skip), 16,
               f"{{tmp}}/fmriprep/dataset_description.json: says DatasetType '{kind}', so its T1w are not raw images; give the raw BIDS dataset")
      for kind in ("derivative", "study") for skip in ((), ("--skip-bids-validation",))),
    BadInput("template dataset (tpl-)",
             lambda tmp: participant_on(tmp, "atlas", {"tpl-MNI/anat/tpl-MNI_T1w.nii.gz": small_image()}, "--skip-bids-validation"),
             66, "{tmp}/atlas: contains no raw T1w that can be taken (1 T1w, e.g. tpl-MNI/anat/tpl-MNI_T1w.nii.gz: it is a template's image"),
    BadInput("no T1w", lambda tmp: participant_on(tmp, "bids", {"sub-01/func/sub-01_task-rest_bold.nii.gz": small_image()}),
             66, "{tmp}/bids: contains no T1w image"),
    BadInput("T1w cut short in its header", lambda tmp: participant(tmp, root=one_t1w(tmp, 100)),
             16, "NIFTI_HEADER_UNREADABLE /sub-01/anat/sub-01_T1w.nii.gz"),
    BadInput("T1w cut short after its header",
             lambda tmp: participant(tmp, "--skip-bids-validation", "--nipype-plugin", "Linear", root=one_t1w(tmp, 400)),
             1, "{tmp}/bids/sub-01/anat/sub-01_T1w.nii.gz: cannot be read as NIfTI", starts=True),
    BadInput("participants.tsv with a row longer than its header",
             lambda tmp: participant(tmp, root=raw_dataset(tmp, {"participants.tsv": RAGGED_TSV})), 16, "TSV_EQUAL_ROWS /participants.tsv"),
    # the model
    BadInput("model folder without a model", lambda tmp: participant(tmp, "--model", empty_folder(tmp / "model"), "--skip-bids-validation"),
             65, NOT_A_BUNDLE),
    BadInput("model.json: a string for a number", demo_model_with(lambda m: m["preprocessing"].update(fwhm_mm="x")),
             65, '{tmp}/model/model.json: preprocessing.fwhm_mm must be a finite number (got "x")'),
    BadInput("model.json: a cube twice", demo_model_with(lambda m: m["selected_cubes"].append(m["selected_cubes"][0])),
             65, "{tmp}/model/model.json: selected_cubes lists"),
    BadInput("model.json: an unknown template", demo_model_with(lambda m: m["preprocessing"].update(template="MNI152NLin6Asym")),
             65, '{tmp}/model/model.json: preprocessing.template must be "MNI152NLin2009aSym"'),
    BadInput("model.json: a list", lambda tmp: demo_model(tmp, "[]"), 65, "{tmp}/model/model.json: is not a JSON object"),
    BadInput("model.json: not JSON", lambda tmp: demo_model(tmp, '{"format": "bids_pscore-model",'), 65, "{tmp}/model/model.json: is not valid JSON"),
    # the training labels
    BadInput("training labels: no such column", lambda tmp: labelled(tmp, "participant_id\tdx\nsub-01\tAD\n"), 2, NO_LABEL_COLUMN),
    BadInput("training labels: a row longer than the header", lambda tmp: labelled(tmp, "participant_id\tgroup\nsub-01\tAD\textra\n"),
             2, NOT_A_TABLE),
    BadInput("training labels: participants.tsv not text", lambda tmp: labelled(tmp, b"\xff\xfe\x00garbage\x00\n"), 2, NOT_A_TABLE),
    BadInput("training labels: participants.tsv empty", lambda tmp: labelled(tmp, ""), 2, NOT_A_TABLE),
]  # fmt: skip
