"""Scoring isolated per session: a session that fails at scoring or writing fails that T1w only,
and a session's scores are replaced as a set (never new tables beside an old summary)."""

import json
import logging
from pathlib import Path

import pytest

from bids_pscore import bids, cohort, participant, qc, results, scoring, viz
from bids_pscore.cli import run as cli
from bids_pscore.derivatives import layout, session_files
from bids_pscore.errors import OutputNotWritableError

from .badinputs import cut_short
from .helpers import gate_record_of_a_box, make_bids, preprocessing_stood_in, small_image
from .test_subject_report import TEMPLATE, preprocessed_session


def test_a_session_failing_at_scoring_fails_alone_and_the_others_are_scored_and_reported(tmp_path, monkeypatch, capsys):
    """ses-2's preprocessed image is unreadable, ses-3's disk is full when its normative files are
    written; ses-1 and ses-4, before and after them, are scored and in the report; the run exits 1."""
    sessions = ("1", "2", "3", "4")
    bids_dir = make_bids(tmp_path / "bids", {f"sub-01/ses-{s}/anat/sub-01_ses-{s}_T1w.nii.gz": small_image() for s in sessions})
    out = tmp_path / "out"

    def preprocessed(output_dir):  # nothing failed there
        for ses in sessions:
            preprocessed_session(output_dir, ses)
        cut_short(output_dir / layout.output_path({"sub": "01", "ses": "2"}, "t1w_grid", TEMPLATE))

    write_normative = session_files.write_normative

    def full_disk_for_ses_3(output_dir, entities, *args):
        if entities.get("ses") == "3":
            raise OutputNotWritableError(f"{output_dir}/sub-01/ses-3/...: cannot be written (No space left on device); free space there")
        return write_normative(output_dir, entities, *args)

    monkeypatch.setattr(participant, "preprocess", preprocessing_stood_in(preprocessed))
    monkeypatch.setattr(session_files, "write_normative", full_disk_for_ses_3)
    code = cli.main([str(bids_dir), str(out), "participant", "--skip-bids-validation", "-w", str(tmp_path / "work"), "--qc-thresholds", "off"])
    printed = capsys.readouterr()
    assert code == 1 and "Traceback" not in printed.out + printed.err
    summaries = {ses: out / layout.output_path({"sub": "01", "ses": ses}, "summary", TEMPLATE) for ses in sessions}
    assert summaries["1"].is_file() and summaries["4"].is_file()
    assert not summaries["2"].exists() and not summaries["3"].exists()
    # what was written of ses-3's set before the disk filled is gone with it
    assert not any((out / p).exists() for p in layout.session_outputs({"sub": "01", "ses": "3"}, TEMPLATE, layout.PSCORE).values())
    # the run's final lines name each failed T1w, what failed and the fix
    final = printed.out[printed.out.index("2 of 4 T1w not scored") :]
    damaged = out / layout.output_path({"sub": "01", "ses": "2"}, "t1w_grid", TEMPLATE)
    assert f"sub-01 ses-2: scoring: {damaged}: cannot be read (" in final and "run the participant level again for this T1w" in final
    crash = next(p for p in (out / "logs").glob("run-*/crash-*.txt") if "sub_01_ses_2_scoring_wf" in p.read_text())
    assert f"[log: {crash}]" in final and "Traceback" in crash.read_text()
    assert "sub-01 ses-3: scoring: " in final and "No space left on device); free space there" in final
    page = (out / "sub-01.html").read_text()
    assert "sub-01 ses-1" in page and "sub-01 ses-4" in page and "No space left on device" in page
    # the run's log folder keeps its messages at debug level too, which the console (default verbosity) did not show
    (debug,) = (out / "logs").glob("run-*/debug.log")
    assert "DEBUG bids_pscore.participant: sub-01 ses-4: " in debug.read_text() and "selected cubes hold brain" not in printed.out
    assert "WARNING bids_pscore.participant: sub-01 ses-2: NOT SCORED, scoring failed: " in debug.read_text()
    assert [json.loads(summaries[s].read_text())["Model"]["Name"] for s in ("1", "4")] == ["demo-ixi"] * 2
    # the gate measured the sessions around the failing ones; ses-2's image could not be measured, so it has no record
    t1w = {t.entities["ses"]: t for t in bids.find_t1w(bids.load_layout(bids_dir, validate=False))}
    for ses in ("1", "4"):
        gate_record_of_a_box(out, t1w[ses])
    assert not (out / layout.output_path(t1w["2"].entities, "qc")).exists()


