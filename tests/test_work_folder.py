"""The work folder follows the code: a changed step or tool gets a workflow folder of its own, so
nipype (which caches by inputs) never hands it the results of the old code; --clean-workdir
removes every cached run and nothing else."""

import json
import os
import re
import shutil
from pathlib import Path

import networkx as nx
import nibabel as nib
import numpy as np
import pytest
from nipype.pipeline import engine as pe

from bids_pscore import __version__, execution
from bids_pscore.cli import run as cli
from bids_pscore.derivatives import layout
from bids_pscore.preprocess import workflow
from bids_pscore.preprocess.interfaces import LoadT1w
from bids_pscore.synth.templateheads import write_dataset

from .test_batch import participant_wf


def test_a_change_to_a_steps_code_or_a_tool_renames_the_workflow_and_its_folder(tmp_path, monkeypatch):
    work = Path("/work")
    name = workflow.workflow_name(work)
    assert name.startswith(f"bids_pscore_{re.sub(r'[^A-Za-z0-9]', '_', __version__)}_") and name.endswith("_wf")
    assert re.fullmatch(r"\w+", name)  # nipype takes no other character in a workflow's name
    assert workflow.workflow_name(work) == name and participant_wf().name == name
    code = [shutil.copy(path, tmp_path / path.name) for path in workflow.STEP_CODE]
    monkeypatch.setattr(workflow, "STEP_CODE", [Path(p) for p in code])
    assert workflow.workflow_name(work) == name  # the same code, read from elsewhere
    steps = next(p for p in workflow.STEP_CODE if p.name == "steps.py")
    steps.write_text(steps.read_text().replace("def ", "def  ", 1))  # one character more
    changed = workflow.workflow_name(work)
    assert changed != name
    monkeypatch.setattr(workflow, "version", lambda package: "9.9" if package == "antspyx" else "1.0")
    assert workflow.workflow_name(work) not in (name, changed)


def test_a_work_folder_reached_by_another_path_gets_a_workflow_folder_of_its_own(tmp_path):
    """nipype's cached results name their files by absolute path: a moved work folder must not reuse them."""
    (tmp_path / "work").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "work")
    name = workflow.workflow_name(tmp_path / "work")
    assert workflow.workflow_name(tmp_path / "link") == name  # the same folder
    moved = workflow.workflow_name(tmp_path / "moved")
    assert moved != name and moved.rsplit("_", 2)[0] == name.rsplit("_", 2)[0]  # the same code


@pytest.mark.slow
def test_a_rerun_in_a_moved_work_folder_runs_again_without_a_traceback(tmp_path, capsys):
    """A participant run with -w W, then W moved to W2 and the same run with -w W2 (nipype's cached
    results there point into W: a TraitError traceback before)."""
    bids_dir = write_dataset(tmp_path / "bids", n_subjects=1, n_sessions=1, seed=3)
    args = [str(bids_dir), str(tmp_path / "out"), "participant", "--skip-bids-validation", "--n-cpus", "1"]
    assert cli.main([*args, "-w", str(tmp_path / "W")]) == 0
    (summary,) = layout.summary_files(tmp_path / "out")
    first = json.loads(summary.read_text())["WholeBrainPScore"]
    capsys.readouterr()
    (tmp_path / "W").rename(tmp_path / "W2")
    code = cli.main([*args, "-w", str(tmp_path / "W2")])
    printed = capsys.readouterr()
    assert code == 0 and "Traceback" not in printed.out + printed.err, printed.out[-3000:] + printed.err[-3000:]
    assert "reached by another path" in printed.out
    assert json.loads(summary.read_text())["WholeBrainPScore"] == pytest.approx(first)


def test_the_participant_graph_holds_every_step_in_order():
    # no image is read: a fast check of the whole graph (about 0.1 s; benchmarks/participant.py times the runs)
    wf = participant_wf()
    assert len(wf.list_node_names()) == 12  # nine steps of one T1w, its input and output nodes and its sink
    graph = wf._create_flat_graph()
    order = [node.name for node in nx.topological_sort(graph)]
    chain = ["load", "n4", "skullstrip", "register", "resample", "smooth", "normalise"]
    assert [name for name in order if name in chain] == chain
    sink = next(node for node in graph if node.name.endswith("_sink"))
    assert {node.name for node in nx.ancestors(graph, sink)} >= {*chain, "mask_to_source", "reportlets"}


def test_clean_workdir_removes_cached_runs_of_every_version_only(tmp_path, capsys):
    for old in ("bids_pscore_0_1_0_0123456789ab_wf", "bids_pscore_0_2_0_ba9876543210_wf"):
        (tmp_path / old / "sub_01_wf" / "n4").mkdir(parents=True)
    (tmp_path / "someone_elses").mkdir()
    (tmp_path / "notes.txt").write_text("keep")
    execution.clean_work_dir(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "someone_elses"]
    assert capsys.readouterr().out.count("--clean-workdir: removing") == 2


def test_a_t1w_whose_file_time_changed_keeps_its_cached_steps(tmp_path):
    """nipype hashes input files by modification time unless told otherwise: a dataset copied without its
    times, or restored, ran every step again."""
    t1w = tmp_path / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(np.arange(8 * 9 * 10, dtype=np.float32).reshape(8, 9, 10), np.eye(4)), t1w)
    execution.configure_nipype(tmp_path / "crash", verbosity=0)

    def run_load():  # a new node each time, as a new run builds (a node keeps the hash it computed once)
        node = pe.Node(LoadT1w(in_file=str(t1w)), name="load", base_dir=str(tmp_path / "work"))
        return Path(node.run().outputs.out_file).stat().st_mtime_ns

    first = run_load()
    os.utime(t1w, ns=(first + 10**9, first + 10**9))  # the same bytes, another time
    assert run_load() == first  # not run again
