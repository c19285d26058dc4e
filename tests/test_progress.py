"""The progress lines and the outcome of each T1w, fed the status calls nipype's plugins make."""

import io
import os
import time
from types import SimpleNamespace

from bids_pscore.progress import Progress


def node(ident, step, output_dir="/nonexistent"):
    name = f"{ident}_sink" if step == "sink" else step
    full = f"bids_pscore_wf.{ident}_sink" if step == "sink" else f"bids_pscore_wf.{ident}_wf.{step}"
    return SimpleNamespace(name=name, fullname=full, output_dir=lambda: output_dir)


def test_steps_ended_without_a_start_count_unless_they_follow_a_failure():
    stream = io.StringIO()
    progress = Progress({"sub_01": "sub-01", "sub_02": "sub-02"}, stream=stream)
    # MultiProc: a cached step and the sink (run in the main process) end without a start; they did run
    progress(node("sub_01", "n4"), "end")
    progress(node("sub_01", "sink"), "end")
    # Linear: a step fails, then the steps after it are reported ended without having started
    progress(node("sub_02", "n4"), "start")
    progress(node("sub_02", "n4"), "exception")
    progress(node("sub_02", "register"), "end")
    progress(node("sub_02", "sink"), "end")
    lines = stream.getvalue().splitlines()
    assert [o.status for o in progress.outcomes.values()] == ["ok", "failed"]
    assert progress.outcomes["sub_02"].failed_step == "n4"
    assert len(lines) == 3 and "sub-02" in lines[2] and "FAILED" in lines[2]


def test_a_step_whose_result_predates_the_run_is_said_to_be_reused(tmp_path):
    earlier, now = tmp_path / "n4", tmp_path / "skullstrip"
    for folder in (earlier, now):
        folder.mkdir()
    (earlier / "result_n4.pklz").write_bytes(b"")
    os.utime(earlier / "result_n4.pklz", (time.time() - 60, time.time() - 60))
    stream = io.StringIO()
    progress = Progress({"sub_01": "sub-01"}, stream=stream)
    (now / "result_skullstrip.pklz").write_bytes(b"")  # written by this run
    progress(node("sub_01", "n4", earlier), "start")
    progress(node("sub_01", "n4", earlier), "end")
    progress(node("sub_01", "skullstrip", now), "start")
    progress(node("sub_01", "skullstrip", now), "end")
    lines = stream.getvalue().splitlines()
    assert "n4           reused from the work folder" in lines[0]
    assert "skullstrip   done (" in lines[1]