def test_an_interrupted_rescore_leaves_no_new_tables_beside_an_old_summary(tmp_path, monkeypatch, caplog):
    """The summary is what the group level and the reports take for a whole set: a rescore killed
    after its first tables must not leave the earlier run's summary beside them."""
    bundle, gate_off = cohort.load_model(), qc.parse_bounds("off")  # a box, no head
    item = preprocessed_session(tmp_path, "1")
    scoring.score_sessions([item], tmp_path, bundle, TEMPLATE, gate_off, tmp_path / "logs")
    paths = layout.session_outputs(item.entities, TEMPLATE, layout.PSCORE)
    assert (tmp_path / paths["summary"]).is_file()
    earlier_table = (tmp_path / paths["region_table"]).stat().st_mtime_ns

    write_map = session_files._write_map

    def killed_at_the_voxel_map(path, *args):
        if "_desc-voxel_" in path.name:
            raise KeyboardInterrupt  # as Ctrl-C, or any kill, there
        return write_map(path, *args)

    monkeypatch.setattr(session_files, "_write_map", killed_at_the_voxel_map)
    with pytest.raises(KeyboardInterrupt):
        scoring.score_sessions([item], tmp_path, bundle, TEMPLATE, gate_off, tmp_path / "logs")
    assert (tmp_path / paths["region_table"]).stat().st_mtime_ns != earlier_table  # the new tables were written
    assert not (tmp_path / paths["summary"]).exists() and layout.summary_files(tmp_path) == []
    assert results.read_session_result(tmp_path, item, TEMPLATE) is None
    with caplog.at_level(logging.WARNING):
        assert results.earlier_results(tmp_path, [item], TEMPLATE, bundle.metadata) == []


def test_a_report_that_cannot_be_drawn_costs_only_its_subject(tmp_path, monkeypatch, capsys):
    """sub-01.html cannot be written (a folder of that name is in the way): sub-02's report is drawn,
    both subjects are scored, the run names the report and the fix, and exits 1; --reports-only too."""
    subjects = ("01", "02")
    bids_dir = make_bids(tmp_path / "bids", {f"sub-{s}/ses-1/anat/sub-{s}_ses-1_T1w.nii.gz": small_image() for s in subjects})
    out = tmp_path / "out"
    (out / "sub-01.html").mkdir(parents=True)

    def preprocessed(output_dir):
        for sub in subjects:
            preprocessed_session(output_dir, "1", sub)

    monkeypatch.setattr(participant, "preprocess", preprocessing_stood_in(preprocessed))
    args = [str(bids_dir), str(out), "participant", "--skip-bids-validation", "-w", str(tmp_path / "work"), "--qc-thresholds", "off"]
    code = cli.main(args)
    printed = capsys.readouterr()
    assert code == 1 and "Traceback" not in printed.out + printed.err
    assert all((out / layout.output_path({"sub": s, "ses": "1"}, "summary", TEMPLATE)).is_file() for s in subjects)
    assert "sub-02 ses-1" in (out / "sub-02.html").read_text()
    line = next(line for line in printed.out.splitlines() if "report NOT drawn" in line)
    assert f"{out / 'sub-01.html'}: report NOT drawn (" in line and "draw it again with --reports-only" in line
    crash = next((out / "logs").glob("run-*/crash-report-sub-01.txt"))
    assert f"[log: {crash}]" in line and "Traceback" in crash.read_text()
    assert cli.main(args + ["--reports-only"]) == 1
    printed = capsys.readouterr()
    assert f"{out / 'sub-01.html'}: report NOT drawn (" in printed.out and "Traceback" not in printed.out + printed.err


