"""The image quality gate end to end: a generated head is scored; noise and a T2-like image made
from the same head are preprocessed, measured and stopped, with exit 1 and nothing scored."""

import json

import nibabel as nib
import pytest

from bids_pscore import bids
from bids_pscore.cli import run as cli
from bids_pscore.synth import write_dataset

from .badinputs import meaningless_images

pytestmark = pytest.mark.slow
TEMPLATE = "MNI152NLin2009aSym"


def test_meaningless_images_are_measured_and_not_scored_while_the_head_is(tmp_path, capsys):
    bids_dir = write_dataset(tmp_path / "bids", n_subjects=1, n_sessions=1, seed=21)
    head = next(bids_dir.glob("sub-01/**/*_T1w.nii.gz"))
    bad = meaningless_images(nib.load(head), seed=1)
    for sub, name in (("02", "noise"), ("03", "t2like")):
        target = bids_dir / f"sub-{sub}/ses-1/anat/sub-{sub}_ses-1_T1w.nii.gz"
        target.parent.mkdir(parents=True)
        nib.save(bad[name], target)
    out = tmp_path / "out"
    code = cli.main([str(bids_dir), str(out), "participant", "-w", str(tmp_path / "work"), "--skip-bids-validation"])
    printed = capsys.readouterr().out
    assert code == 1
    for t1w in bids.find_t1w(bids.load_layout(bids_dir, validate=False)):
        record = json.loads((out / bids.output_path(t1w.entities, "qc")).read_text())
        summary = out / bids.output_path(t1w.entities, "summary", TEMPLATE)
        if t1w.entities["sub"] == "01":
            assert record["Passed"] and summary.is_file()
        else:
            assert not record["Passed"] and not summary.exists(), record
            assert f"{t1w.label}: NOT SCORED, failed the quality gate" in printed
            report = (out / f"sub-{t1w.entities['sub']}.html").read_text()
            assert "failed at step quality gate" in report
    noise = json.loads((out / bids.output_path({"sub": "02", "ses": "1"}, "qc")).read_text())
    t2like = json.loads((out / bids.output_path({"sub": "03", "ses": "1"}, "qc")).read_text())
    assert any(f.startswith("template_correlation") for f in noise["Failures"])
    assert any(f.startswith("wm_gm_ratio") for f in t2like["Failures"])
    # the group level pools the scored head only
    assert cli.main([str(bids_dir), str(out), "group"]) == 0
    assert "1 sessions of 1 subjects" in capsys.readouterr().out
