"""The image quality gate end to end: a generated head is scored; each meaningless image made from
the same head (tests/badinputs.py) is preprocessed, measured and stopped, named by the measure
that stops it, or stopped in preprocessing with its reason, with exit 1 and nothing scored."""

import json

import nibabel as nib
import pytest
from nibabel.processing import resample_to_output

from bids_pscore import bids, qc
from bids_pscore.cli import run as cli
from bids_pscore.derivatives import layout
from bids_pscore.synth.templateheads import write_dataset

from .badinputs import meaningless_images

pytestmark = pytest.mark.slow
TEMPLATE = "MNI152NLin2009aSym"
# the measure that must stop each meaningless image (docs/usage.md, "Quality gate"); others may stop it too
STOPPED_BY = {
    "noise": "template_correlation",
    "binarymask": "wm_gm_ratio",
    "halfhead": "template_correlation",
    "rotated": "template_correlation",
}
# (step, reason) of the two stopped before the gate can measure them: deepbet finds no brain in the block (with --skull-strip-t1w
# auto it took the block for a stripped brain and the normalisation stopped it), and the tissue standardisation needs the white
# matter brighter than the grey (under the percentile the gate stopped them: brain_volume_ml and wm_gm_ratio)
STOPPED_IN_PREPROCESSING = {
    "t2like": ("normalise", "white matter (345.9) is not brighter than grey matter (770.9) after registration: not a T1w contrast"),
    "block": (
        "skullstrip",
        "skull stripping (deepbet) found no brain in the image: it is not a T1w of a head; if it is a brain that "
        "was already skull-stripped, run with --skull-strip-t1w auto",
    ),
}


def test_meaningless_images_are_measured_and_not_scored_while_the_head_is(tmp_path, capsys):
    bids_dir = write_dataset(tmp_path / "bids", n_subjects=1, n_sessions=1, seed=21)
    head_path = next(bids_dir.glob("sub-01/**/*_T1w.nii.gz"))
    # a 2 mm scan, as the IXI heads the gate's bounds were measured on: N4 and skull stripping of the
    # seven images take a third of the time they take at 1 mm (registration, on the grid, the same)
    head = resample_to_output(nib.load(head_path), 2.0, order=1)
    nib.save(head, head_path)
    for name, image in meaningless_images(head, seed=1).items():  # one subject each, named by what it is
        target = bids_dir / f"sub-{name}/ses-1/anat/sub-{name}_ses-1_T1w.nii.gz"
        target.parent.mkdir(parents=True)
        nib.save(image, target)
    out = tmp_path / "out"
    # one run over all seven: MultiProc keeps both CPUs busy (registration, 45 s an image, is most of it)
    code = cli.main([str(bids_dir), str(out), "participant", "-w", str(tmp_path / "work"), "--skip-bids-validation"])
    printed = capsys.readouterr().out
    assert code == 1
    t1w = {t.entities["sub"]: t for t in bids.find_t1w(bids.load_layout(bids_dir, validate=False))}
    assert t1w.keys() == {"01", *STOPPED_BY, *STOPPED_IN_PREPROCESSING}
    for name, (step, reason) in STOPPED_IN_PREPROCESSING.items():
        item = t1w.pop(name)
        assert not (out / layout.output_path(item.entities, "qc")).exists(), name
        assert not any((out / p).exists() for p in layout.session_outputs(item.entities, TEMPLATE, *layout.SCORING_STEPS).values()), name
        assert f"{item.label}: {step}: InputImageError: {reason}" in printed
        assert f"failed at step {step}: InputImageError: " in (out / f"sub-{name}.html").read_text()
    records = {sub: json.loads((out / layout.output_path(item.entities, "qc")).read_text()) for sub, item in t1w.items()}
    assert all(r["Thresholds"] == {k: list(v) for k, v in qc.DEFAULT_BOUNDS.items()} for r in records.values())
    assert records["01"]["Passed"] and records["01"]["Failures"] == [], records["01"]
    assert (out / layout.output_path(t1w["01"].entities, "summary", TEMPLATE)).is_file()
    for name, measure in STOPPED_BY.items():
        record, item = records[name], t1w[name]
        # the record's verdict is that of its own measures, and names the measure that must stop this image
        assert not record["Passed"] and record["Failures"] == qc.failures(record["Measures"]), (name, record)
        assert any(failure.startswith(f"{measure} ") for failure in record["Failures"]), (name, record)
        # nothing of it is scored; the run and its subject's report say what stopped it
        assert not any((out / p).exists() for p in layout.session_outputs(item.entities, TEMPLATE, *layout.SCORING_STEPS).values()), name
        stopped = "; ".join(record["Failures"])
        assert f"{item.label}: left out of scoring, it failed the quality gate: {stopped}" in printed
        assert f"failed at step quality gate: {stopped}" in (out / f"sub-{name}.html").read_text()
    # the group level pools the scored head only
    assert cli.main([str(bids_dir), str(out), "group"]) == 0
    assert "1 sessions of 1 subjects" in capsys.readouterr().out
