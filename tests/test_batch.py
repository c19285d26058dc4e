"""Cluster plugins: what nipype's SLURM plugin reads from the environment, and the resources each
step's job asks for, checked against a stand-in sbatch that records its command line."""

import os
import stat
from pathlib import Path

import pytest

from bids_pscore import bids, execution
from bids_pscore.cli.run import parse_args
from bids_pscore.model.preprocessing import PreprocParams
from bids_pscore.preprocess import init_participant_wf
from bids_pscore.preprocess.workflow import workflow_name


def participant_wf(omp_nthreads=2):
    t1w = bids.T1wInput(Path("/data/sub-01/anat/sub-01_T1w.nii.gz"), "sub-01/anat/sub-01_T1w.nii.gz", {"sub": "01"})
    templates = {"template": "/work/templates/grid.nii.gz", "coarse_template": "/work/templates/coarse.nii.gz"}
    return init_participant_wf([t1w], "/out", PreprocParams(), templates, workflow_name(Path("/work")), omp_nthreads=omp_nthreads)


def test_logname_is_set_when_missing_and_kept_when_given(monkeypatch):
    environ = {}
    execution.batch_environment(environ)
    assert environ["LOGNAME"]
    environ = {"LOGNAME": "alice"}
    execution.batch_environment(environ)
    assert environ == {"LOGNAME": "alice"}
    # an arbitrary uid in a container: no passwd entry, no USER
    monkeypatch.setattr(execution.getpass, "getuser", lambda: (_ for _ in ()).throw(KeyError("uid 12345")))
    environ = {}
    execution.batch_environment(environ)
    assert environ["LOGNAME"] == "bids_pscore"


def test_each_slurm_job_asks_for_its_steps_cpus_and_memory():
    wf = participant_wf(omp_nthreads=2)
    execution.job_resources(wf, "SLURM", {"sbatch_args": "-p short"})
    args = {name.split(".")[-1]: wf.get_node(name).plugin_args.get("sbatch_args") for name in wf.list_node_names()}
    assert args["skullstrip"] == "--cpus-per-task=2 --mem=1332M"  # 1.3 GB measured, deepbet's threads
    assert args["n4"] == "--cpus-per-task=1 --mem=1229M" and args["register"] == "--cpus-per-task=1 --mem=1127M"
    assert args["smooth"] == f"--cpus-per-task=1 --mem={int(execution.MIN_JOB_MEM_GB * 1024)}M"
    assert args["sub_01_sink"] is None  # runs in the main process, never submitted


def test_what_the_user_asks_of_sbatch_is_left_to_them_and_other_plugins_are_untouched():
    wf = participant_wf()
    execution.job_resources(wf, "SLURM", {"sbatch_args": "-p short --mem 4G -c 4"})
    assert all("sbatch_args" not in wf.get_node(n).plugin_args for n in wf.list_node_names())
    wf = participant_wf()
    execution.job_resources(wf, "SLURM", {"sbatch_args": "--mem=8G"})
    assert wf.get_node("sub_01_wf.n4").plugin_args["sbatch_args"] == "--cpus-per-task=1"
    wf = participant_wf()
    execution.job_resources(wf, "MultiProc", None)
    assert all(not wf.get_node(n).plugin_args for n in wf.list_node_names())


def test_nipypes_slurm_plugin_submits_with_them_without_logname(tmp_path, monkeypatch):
    from nipype.pipeline.plugins.slurm import SLURMPlugin

    record = tmp_path / "sbatch_args.txt"
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.parent.mkdir()
    sbatch.write_text(f'#!/bin/sh\necho "$@" > {record}\necho "Submitted batch job 42"\n')
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{sbatch.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("LOGNAME", raising=False)
    wf = participant_wf(omp_nthreads=2)
    execution.batch_environment(os.environ)
    execution.job_resources(wf, "SLURM", {"sbatch_args": "-p short"})
    node = wf.get_node("sub_01_wf.skullstrip")
    script = tmp_path / "batch" / "job.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    job = SLURMPlugin(plugin_args={"sbatch_args": "-p short"})._submit_batchtask(str(script), node)
    assert job == 42
    submitted = record.read_text().split()
    assert submitted[:3] == ["-p", "short", "--cpus-per-task=2"] and "--mem=1332M" in submitted


@pytest.mark.parametrize("plugin", ["SLURMGraph", "SGEGraph", "PBSGraph"])
def test_graph_plugins_are_not_offered(plugin, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args([str(tmp_path), str(tmp_path / "out"), "participant", "--nipype-plugin", plugin])
    assert stop.value.code == 2 and "invalid choice" in capsys.readouterr().err
