"""The progress lines and the outcome of each T1w, fed the status calls nipype's plugins make."""

import io
from types import SimpleNamespace

from bids_pscore.progress import Progress


def node(ident, step):
    name = f"{ident}_sink" if step == "sink" else step
    full = f"bids_pscore_wf.{ident}_sink" if step == "sink" else f"bids_pscore_wf.{ident}_wf.{step}"
    return SimpleNamespace(name=name, fullname=full)


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
