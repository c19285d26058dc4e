"""The command-line contract: options, labels, and every documented exit code (the bad inputs that end
a run with each are the corpus in tests/badinputs.py, run by tests/test_badinputs.py).

None of these runs the preprocessing: each case stops before the workflow or fails fast.
"""

import json
from pathlib import Path

import pytest

from bids_pscore import errors
from bids_pscore.cli.run import main, parse_args
from bids_pscore.derivatives import layout

from .helpers import make_bids, small_image

TEMPLATE = "MNI152NLin2009aSym"


def run(capsys, *args):
    code = main([str(a) for a in args])
    return code, capsys.readouterr()


def test_version_and_help_document_exit_codes(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert "bids_pscore" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    # every exit code the app defines is explained in --help, in the usage page's table and by a
    # section of the troubleshooting page
    codes = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    assert codes >= {0, 1, 2, 16, 17, 18, 65, 66, 73, 130}
    docs = Path(__file__).resolve().parents[1] / "docs"
    usage, troubleshooting = (docs / "usage.md").read_text(), (docs / "troubleshooting.md").read_text()
    for code in codes:
        assert f"\n  {code} " in text and f"\n| {code} | " in usage and f"\n## Exit {code}: " in troubleshooting, code
    # the analysis levels are shown as choices in the usage line
    assert "{participant,group}" in text.split("\n\n")[0]
    for option in ("--stop-on-first-crash", "--reports-only", "--mem", "--bids-database-dir"):
        assert option in text


def test_memory_budget_reaches_multiproc_and_must_be_positive(tmp_path, capsys):
    from bids_pscore.execution import plugin_settings

    config = parse_args([str(tmp_path), str(tmp_path / "o"), "participant", "--mem", "6.5"])
    assert plugin_settings("MultiProc", None, 2, None, config.execution.mem_gb)["memory_gb"] == 6.5
    assert "memory_gb" not in plugin_settings("MultiProc", None, 2, None, None)
    code, out = run(capsys, tmp_path, tmp_path / "o", "participant", "--mem", "0")
    assert code == errors.EXIT_USAGE and "--mem" in out.err


def test_labels_with_or_without_prefix(tmp_path):
    config = parse_args([str(tmp_path), str(tmp_path / "o"), "participant", "--participant-label", "sub-02", "01", "--session-label", "ses-1"])
    assert config.selection.participant_label == ("01", "02")
    assert config.selection.session_label == ("1",)


def test_missing_positional_is_usage(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["only_one"])
    assert stop.value.code == 2


def test_failing_sessions_do_not_stop_others_and_are_summarised(tmp_path, capsys):
    """Two unreadable T1w: both fail at 'load', the run finishes, exit 1, each named with its log."""
    good = small_image(value=None)
    truncated = tmp_path / "full.nii.gz"
    good.to_filename(truncated)
    nan_image = small_image()
    nan_image.dataobj[2, 2, 2] = float("nan")
    root = make_bids(tmp_path / "bids", {
        "sub-01/anat/sub-01_T1w.nii.gz": truncated.read_bytes()[:300],
        "sub-02/anat/sub-02_T1w.nii.gz": nan_image,
    })  # fmt: skip
    out_dir = tmp_path / "out"
    # the BIDS validator would refuse the truncated file before any step: this is about the steps
    code, out = run(capsys, root, out_dir, "participant", "-w", tmp_path / "work", "--nipype-plugin", "Linear", "--skip-bids-validation")
    assert code == errors.EXIT_SESSION_FAILED
    failed = {line.split()[0]: line for line in out.out.splitlines() if "  failed  " in line}
    assert "truncated or corrupt" in failed["sub-01"] and "load" in failed["sub-01"]
    assert "NaN or Inf" in failed["sub-02"] and "sub-02_T1w.nii.gz" in failed["sub-02"]
    assert "0 of 2 T1w done" in out.out
    # the steps after a failed one never ran, and are not reported as done
    assert not [line for line in out.out.splitlines() if line.startswith("[") and " done (" in line and "sub-0" in line]
    crash_logs = list((out_dir / "logs").glob("run-*/crash-*.txt"))
    assert len(crash_logs) == 2
    assert not list(out_dir.glob("sub-*/**/anat/*"))  # no derivative, only the reports
    report = (out_dir / "sub-02.html").read_text()
    assert "failed at step load" in report and "NaN or Inf" in report
    # what the run printed is kept beside its logs, the lines before the log folder existed included
    (console,) = (out_dir / "logs").glob("run-*/console.log")
    assert console.read_text() == out.out


def test_stop_on_first_crash_stops_at_the_first_failing_t1w(tmp_path, capsys):
    nan_image = small_image()
    nan_image.dataobj[2, 2, 2] = float("nan")
    root = make_bids(tmp_path / "bids", {f"sub-0{i}/anat/sub-0{i}_T1w.nii.gz": nan_image for i in (1, 2)})
    out_dir = tmp_path / "out"
    args = ["participant", "-w", tmp_path / "work", "--nipype-plugin", "Linear", "--skip-bids-validation"]
    code, out = run(capsys, root, out_dir, *args, "--stop-on-first-crash")
    assert code == errors.EXIT_SESSION_FAILED and "stopped at the first failure (--stop-on-first-crash); nothing was scored" in out.out
    # one T1w failed and the other never ran: one crash log, no report, nothing scored
    assert len(list((out_dir / "logs").glob("run-*/crash-*.txt"))) == 1
    assert not list(out_dir.glob("sub-*.html"))


def test_a_broken_link_fails_only_its_t1w_and_a_failed_rerun_removes_its_old_outputs(tmp_path, capsys):
    """A DataLad file not yet retrieved is a link to nowhere: that T1w fails at 'load' with the
    fix, the others run; the outputs an earlier run left for a T1w that now fails are removed."""
    nan_image = small_image()
    nan_image.dataobj[2, 2, 2] = float("nan")
    root = make_bids(tmp_path / "bids", {"sub-02/anat/sub-02_T1w.nii.gz": nan_image})
    annexed = root / "sub-01/anat/sub-01_T1w.nii.gz"
    annexed.parent.mkdir(parents=True)
    annexed.symlink_to("../../.git/annex/objects/Xk/MD5E-s1--0.nii.gz")
    out_dir = tmp_path / "out"
    stale = {}
    for sub in ("01", "02"):  # what an earlier, successful run wrote
        entities = {"sub": sub}
        for rel in [*layout.session_outputs(entities, TEMPLATE, layout.PSCORE).values(), layout.output_path(entities, "qc")]:
            stale[rel] = out_dir / rel
            stale[rel].parent.mkdir(parents=True, exist_ok=True)
            stale[rel].write_text("from an earlier run")
    code, out = run(capsys, root, out_dir, "participant", "-w", tmp_path / "work", "--nipype-plugin", "Linear",
                    "--skip-bids-validation")  # fmt: skip
    assert code == errors.EXIT_SESSION_FAILED and "Traceback" not in out.out + out.err
    failed = {line.split()[0]: line for line in out.out.splitlines() if "  failed  " in line}
    assert "datalad get sub-01/anat/sub-01_T1w.nii.gz" in failed["sub-01"] and " load " in failed["sub-01"]
    assert "NaN or Inf" in failed["sub-02"]  # the other T1w ran its steps
    assert not any(path.exists() for path in stale.values())
    assert "sub-01: the outputs of an earlier run were removed" in out.out
    assert "failed at step load" in (out_dir / "sub-01.html").read_text()


def test_registration_seed_is_the_models_unless_given_and_then_said(capsys):
    from bids_pscore.cohort import load_model, preprocessing_params

    metadata = load_model().metadata
    params = preprocessing_params(metadata)
    assert params.registration_seed == metadata["preprocessing"]["registration_seed"] >= 1 and capsys.readouterr().out == ""
    assert preprocessing_params(metadata, params.registration_seed) == params and capsys.readouterr().out == ""
    other = preprocessing_params(metadata, params.registration_seed + 1)
    assert other.registration_seed == params.registration_seed + 1 and other.fwhm_mm == params.fwhm_mm
    assert "WARNING: --random-seed" in capsys.readouterr().out


def test_a_registration_seed_of_0_is_refused_as_ants_would_seed_it_from_the_clock(tmp_path, capsys):
    from bids_pscore.model.preprocessing import PreprocParams

    code, out = run(capsys, tmp_path, tmp_path / "o", "participant", "--random-seed", "0")
    assert code == errors.EXIT_USAGE and "--random-seed must be at least 1" in out.err and "clock" in out.err
    with pytest.raises(errors.UsageError, match="clock"):
        PreprocParams(registration_seed=0)


def test_the_participant_level_lets_waiting_openmp_threads_sleep_unless_told_otherwise(tmp_path, monkeypatch):
    import subprocess
    import sys

    from bids_pscore import participant

    dataset = make_bids(tmp_path / "bids", {"sub-01/anat/sub-01_T1w.nii.gz": small_image()})
    seen = []
    monkeypatch.setattr(participant, "run_participant", lambda config: seen.append(__import__("os").environ.get("OMP_WAIT_POLICY")) or 0)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main([str(dataset), str(tmp_path / "out"), "participant"]) == 0
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # the user's choice stands
    assert main([str(dataset), str(tmp_path / "out"), "participant"]) == 0
    assert seen == ["PASSIVE", "ACTIVE"]
    # OpenMP reads the policy when torch loads: the command line must not load torch before it is set
    code = "import sys, bids_pscore.cli.run; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_reports_only_describes_the_skull_stripping_the_sidecars_record(tmp_path):
    """--reports-only writes the methods text of the outputs it finds, whatever mode its own command line has."""
    from types import SimpleNamespace

    from bids_pscore.participant import skull_strip_done

    def results(*kept):
        made = []
        for k, value in enumerate(kept):
            grid = f"sub-{k}_T1w.nii.gz"
            layout.sidecar_path(tmp_path / grid).write_text(json.dumps({"InputSkullStripped": value}))
            made.append(SimpleNamespace(paths={"t1w_grid": grid}))
        return made

    assert skull_strip_done(tmp_path, results(False, False)) == "force"  # deepbet stripped every input
    assert skull_strip_done(tmp_path, results(True, True)) == "skip"  # every input kept its own brain
    assert skull_strip_done(tmp_path, results(True, False)) == "auto"
    assert skull_strip_done(tmp_path, [SimpleNamespace(paths={"t1w_grid": "missing_T1w.nii.gz"})]) is None
