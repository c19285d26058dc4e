"""One path to gated grid images (bids_pscore.cohort): the participant level, training and the
normative reference leave out the same T1w under the same bounds, and say so in the same words."""

import logging
import shutil

import nibabel as nib
import numpy as np
import pytest

from bids_pscore import bids, cohort, qc, reference, scoring
from bids_pscore.cli.normative import parse_args
from bids_pscore.derivatives import layout
from bids_pscore.model.preprocessing import PreprocParams
from bids_pscore.preprocess import steps

from .test_session_outputs import sunk_session
from .test_site_reference import site_output

TEMPLATE = "MNI152NLin2009aSym"
SAID = ", it failed the quality gate: "


def test_a_tightened_bound_leaves_a_head_out_of_the_reference_as_out_of_scoring_and_training(tmp_path, caplog):
    out, _ = site_output(tmp_path, ["site00", "site01"], [40.0, 50.0])
    # sub-site01's brain mask in its own space loses every fourth slice: 1405 ml, within the default
    # bounds (800-2400 ml), below a lower bound tightened to 1600 ml
    native = out / layout.output_path({"sub": "site01"}, "mask_native", TEMPLATE)
    mask = np.asarray(nib.load(native).dataobj).copy()
    mask[::4] = 0
    nib.Nifti1Image(mask, nib.load(native).affine).to_filename(native)
    t1w = bids.find_t1w(bids.load_layout(tmp_path / "raw", validate=False))
    assert all(cohort.gate_record(t, out, TEMPLATE, qc.DEFAULT_BOUNDS)["Passed"] for t in t1w)
    option = '{"brain_volume_ml": [1600, 2400]}'  # as a user gives it
    bounds = parse_args(["model", str(out), "new_model", "--qc-thresholds", option]).qc_thresholds
    assert bounds == qc.parse_bounds(option) != qc.DEFAULT_BOUNDS
    failing = t1w[1]  # sub-site01
    bundle = cohort.load_model()

    with caplog.at_level(logging.WARNING, logger="bids_pscore"):
        kept, source_dir, _ = reference.healthy_inputs(out, cohort.preprocessing_params(bundle.metadata), tmp_path / "work", None, None,
                                                       bounds, validate=False)  # fmt: skip
    assert [t.label for t in kept] == ["sub-site00"] and source_dir == out
    (left_out,) = (r.getMessage() for r in caplog.records if SAID in r.getMessage())
    assert left_out.startswith(f"sub-site01: left out of the reference{SAID}brain_volume_ml 1405.2 is below 1600 (")

    # the participant level under the same bounds: the same head is not scored, said in the same words
    caplog.clear()
    scored = shutil.copytree(out, tmp_path / "participant")
    with caplog.at_level(logging.WARNING, logger="bids_pscore"):
        results, stopped = scoring.score_sessions([failing], scored, bundle, TEMPLATE, bounds, tmp_path / "logs")
    (not_scored,) = (r.getMessage() for r in caplog.records if SAID in r.getMessage())
    assert not results and not_scored == left_out.replace("out of the reference", "out of scoring")
    assert stopped[failing.label].failed_step == "quality gate" and not_scored.endswith(SAID + stopped[failing.label].message)
    # and training's gate keeps what the reference kept
    assert cohort.passing_quality_gate(t1w, out, TEMPLATE, bounds, "training") == kept


def test_the_gate_measures_the_brains_own_contrast_which_the_tissue_standardisation_hides(tmp_path):
    # white matter 5% brighter than grey: no T1w contrast, below the gate's 1.1; the tissue
    # standardisation puts the two at 0.758 and 0.941 (1.24) whatever they were
    grey, white = steps.tissue_on_grid(TEMPLATE)
    mask = (grey + white > 0.5).astype(np.uint8)
    smoothed = np.where(white > 0.9, 105.0, 100.0) * mask
    image, intensity_map = steps.standardise(smoothed, mask, PreprocParams(intensity_standardisation="tissue"))
    assert np.median(image[(white > 0.9) & (mask > 0)]) / np.median(image[(grey > 0.6) & (white < 0.2) & (mask > 0)]) == pytest.approx(0.941 / 0.758)
    item = sunk_session(tmp_path / "out", tmp_path / "scratch", {"sub": "01"}, image, mask, intensity_map)
    record = cohort.gate_record(item, tmp_path / "out", TEMPLATE, qc.DEFAULT_BOUNDS)
    assert record["Measures"]["wm_gm_ratio"] == 1.05 and "wm_gm_ratio 1.05 is below 1.1" in record["Failures"]
