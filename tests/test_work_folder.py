"""The work folder follows the code: a changed step or tool gets a workflow folder of its own, so
nipype (which caches by inputs) never hands it the results of the old code; --clean-workdir
removes every cached run and nothing else."""

import re
import shutil
from pathlib import Path

import networkx as nx

from bids_pscore import __version__, execution
from bids_pscore.preprocess import workflow

from .test_batch import participant_wf


def test_a_change_to_a_steps_code_or_a_tool_renames_the_workflow_and_its_folder(tmp_path, monkeypatch):
    name = workflow.workflow_name()
    assert name.startswith(f"bids_pscore_{re.sub(r'[^A-Za-z0-9]', '_', __version__)}_") and name.endswith("_wf")
    assert re.fullmatch(r"\w+", name)  # nipype takes no other character in a workflow's name
    assert workflow.workflow_name() == name and participant_wf().name == name
    code = [shutil.copy(path, tmp_path / path.name) for path in workflow.STEP_CODE]
    monkeypatch.setattr(workflow, "STEP_CODE", [Path(p) for p in code])
    assert workflow.workflow_name() == name  # the same code, read from elsewhere
    steps = next(p for p in workflow.STEP_CODE if p.name == "steps.py")
    steps.write_text(steps.read_text().replace("def ", "def  ", 1))  # one character more
    changed = workflow.workflow_name()
    assert changed != name
    monkeypatch.setattr(workflow, "version", lambda package: "9.9" if package == "antspyx" else "1.0")
    assert workflow.workflow_name() not in (name, changed)


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
