"""A rerun keeps what it would write the same: the quality gate, the scoring and the figures of each T1w
are nodes of the participant workflow, and nipype's cache, which hashes their inputs (the preprocessed
images' checksums, the model's checksum, the gate's bounds, the age and sex), decides what is reused.
A deleted output is copied again from the work folder without scoring again; any change of what
decides the scores scores the T1w anew."""

import dataclasses
import logging
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_pscore import bids, cohort, participant, qc, results, viz
from bids_pscore.cli import run as cli
from bids_pscore.derivatives import layout
from bids_pscore.execution import run_after_sinks
from bids_pscore.progress import Progress
from bids_pscore.scoring import scored_in_workflow, scoring_model
from bids_pscore.workflows import scoring as scoring_wf

from .helpers import gate_record_of_a_box, make_bids, preprocessing_stood_in, small_image
from .test_subject_report import TEMPLATE, preprocessed_session


def session_files(out, item):
    """{path: (bytes, mtime)} of every output of the T1w's scoring and report, its gate record and the model's figure included."""
    outputs = layout.with_sidecars(layout.session_outputs(item.entities, TEMPLATE, layout.QC, *layout.SCORING_STEPS)) + [layout.MODEL_FIGURE]
    return {p: ((out / p).read_bytes(), (out / p).stat().st_mtime_ns) for p in outputs if (out / p).is_file()}


def settings(out, bundle, covariates=None, qc_thresholds="off"):
    """The run's ScoringSettings, the gate's bounds given as --qc-thresholds (off by default: the T1w's brain is a box, no head)."""
    return scoring_wf.ScoringSettings.of(out, TEMPLATE, bundle, qc.parse_bounds(qc_thresholds), covariates or {})


def score_and_report(out, item, run, plugin="Linear"):
    """Score the T1w in the workflow's scoring nodes and draw its report, as a participant run would after its sink."""
    progress = Progress({item.ident: item.label}, quiet=True)
    progress.outcomes[item.ident].status = "ok"  # its preprocessing, stood in by preprocessed_session
    work = out.parent / "work"
    wf = run_after_sinks([item], work, out / "logs", run.attach, progress, plugin)
    found, stopped = scored_in_workflow([item], progress.outcomes, out, TEMPLATE)
    assert not stopped, stopped
    record = work / wf.name / "scored" / "model_figure.json"
    _, unwritten = participant.write_run_reports(out, [item], [item], found, {}, cohort.load_model().metadata, TEMPLATE,
                                                 {"run": "test"}, None, record.parent)  # fmt: skip
    assert not unwritten
    return found[0]


@pytest.fixture
def scored(tmp_path):
    """A T1w scored once, its report drawn: (output folder, T1w, model, the run's settings)."""
    out = tmp_path / "out"
    out.mkdir()
    item = preprocessed_session(out, "1")
    bundle = cohort.load_model()
    run = settings(out, bundle)
    result = score_and_report(out, item, run)
    assert not result.reused and result.qc == gate_record_of_a_box(out, item)["Measures"]
    return out, item, bundle, run


def test_a_rerun_of_a_scored_session_keeps_its_outputs_and_figures_as_they_are(scored, caplog):
    out, item, bundle, run = scored
    before = session_files(out, item)
    figures = layout.session_outputs(item.entities, TEMPLATE, layout.FIGURES)
    assert set(figures.values()) | {layout.MODEL_FIGURE} <= set(before), "every figure was drawn"
    with caplog.at_level(logging.INFO, logger="bids_pscore"):
        result = score_and_report(out, item, run)
    assert result.reused and result == dataclasses.replace(results.read_session_result(out, item, TEMPLATE), reused=True, figures_drawn=True)
    assert result.qc == gate_record_of_a_box(out, item)["Measures"]  # the gate's measures come back with the scores
    assert session_files(out, item) == before  # the same bytes, not one file written again
    assert f"{item.label}: whole-brain P-score {result.whole:.1f} of " in caplog.text and "scores reused from the work folder" in caplog.text


def deleted(key):
    def delete(out, item, run):
        (out / layout.output_path(item.entities, key, TEMPLATE)).unlink()
        return run

    delete.__name__ = f"deleted_{key}"
    return delete


def summary_of_another_run(out, item, run):
    summary = out / layout.output_path(item.entities, "summary", TEMPLATE)
    summary.write_text(summary.read_text() + " ")  # as a run with another work folder (and other ages) would have written it
    return run


@pytest.mark.parametrize("change", [deleted("region_table"), deleted("bars_figure"), deleted("summary"), summary_of_another_run])
def test_a_deleted_or_changed_output_is_copied_again_from_the_work_folder_without_scoring_again(scored, change, monkeypatch):
    """The sink of the scores runs every time, as the preprocessing's: what the user deleted comes back,
    the same bytes, and nothing is scored or drawn again."""
    out, item, bundle, run = scored
    before = session_files(out, item)
    drawn = []
    draw = viz.mosaic
    monkeypatch.setattr(viz, "mosaic", lambda path, *args, **kwargs: drawn.append(Path(path)) or draw(path, *args, **kwargs))
    result = score_and_report(out, item, change(out, item, run))
    after = session_files(out, item)
    assert result.reused and drawn == []
    assert after.keys() == before.keys() and all(after[p][0] == before[p][0] for p in before)  # the same bytes
    assert len([p for p in before if after[p] != before[p]]) == 1  # only the file that went or changed was written


def changed_image(out, item, bundle, run):
    path = out / layout.output_path(item.entities, "t1w_grid", TEMPLATE)
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) * np.float32(0.9), image.affine), path)  # as the workflow run again would
    return run


