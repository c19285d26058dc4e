"""Test helpers: generated BIDS trees and images, and where the optional real data lies."""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")
COLIN_BRAIN = Path("/usr/share/mricron/templates/ch2bet.nii.gz")


def needs(present, missing):
    """Skip a test whose data or tool is missing (``missing`` says which, and how to get it), except in CI
    (CI=true, as CI services set it), where it fails: a test that CI skips in silence proves nothing."""
    if present:
        return
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{missing}; CI=true, so the test must run (a CI without ../shared/data deselects its tests: -m 'not shared_data')")
    pytest.skip(missing)


def small_image(shape=(20, 24, 20), voxel_mm=1.0, value=None, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.uniform(10, 100, shape).astype(np.float32) if value is None else np.full(shape, value, np.float32)
    return nib.Nifti1Image(data, np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0]))


def make_bids(root, files, description=True):
    """A BIDS tree: ``files`` maps relative paths to nibabel images, bytes or text."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if description:
        (root / "dataset_description.json").write_text(json.dumps({"Name": "test", "BIDSVersion": "1.10.0"}))
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, nib.Nifti1Image):
            content.to_filename(path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def half_written(folder):
    """Files of atomic writes that never got their final name (bids_pscore.fileio names them hidden)."""
    return [p for p in Path(folder).rglob(".*") if p.is_file() and p.name != ".bidsignore"]


def killed_while_writing(code, path_part=""):
    """Python source (for ``python -c``) that runs ``code`` and kills its own process with SIGKILL, which
    nothing catches, at the first atomic write whose path holds ``path_part``: its temporary file written
    and synced, the rename not made."""
    return (
        "import os, signal\n"
        "from bids_pscore import fileio\n"
        "def sync_then_die(path, sync_data=fileio.sync_data):\n"
        "    sync_data(path)\n"
        f"    if {path_part!r} in str(path):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "fileio.sync_data = sync_then_die\n"
    ) + code


# the brain the scoring tests give a T1w without preprocessing it: a box of one grey level on the grid
BRAIN_BOX = np.s_[20:100, 20:120, 15:100]


def gate_record_of_a_box(out, item, qc_thresholds="off"):
    """The quality gate's record (*_qc.json) that scoring wrote for ``item``, whose preprocessed brain
    and native mask are BRAIN_BOX on the grid, under ``qc_thresholds`` as a user gives them: asserted
    to be what the real gate measures of that box, so that a record lost, stale or made up on its way
    to the outputs fails the test."""
    from bids_pscore import qc
    from bids_pscore.derivatives import layout
    from bids_pscore.grid import GRID_SHAPE, GRID_VOXEL_MM

    record = json.loads((Path(out) / layout.output_path(item.entities, "qc")).read_text())
    box_ml = np.zeros(GRID_SHAPE)[BRAIN_BOX].size * GRID_VOXEL_MM**3 / 1000
    assert record["Measures"]["brain_volume_ml"] == box_ml and record["Measures"]["wm_gm_ratio"] == 1.0, record  # flat: no white matter
    assert qc.failures(record["Measures"]), "a box is no head: the default bounds stop it, hence the tests' looser ones"
    bounds = qc.parse_bounds(qc_thresholds)
    assert record["Passed"] and record["Failures"] == [] and record["Thresholds"] == {k: list(v) for k, v in bounds.items()}, record
    assert record["Sources"] == [layout.raw_uri(item.relpath)]
    return record


def preprocessing_stood_in(write):
    """A stand-in for the participant level's ``preprocess`` (execution.preprocess): ``write(output_dir)``
    puts the preprocessed images where the sink would, every T1w's preprocessing is said done, and the
    nodes that follow each sink (the quality gate, the scoring and the figures) run as in a whole run."""
    from bids_pscore.execution import run_after_sinks
    from bids_pscore.progress import Progress

    def preprocess(t1w_inputs, bids_dir, output_dir, work_dir, params, execution, log_dir, extend=None):
        write(Path(output_dir))
        progress = Progress({t.ident: t.label for t in t1w_inputs})
        for outcome in progress.outcomes.values():
            outcome.status = "ok"
        if extend is not None:
            run_after_sinks(t1w_inputs, work_dir, log_dir, extend, progress)
        return progress

    return preprocess
