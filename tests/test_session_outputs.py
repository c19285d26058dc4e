"""One description of a session's outputs (layout.SESSION_OUTPUTS): what the sink, the writers and the
reports put on disk for a T1w is exactly what it names, and removal and the readers take the same set."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_pscore import cohort, participant, qc, scoring
from bids_pscore.bids import T1wInput
from bids_pscore.derivatives import layout, session_files
from bids_pscore.grid import GRID_AFFINE, GRID_SHAPE
from bids_pscore.model.preprocessing import PreprocParams
from bids_pscore.preprocess.interfaces import DerivativesSink
from bids_pscore.results import read_session_result

from .helpers import BRAIN_BOX, gate_record_of_a_box

TEMPLATE = PreprocParams().template
# names that share a prefix: sub-01 and sub-010, run-1 and run-10
ENTITIES = ({"sub": "01", "run": "1"}, {"sub": "01", "run": "10"}, {"sub": "010", "run": "1"})


def sunk_session(out, scratch, entities, t1w_grid=None, mask=None, intensity_map=(0.0, 2.0)):
    """A T1w whose preprocessing outputs the workflow's own sink wrote (from stand-in images: by
    default a box of 0.5 on the grid, standardised by ``intensity_map``, as its mask)."""
    scratch.mkdir(parents=True, exist_ok=True)
    if mask is None:
        mask = np.zeros(GRID_SHAPE, np.uint8)
        mask[BRAIN_BOX] = 1
    t1w_grid = mask * np.float32(0.5) if t1w_grid is None else t1w_grid
    files = {}
    for key, data in (("t1w_grid", t1w_grid), ("mask_grid", mask), ("mask_native", mask), ("xfm_warp", mask)):
        files[key] = scratch / f"{key}.nii.gz"
        nib.save(nib.Nifti1Image(data, GRID_AFFINE), files[key])
    for key in ("xfm_affine", "figure_brainmask", "figure_registration"):
        files[key] = scratch / key
        files[key].write_bytes(key.encode())
    relpath = f"sub-{entities['sub']}/anat/{layout.t1w_name(entities)}_T1w.nii.gz"  # where the T1w lies in the dataset
    nib.save(nib.Nifti1Image(np.zeros((10, 12, 14), np.int16), np.eye(4)), scratch / "raw.nii.gz")
    DerivativesSink(output_dir=str(out), t1w_relpath=relpath, entities=entities, params=PreprocParams().to_dict(), input_skull_stripped=False,
                    intensity_map=intensity_map, **{k: str(v) for k, v in files.items()}).run()  # fmt: skip
    return T1wInput(scratch / "raw.nii.gz", relpath, entities)


def on_disk(out, sub):
    return {p.relative_to(out) for p in (out / f"sub-{sub}").rglob("*") if p.is_file()}


def test_what_a_scored_session_leaves_is_what_the_description_names_and_removal_takes_exactly_that(tmp_path):
    out = tmp_path / "out"
    items = [sunk_session(out, tmp_path / "scratch" / str(i), entities) for i, entities in enumerate(ENTITIES)]
    bundle = cohort.load_model()
    assert bundle.metadata.get("relevance") and bundle.normative is not None, "the demo model should write every kind of output"
    results, stopped = scoring.score_sessions(items, out, bundle, TEMPLATE, qc.parse_bounds("off"), tmp_path / "logs")  # boxes, no heads
    assert not stopped
    participant.write_run_reports(out, items, items, results, {}, bundle.metadata, TEMPLATE, {"run": "test"})
    described = {item.relpath: set(layout.with_sidecars(layout.session_outputs(item.entities, TEMPLATE))) for item in items}
    # every file under sub-01/ and sub-010/ is one that the description names, and each that it names is there
    assert on_disk(out, "01") == described[items[0].relpath] | described[items[1].relpath]
    assert on_disk(out, "010") == described[items[2].relpath]
    assert all(
        p.suffix != ".json" or not layout.SESSION_OUTPUTS[k].sidecar
        for item in items
        for k, p in layout.session_outputs(item.entities, TEMPLATE).items()
    )
    # the readers take the same set: what this run scored, what --reports-only reads back, what the group level finds
    data_steps = (layout.PREPROCESSING, layout.QC, layout.PSCORE, layout.RELEVANCE, layout.NORMATIVE)
    for item, result in zip(items, results):
        expected = layout.session_outputs(item.entities, TEMPLATE, *data_steps)
        assert result.paths == expected
        assert read_session_result(out, item, TEMPLATE).paths == expected
        # each T1w's gate record is its own, measured on the images its sink wrote
        assert result.qc == read_session_result(out, item, TEMPLATE).qc == gate_record_of_a_box(out, item)["Measures"]
    assert layout.summary_files(out) == sorted(out / layout.output_path(item.entities, "summary") for item in items)
    # a file that only ends like a summary (an entity no T1w has) is not taken for one
    decoy = out / "sub-01" / "anat" / "sub-01_foo-1_desc-summary_pscore.json"
    decoy.write_text("{}")
    assert decoy not in layout.summary_files(out)
    decoy.unlink()

    # the scores of run-1 go, with their figures; its preprocessing and every file of run-10 and of sub-010 stay
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    scores = set(layout.with_sidecars(layout.session_outputs(items[0].entities, TEMPLATE, *layout.SCORING_STEPS)))
    assert session_files.remove_outputs(out, items[0].entities, TEMPLATE, preprocessing=False) == len(scores)
    assert {p.relative_to(out) for p in before} - {p.relative_to(out) for p in out.rglob("*") if p.is_file()} == scores
    assert read_session_result(out, items[0], TEMPLATE) is None
    # then the rest of run-1: nothing of the T1w is left, nothing of another is touched
    assert session_files.remove_outputs(out, items[0].entities, TEMPLATE) == len(described[items[0].relpath] - scores)
    assert on_disk(out, "01") == described[items[1].relpath] and on_disk(out, "010") == described[items[2].relpath]
    assert all(path.read_bytes() == content for path, content in before.items() if path.exists())
    assert json.loads((out / layout.output_path(items[1].entities, "summary")).read_text())["Model"]["Name"] == bundle.metadata["name"]
    assert Path(layout.subject_report_path("01")) == Path("sub-01.html") and (out / "sub-01.html").is_file()
