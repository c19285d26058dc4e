"""The Brainlife wrapper (brainlife/main) on a task folder as Brainlife prepares one, with a
stand-in for singularity that runs the command here instead of in the image."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bids_pscore.synth.templateheads import write_dataset

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def test_main_scores_the_t1w_of_config_json_and_reports_to_brainlife(tmp_path):
    bids_dir = write_dataset(tmp_path / "synth", n_subjects=1, n_sessions=1, seed=11)
    t1w = next(bids_dir.glob("sub-*/**/*_T1w.nii.gz"))
    upstream = tmp_path / "5f3c0a2b" / "t1.nii.gz"  # where Brainlife keeps an input dataset
    upstream.parent.mkdir()
    shutil.copyfile(t1w, upstream)
    task = tmp_path / "task"
    task.mkdir()
    config = json.loads((REPO / "brainlife/config.json.sample").read_text())
    config.update(t1=str(upstream), n_cpus=2)
    config["_inputs"][0]["meta"] = {"subject": "CC-01", "session": "1"}  # not a BIDS label as it is
    (task / "config.json").write_text(json.dumps(config))
    # singularity exec -e IMAGE python3 -  ->  python3 - here
    stand_in = tmp_path / "bin" / "singularity"
    stand_in.parent.mkdir()
    stand_in.write_text('#!/bin/sh\n[ "$1 $2" = "exec -e" ] || exit 99\nshift 3\nexec "$@"\n')
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{stand_in.parent}:{Path(sys.executable).parent}:{os.environ['PATH']}"}

    result = subprocess.run([str(REPO / "brainlife/main")], cwd=task, env=env, capture_output=True, text=True)

    assert result.returncode == 0, result.stderr[-2000:]
    summary_path = task / "output/sub-CC01/ses-1/anat"
    summary = json.loads(next(summary_path.glob("*_desc-summary_pscore.json")).read_text())
    product = json.loads((task / "product.json").read_text())
    assert product["pscore"]["WholeBrainPScore"] == summary["WholeBrainPScore"]
    score, regions, warning = product["brainlife"]
    assert score == {
        "type": "info",
        "msg": f"whole-brain P-score {summary['WholeBrainPScore']:.1f} of 246; "
        f"AD probability {summary['ADProbability']:.2f} ({summary['PredictedClass']})",
    }
    assert regions["msg"].startswith(f"{summary['NumberOfDegenerativeRegions']} degenerative regions")
    assert warning["type"] == "warning" and "not for research or clinical use" in warning["msg"]  # the demo model
    assert (task / "output/sub-CC01.html").is_file() and not (task / "work").exists()
    assert len((task / "product.json").read_bytes()) < 4096
