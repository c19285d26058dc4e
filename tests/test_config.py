"""The run configuration is built once from the command line, cannot be changed on the way down,
is written with the versions for the record, and sets what the messages show."""

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from bids_pscore.cli import configure_logging
from bids_pscore.cli.run import parse_args
from bids_pscore.config import CONFIG_VARIABLE, Execution, read_worker_verbosity, threads_per_step, write_config
from bids_pscore.progress import RESULT


def test_the_configuration_is_frozen_and_written_with_every_option_and_version(tmp_path, monkeypatch):
    monkeypatch.delenv(CONFIG_VARIABLE, raising=False)
    filters = tmp_path / "filters.json"
    filters.write_text('{"t1w": {"acquisition": "mprage"}}')
    config = parse_args([str(tmp_path / "bids"), str(tmp_path / "out"), "participant", "--participant-label", "02", "sub-01",
                         "--bids-filter-file", str(filters), "--n-cpus", "3", "--mem", "5", "-vv", "--random-seed", "4",
                         "--skull-strip-t1w", "skip"])  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.execution.n_cpus = 8
    path = write_config(config, tmp_path / "logs" / f"run-{config.run_id}")
    written = json.loads(path.read_text())
    execution = written["config"]["execution"]
    assert (execution["n_cpus"], execution["omp_nthreads"], execution["mem_gb"], execution["verbosity"],
            execution["random_seed"], execution["skull_strip_t1w"]) == (3, None, 5, 2, 4, "skip")  # fmt: skip
    assert parse_args([str(tmp_path), str(tmp_path / "o"), "participant"]).execution.skull_strip_t1w == "force"
    assert written["config"]["selection"]["participant_label"] == ["01", "02"]
    assert written["config"]["selection"]["bids_filters"] == {"acquisition": "mprage"}  # read once, recorded as used
    assert written["config"]["output_dir"] == str((tmp_path / "out").absolute()) and written["config"]["command_line"].startswith("bids_pscore ")
    assert {"bids_pscore", "nipype", "antspyx", "torch"} <= set(written["software"])
    # the workers of this run find it, and read its verbosity
    assert read_worker_verbosity({CONFIG_VARIABLE: str(path)}) == 2
    assert read_worker_verbosity({}) is None
    assert read_worker_verbosity({CONFIG_VARIABLE: str(tmp_path / "gone.json")}) == 0


def test_two_runs_started_together_keep_their_logs_apart(tmp_path):
    args = [str(tmp_path), str(tmp_path / "out"), "participant"]
    assert parse_args(args).run_id != parse_args(args).run_id


@pytest.mark.parametrize(
    ("flags", "shown"),
    [([], {"warning", "result", "info"}), (["-q"], {"warning", "result"}), (["-v"], {"warning", "result", "info", "debug"})],
)
def test_verbosity_decides_which_messages_show(tmp_path, capsys, flags, shown):
    config = parse_args([str(tmp_path), str(tmp_path / "out"), "participant", *flags])
    configure_logging("bids_pscore", config.execution.verbosity)
    log = logging.getLogger("bids_pscore.anything")
    log.debug("debug")
    log.info("info")
    log.log(RESULT, "result")  # a T1w's scores, where the reports are: -q keeps them
    log.warning("warning")
    lines = capsys.readouterr().out.splitlines()
    assert {line.rsplit(" ", 1)[-1] for line in lines} == shown
    assert "bids_pscore: WARNING: warning" in lines and "bids_pscore: result" in lines and ("bids_pscore: info" in lines) == ("info" in shown)


def test_quiet_and_verbose_exclude_each_other(tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse_args([str(tmp_path), str(tmp_path / "out"), "participant", "-q", "-v"])
    assert "not allowed with" in capsys.readouterr().err


@pytest.mark.parametrize("plugin, n_cpus, n_t1w, given, threads", [
    ("MultiProc", 2, 6, None, 1),  # T1w side by side: one CPU each
    ("MultiProc", 8, 3, None, 2),
    ("MultiProc", 16, 1, None, 8),  # one T1w has every CPU, up to the cap
    ("Linear", 2, 6, None, 2),  # one step at a time: all CPUs
    ("SLURM", 4, 10, None, 4),
    ("MultiProc", 2, 6, 3, 3),  # --omp-nthreads stands
])  # fmt: skip
def test_deepbet_threads_follow_the_cpus_each_t1w_has(plugin, n_cpus, n_t1w, given, threads):
    execution = Execution(work_dir=Path("/w"), n_cpus=n_cpus, omp_nthreads=given, mem_gb=None, plugin=plugin, plugin_args=None,
                          stop_on_first_crash=False, clean_workdir=False, verbosity=0, random_seed=None)  # fmt: skip
    assert threads_per_step(execution, n_t1w) == threads