def other_model(out, item, bundle, run, monkeypatch):
    # the same weights under another checksum: the node must score again (it loads the bundle by folder and checksum)
    monkeypatch.setattr(scoring_wf, "worker_model", lambda folder, checksum: scoring_model(bundle))
    return dataclasses.replace(run, model_checksum="0" * 64)


def other_covariates(out, item, bundle, run):
    return dataclasses.replace(run, covariates={item.ident: (71.0, "F")})


@pytest.mark.parametrize("change", [changed_image, other_model, other_covariates])
def test_a_session_is_scored_again_when_what_decides_its_scores_changed(scored, change, caplog, monkeypatch):
    out, item, bundle, run = scored
    pid_before = os.getpid()
    summary = out / layout.output_path(item.entities, "summary", TEMPLATE)
    written = summary.stat().st_mtime_ns
    args = (out, item, bundle, run) + ((monkeypatch,) if change is other_model else ())
    changed = change(*args)
    with caplog.at_level(logging.INFO, logger="bids_pscore"):
        result = score_and_report(out, item, changed)
    assert not result.reused and "reused" not in caplog.text
    if change is not other_model:  # the same weights give the same bytes: an atomic write leaves such a file as it was
        assert summary.stat().st_mtime_ns != written
    assert results.read_session_result(out, item, TEMPLATE) is not None  # a whole set again
    assert result.qc == gate_record_of_a_box(out, item)["Measures"]
    assert score_and_report(out, item, changed).reused  # and the next run with the same inputs reuses it
    assert os.getpid() == pid_before


def test_other_gate_bounds_measure_again_and_keep_the_scores_the_bounds_do_not_change(scored, caplog):
    """The bounds decide whether a T1w is scored, not its scores: the gate's record is made again under
    the new bounds, the scores of a T1w that still passes are reused."""
    out, item, bundle, run = scored
    looser = '{"brain_volume_ml": [100, null], "template_correlation": [-1, null], "wm_gm_ratio": [0.9, null]}'
    result = score_and_report(out, item, settings(out, bundle, qc_thresholds=looser))
    assert result.reused
    assert gate_record_of_a_box(out, item, looser)["Measures"] == result.qc  # the record of this run's bounds


def test_a_participant_rerun_keeps_the_outputs_of_its_scored_sessions(tmp_path, monkeypatch, capsys):
    bids_dir = make_bids(tmp_path / "bids", {"sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz": small_image()})
    out = tmp_path / "out"
    # as the workflow's sink copies its cached results anew
    monkeypatch.setattr(participant, "preprocess", preprocessing_stood_in(lambda output_dir: preprocessed_session(output_dir, "1")))
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


@pytest.mark.slow
def test_scoring_runs_in_multiproc_workers(tmp_path):
    """Under MultiProc the scoring nodes run in the workers, not in the main process: each records its process id."""
    out = tmp_path / "out"
    out.mkdir()
    items = [preprocessed_session(out, ses) for ses in ("1", "2")]
    run = settings(out, cohort.load_model())
    progress = Progress({t.ident: t.label for t in items}, quiet=True)
    for outcome in progress.outcomes.values():
        outcome.status = "ok"
    wf = run_after_sinks(items, tmp_path / "work", out / "logs", run.attach, progress, "MultiProc", {"n_procs": 2, "mp_context": "forkserver"})
    assert sorted(n for n in wf.list_node_names() if n.endswith(".scoring")) == sorted(f"{t.ident}_scoring_wf.scoring" for t in items)
    from nipype.utils.filemanip import loadpkl

    nodes = [tmp_path / "work" / wf.name / f"{t.ident}_scoring_wf" / "scoring" / "result_scoring.pklz" for t in items]
    scored_by = {loadpkl(path).outputs.pid for path in nodes}
    assert os.getpid() not in scored_by
    found, stopped = scored_in_workflow(items, progress.outcomes, out, TEMPLATE)
    assert not stopped and len(found) == 2


def test_the_participant_workflow_scores_each_t1w_after_its_sink(tmp_path):
    """The quality gate, the scoring and the figures are nodes of the participant workflow, after the
    T1w's own sink: nipype schedules them in its workers (MultiProc) or as jobs (SLURM)."""
    from bids_pscore.model.preprocessing import PreprocParams
    from bids_pscore.preprocess.workflow import init_participant_wf

    items = [bids.T1wInput(tmp_path / f"sub-0{s}_T1w.nii.gz", f"sub-0{s}/anat/sub-0{s}_T1w.nii.gz", {"sub": f"0{s}"}) for s in (1, 2)]
    run = settings(tmp_path / "out", cohort.load_model())
    wf = init_participant_wf(items, tmp_path / "out", PreprocParams(), {"template": "t.nii.gz", "coarse_template": "c.nii.gz"}, "top_wf",
                             extend=run.attach)  # fmt: skip
    flat = wf._create_flat_graph()
    nodes = {node.fullname: node for node in flat.nodes()}
    for item in items:
        chain = [f"top_wf.{item.ident}_sink"] + [f"top_wf.{item.ident}_scoring_wf.{name}" for name in scoring_wf.SCORING_NODES]
        assert set(chain) <= set(nodes)
        before = {name: {p.fullname for p in flat.predecessors(nodes[name])} for name in chain[1:]}
        assert chain[0] in before[chain[1]] and chain[2] in before[chain[3]] and chain[3] in before[chain[4]] and chain[4] in before[chain[5]]
        scoring = nodes[chain[3]]
        assert not scoring.run_without_submitting and scoring.mem_gb == scoring_wf.SCORING_MEM_GB  # a worker's, or a job's
        assert scoring.inputs.model_checksum == cohort.load_model().metadata["metadata_sha256"]