def test_figures_that_cannot_be_drawn_leave_the_t1w_scored_and_its_report_says_not_drawn(tmp_path, monkeypatch, capsys):
    """Drawing a T1w's figures fails (in the workflow and again in the report): its scores stay, it counts as
    scored, and the run says the figures and the report were NOT drawn, the report with its fix; exit 1."""
    bids_dir = make_bids(tmp_path / "bids", {"sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz": small_image()})
    out = tmp_path / "out"

    def broken(*args, **kwargs):
        raise RuntimeError("the bars broke")

    monkeypatch.setattr(participant, "preprocess", preprocessing_stood_in(lambda output_dir: preprocessed_session(output_dir, "1")))
    monkeypatch.setattr(viz, "ranked_bars", broken)
    code = cli.main([str(bids_dir), str(out), "participant", "--skip-bids-validation", "-w", str(tmp_path / "work"), "--qc-thresholds", "off"])
    printed = capsys.readouterr()
    assert code == 1 and "Traceback" not in printed.out + printed.err
    entities = {"sub": "01", "ses": "1"}
    assert all((out / p).is_file() for p in layout.session_outputs(entities, TEMPLATE, layout.PSCORE).values())  # the scores stay
    assert "sub-01 ses-1: whole-brain P-score" in printed.out and "not scored" not in printed.out and "NOT SCORED" not in printed.out
    (scored_tsv,) = (out / "logs").glob("run-*/scored.tsv")
    assert "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz" in scored_tsv.read_text()
    assert "sub-01 ses-1: figures NOT drawn (" in printed.out and "the bars broke" in printed.out
    line = next(line for line in printed.out.splitlines() if "report NOT drawn" in line)
    assert f"{out / 'sub-01.html'}: report NOT drawn (" in line and "the bars broke" in line and "draw it again with --reports-only" in line


def test_stop_on_first_crash_names_the_t1w_scored_before_the_stop(tmp_path, monkeypatch, capsys):
    """Each T1w is scored after its own preprocessing: sub-01 is scored and copied out before sub-02's
    preprocessing fails and stops the run, which must not say that nothing was scored."""
    from bids_pscore.execution import run_after_sinks
    from bids_pscore.progress import Progress

    bids_dir = make_bids(tmp_path / "bids", {f"sub-{s}/ses-1/anat/sub-{s}_ses-1_T1w.nii.gz": small_image() for s in ("01", "02")})
    out = tmp_path / "out"

    def preprocess(t1w_inputs, bids_dir, output_dir, work_dir, params, execution, log_dir, extend=None):
        first, second = sorted(t1w_inputs, key=lambda t: t.label)
        preprocessed_session(Path(output_dir), "1", "01")
        progress = Progress({t.ident: t.label for t in t1w_inputs})
        progress.outcomes[first.ident].status = "ok"
        run_after_sinks([first], work_dir, log_dir, extend, progress)
        progress.refuse(second.ident, "load", "its preprocessing failed")  # and stopped the workflow
        return progress

    monkeypatch.setattr(participant, "preprocess", preprocess)
    code = cli.main([str(bids_dir), str(out), "participant", "--skip-bids-validation", "-w", str(tmp_path / "work"), "--qc-thresholds", "off",
                     "--stop-on-first-crash"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 1 and (out / layout.output_path({"sub": "01", "ses": "1"}, "summary", TEMPLATE)).is_file()
    line = next(line for line in printed.splitlines() if "stopped at the first failure (--stop-on-first-crash)" in line)
    assert f"scored before it: 1 T1w (sub-01 ses-1), their outputs in {out}; no report was drawn" in line and "nothing was scored" not in line
    assert not list(out.glob("sub-*.html"))


def test_an_unexpected_scoring_error_names_the_t1w_and_keeps_its_traceback(tmp_path):
    item = bids.T1wInput(tmp_path / "sub-01_T1w.nii.gz", "sub-01/anat/sub-01_T1w.nii.gz", {"sub": "01"})
    try:
        raise RuntimeError("the ensemble broke\nsecond line")
    except RuntimeError as exc:
        outcome = scoring.scoring_failure(item, exc, tmp_path)
    assert outcome.message.startswith(f"{item.path}: RuntimeError: the ensemble broke; run the participant level again")
    assert "second line" not in outcome.message and "second line" in Path(outcome.log).read_text()
