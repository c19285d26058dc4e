"""Two jobs started together on one work folder and one output folder (one job per subject, as
on a cluster) both finish, with the scores a single run gives."""

import subprocess
import sys
from pathlib import Path

import pytest

from bids_pscore.derivatives import layout
from bids_pscore.synth.templateheads import write_dataset

pytestmark = pytest.mark.slow


def derivatives_of(out_dir):
    """Relative path -> bytes of every file of the sessions' anat folders."""
    return {p.relative_to(out_dir): p.read_bytes() for p in out_dir.glob("sub-*/**/anat/*") if p.is_file()}


def test_one_job_per_subject_sharing_the_work_folder(tmp_path):
    bids_dir = write_dataset(tmp_path / "bids", n_subjects=2, n_sessions=1, seed=8)
    app = str(Path(sys.executable).parent / "bids_pscore")
    jobs = [subprocess.Popen([app, str(bids_dir), str(tmp_path / "out"), "participant", "--participant-label", sub,
                              "-w", str(tmp_path / "work"), "--n-cpus", "1", "--skip-bids-validation"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for sub in ("01", "02")]  # fmt: skip
    outputs = [job.communicate()[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], "\n".join(o[-1500:] for o in outputs)
    # one run of both subjects with a work folder of its own writes the same derivatives, to the byte
    alone = subprocess.run([app, str(bids_dir), str(tmp_path / "alone"), "participant", "-w", str(tmp_path / "work_alone"),
                            "--skip-bids-validation"], capture_output=True, text=True)  # fmt: skip
    assert alone.returncode == 0, alone.stdout[-1500:]
    shared, single = derivatives_of(tmp_path / "out"), derivatives_of(tmp_path / "alone")
    assert len(list(layout.summary_files(tmp_path / "out"))) == 2 and sorted(shared) == sorted(single)
    assert [name for name in shared if shared[name] != single[name]] == []
    # the shared template files were written once, beside nothing half-written
    templates = list((tmp_path / "work").glob("bids_pscore_*_wf/templates/**/*"))
    assert sorted(p.name for p in templates if p.is_file()) == ["template_grid.nii.gz", "template_grid_2mm.nii.gz"]
