"""Ctrl-C stops a run (exit 130, no traceback), under MultiProc and under Linear, where nipype
would take the interrupt for a failed step and go on; kill -9 while a derivative is written leaves
only its hidden temporary file, which the next run removes; the next run goes on from the steps
that finished."""

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bids_pscore import fileio
from bids_pscore.derivatives import layout
from bids_pscore.errors import EXIT_INTERRUPTED
from bids_pscore.synth.templateheads import write_dataset

from .helpers import half_written, killed_while_writing

pytestmark = pytest.mark.slow

APP = [str(Path(sys.executable).parent / "bids_pscore")]
# the app, killed by SIGKILL once the first derivative's temporary file is written (the derivatives sink
# runs in the app's own process, after the workflow's steps): the kill falls in the middle of a write
KILLED_WRITING_A_DERIVATIVE = [sys.executable, "-c", killed_while_writing(
    "import sys\nfrom bids_pscore.cli import run\nsys.exit(run.main(sys.argv[1:]))", f"{os.sep}anat{os.sep}")]  # fmt: skip


def start(bids_dir, out_dir, work_dir, *extra, app=APP):
    return subprocess.Popen([*app, str(bids_dir), str(out_dir), "participant", "-w", str(work_dir), "--skip-bids-validation", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip


def read_until(job, words, timeout=600):
    """The job's output up to the first line holding ``words``."""
    lines, deadline = [], time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(job.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=5):
                continue
            line = job.stdout.readline()
            if not line:
                break
            lines.append(line)
            if words in line:
                return "".join(lines)
    job.kill()
    raise AssertionError(f"no line with {words!r} in:\n{''.join(lines)[-3000:]}")


def stopped_within(job, seconds):
    """The rest of the output, once the job has ended; fails if it takes longer than ``seconds``."""
    try:
        rest, _ = job.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        raise AssertionError(f"still running {seconds} s after the signal") from None
    return rest


def killed_within(job, seconds):
    """The output of a job that kills itself, once it has; its MultiProc workers, which a kill -9 of
    the app alone leaves running and holding its output open, are killed then."""
    try:
        job.wait(timeout=seconds)  # its output, a few kilobytes, fits in the pipe meanwhile
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
    return job.stdout.read()


def test_ctrl_c_stops_kill_leaves_its_temporary_file_the_next_run_removes_it_and_goes_on(tmp_path):
    bids_dir = write_dataset(tmp_path / "bids", n_subjects=1, n_sessions=1, seed=5)
    out, work = tmp_path / "out", tmp_path / "work"

    # Ctrl-C in a terminal signals the whole process group: the app and MultiProc's workers
    job = start(bids_dir, out, work)
    read_until(job, "n4           done")
    os.killpg(job.pid, signal.SIGINT)
    rest = stopped_within(job, 30)
    assert job.returncode == EXIT_INTERRUPTED, rest
    assert "interrupted (Ctrl-C)" in rest and "run the same command again" in rest and "Traceback" not in rest
    assert not list(layout.summary_files(out)) and not half_written(out)

    # under Linear the step runs in the app's own process, where nipype would swallow the interrupt
    # (Python takes a signal once a long call into C returns: skull stripping may still finish)
    job = start(bids_dir, out, work, "--nipype-plugin", "Linear")
    before = read_until(job, "n4           reused")
    assert "load         reused from the work folder" in before  # the first run's finished steps were kept
    os.kill(job.pid, signal.SIGINT)
    rest = stopped_within(job, 60)
    assert job.returncode == EXIT_INTERRUPTED, rest
    assert "register" not in rest and "FAILED" not in rest and "Traceback" not in rest

    # kill -9 cannot be caught: the derivative being written stays a hidden temporary file, never its final name
    job = start(bids_dir, out, work, app=KILLED_WRITING_A_DERIVATIVE)
    rest = killed_within(job, 900)
    assert job.returncode == -signal.SIGKILL, rest[-3000:]
    (left,) = half_written(out)
    writing = fileio.TEMPORARY_NAME.fullmatch(left.name)
    assert left.parent.name == "anat" and writing and not (left.parent / writing["name"]).exists(), left
    assert not list(layout.summary_files(out))

    job = start(bids_dir, out, work)
    rest = stopped_within(job, 900)
    assert job.returncode == 0, rest[-3000:]
    assert "removed 1 temporary file(s) that killed runs left in" in rest
    for step in ("load", "n4", "skullstrip"):  # taken from the work folder, not computed again
        assert f"{step:<12} reused from the work folder" in rest
    assert "1 of 1 T1w done" in rest and len(list(layout.summary_files(out))) == 1 and not half_written(out)
