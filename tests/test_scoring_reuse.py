"""A rerun keeps what it would write the same: a T1w scored from the same preprocessed images, model,
settings and version is read back, its outputs and figures left as they are; any change scores it anew."""

import dataclasses
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_pscore import bids, cohort, participant, qc, results, scoring, viz
from bids_pscore.cli import run as cli
from bids_pscore.derivatives import layout
from bids_pscore.progress import Progress

from .helpers import gate_record_of_a_box, make_bids, small_image
from .test_subject_report import TEMPLATE, preprocessed_session


def session_files(out, item):
    """{path: (bytes, mtime)} of every output of the T1w's scoring and report, its gate record and the model's figure included."""
    outputs = layout.with_sidecars(layout.session_outputs(item.entities, TEMPLATE, layout.QC, *layout.SCORING_STEPS)) + [layout.MODEL_FIGURE]
    return {p: ((out / p).read_bytes(), (out / p).stat().st_mtime_ns) for p in outputs if (out / p).is_file()}


def score_and_report(out, item, bundle, covariates=None, qc_thresholds="off"):
    """Score and report the T1w as a participant run would, the gate's bounds given as --qc-thresholds
    (off by default: the T1w's brain is a box, no head)."""
    records, bounds = out.parent / "work" / "scored", qc.parse_bounds(qc_thresholds)
    results, stopped = scoring.score_sessions([item], out, bundle, TEMPLATE, bounds, out / "logs", covariates, records)
    assert not stopped
    _, unwritten = participant.write_run_reports(out, [item], [item], results, {}, bundle.metadata, TEMPLATE, {"run": "test"}, None, records)
    assert not unwritten
    return results[0]


@pytest.fixture
def scored(tmp_path):
    """A T1w scored once, its report drawn: (output folder, T1w, model)."""
    out = tmp_path / "out"
    out.mkdir()
    item = preprocessed_session(out, "1")
    bundle = participant.load_model()
    result = score_and_report(out, item, bundle)
    assert not result.reused and result.qc == gate_record_of_a_box(out, item)["Measures"]
    return out, item, bundle


def test_a_rerun_of_a_scored_session_keeps_its_outputs_and_figures_as_they_are(scored, caplog):
    out, item, bundle = scored
    before = session_files(out, item)
    figures = layout.session_outputs(item.entities, TEMPLATE, layout.FIGURES)
    assert set(figures.values()) | {layout.MODEL_FIGURE} <= set(before), "every figure was drawn"
    with caplog.at_level(logging.INFO, logger="bids_pscore"):
        result = score_and_report(out, item, bundle)
    assert result.reused and result == dataclasses.replace(results.read_session_result(out, item, TEMPLATE), reused=True)
    assert result.qc == gate_record_of_a_box(out, item)["Measures"]  # the gate's measures come back with the scores
    assert session_files(out, item) == before  # the same bytes, not one file written again
    assert f"{item.label}: whole-brain P-score {result.whole:.1f} of " in caplog.text and "scores reused from the work folder" in caplog.text
    # a figure that went missing is drawn again, alone
    (out / figures["bars_figure"]).unlink()
    score_and_report(out, item, bundle)
    after = session_files(out, item)
    assert after.keys() == before.keys() and [p for p in before if after[p] != before[p]] == [figures["bars_figure"]]


def changed_image(out, item, bundle):
    path = out / layout.output_path(item.entities, "t1w_grid", TEMPLATE)
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) * np.float32(0.9), image.affine), path)  # as the workflow run again would
    return {}


def other_model(out, item, bundle):
    return {"bundle": dataclasses.replace(bundle, metadata={**bundle.metadata, "metadata_sha256": "0" * 64})}


def other_covariates(out, item, bundle):
    return {"covariates": {item.ident: (71.0, "F")}}


def other_qc_thresholds(out, item, bundle):
    return {"qc_thresholds": '{"brain_volume_ml": [100, null], "template_correlation": [-1, null], "wm_gm_ratio": [0.9, null]}'}


def missing_output(out, item, bundle):
    (out / layout.output_path(item.entities, "region_table", TEMPLATE)).unlink()
    return {}


def summary_of_another_run(out, item, bundle):
    summary = out / layout.output_path(item.entities, "summary", TEMPLATE)
    summary.write_text(summary.read_text() + " ")  # as a run with another work folder (and other ages) would have written it
    return {}


@pytest.mark.parametrize("change", [changed_image, other_model, other_covariates, other_qc_thresholds, missing_output, summary_of_another_run])
def test_a_session_is_scored_again_when_what_decides_its_scores_changed(scored, change, caplog, monkeypatch):
    out, item, bundle = scored
    summary = out / layout.output_path(item.entities, "summary", TEMPLATE)
    written = summary.stat().st_mtime_ns
    drawn = []
    draw = viz.mosaic
    monkeypatch.setattr(viz, "mosaic", lambda path, *args, **kwargs: drawn.append(Path(path)) or draw(path, *args, **kwargs))
    run = {"bundle": bundle, **change(out, item, bundle)}  # score_and_report's arguments, one of them changed (or a file)
    with caplog.at_level(logging.INFO, logger="bids_pscore"):
        result = score_and_report(out, item, **run)
    assert not result.reused and "reused" not in caplog.text and summary.stat().st_mtime_ns != written
    # the model's figure is drawn again for another model only (the same weights draw the same bytes, which leave the file as it was)
    assert ((out / layout.MODEL_FIGURE) in drawn) == (change is other_model)
    assert results.read_session_result(out, item, TEMPLATE) is not None  # a whole set again
    assert result.qc == gate_record_of_a_box(out, item, run.get("qc_thresholds", "off"))["Measures"]  # the gate's record of this run's bounds
    assert score_and_report(out, item, **run).reused  # and its new record is kept for the next run


def test_a_participant_rerun_keeps_the_outputs_of_its_scored_sessions(tmp_path, monkeypatch, capsys):
    bids_dir = make_bids(tmp_path / "bids", {"sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz": small_image()})
    out = tmp_path / "out"

    def preprocessed(t1w_inputs, bids_dir, output_dir, *args):
        preprocessed_session(output_dir, "1")  # as the workflow's sink copies its cached results anew
        progress = Progress({t.ident: t.label for t in t1w_inputs})
        for outcome in progress.outcomes.values():
            outcome.status = "ok"
        return progress

    monkeypatch.setattr(cohort, "preprocess", preprocessed)
    command = [str(bids_dir), str(out), "participant", "--skip-bids-validation", "-w", str(tmp_path / "work"), "--qc-thresholds", "off"]
    assert cli.main(command) == 0
    item = bids.T1wInput(
        bids_dir / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz", "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz", {"sub": "01", "ses": "1"}
    )
    before = session_files(out, item)
    assert before and "reused" not in capsys.readouterr().out
    gate_record_of_a_box(out, item)  # the option reached the gate (the box is no head), whose record is among the kept files
    (scoring_run,) = (p.name.removeprefix("run-") for p in (out / "logs").glob("run-*"))
    assert cli.main(command) == 0
    printed = capsys.readouterr().out
    assert session_files(out, item) == before and "sub-01 ses-1: whole-brain P-score" in printed and "scores reused from the work folder" in printed
    # the report, drawn again, names the run that scored the session
    assert f"<tr><td>scored by run</td><td>{scoring_run} (its logs: logs/run-{scoring_run}/)" in (out / "sub-01.html").read_text()
