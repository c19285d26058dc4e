"""A site's own reference end to end (issue 40): bids_pscore-normative on an output folder of the
participant level, its class calibrated on the site's controls, and what the bundle then does."""

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_pscore import errors, pscore
from bids_pscore.atlas import atlas_on_grid
from bids_pscore.cli.normative import main as normative_main
from bids_pscore.cohort import DEMO_MODEL
from bids_pscore.derivatives import layout
from bids_pscore.inference import score_image
from bids_pscore.model.bundle import load_bundle
from bids_pscore.preprocess.steps import template_on_grid

from .helpers import make_bids, small_image

pytestmark = pytest.mark.slow


def site_output(root, labels, ages, seed=0):
    """A raw BIDS dataset of ``labels`` (ages and sexes in participants.tsv) and an output folder of
    the participant level that holds their grid images as the demo model's preprocessing would have
    made them: the template's own image, each head brighter or darker as a whole and noisy, so that
    they pass the quality gate and differ as heads do."""
    rng = np.random.default_rng(seed)
    params = json.loads((DEMO_MODEL / "model.json").read_text())["preprocessing"]
    template = params["template"]
    participants = pd.DataFrame({"participant_id": [f"sub-{s}" for s in labels], "age": ages,
                                 "sex": ["F" if k % 2 else "M" for k in range(len(labels))]})  # fmt: skip
    raw = make_bids(root / "raw", {f"sub-{s}/anat/sub-{s}_T1w.nii.gz": small_image(seed=k) for k, s in enumerate(labels)}
                    | {"participants.tsv": participants.to_csv(sep="\t", index=False, na_rep="n/a")})  # fmt: skip
    out = root / "out"
    image, mask = (np.asarray(i.dataobj, np.float32) for i in template_on_grid(template))
    affine = template_on_grid(template)[0].affine
    for s in labels:
        entities = {"sub": s}
        paths = layout.session_outputs(entities, template, layout.PREPROCESSING)
        head = image * rng.uniform(0.95, 1.05) * (1 + rng.normal(0, 0.03, image.shape)) * (mask > 0)
        for key, data in (("t1w_grid", head), ("mask_grid", mask), ("mask_native", mask)):
            (out / paths[key]).parent.mkdir(parents=True, exist_ok=True)
            nib.Nifti1Image(data.astype(np.float32), affine).to_filename(out / paths[key])
        sidecar = out / layout.sidecar_path(paths["t1w_grid"])
        sidecar.write_text(json.dumps({"PreprocessingParameters": params}))
    (out / "dataset_description.json").write_text(json.dumps({
        "Name": "site", "BIDSVersion": "1.10.0", "DatasetType": "derivative", "GeneratedBy": [{"Name": "bids_pscore"}],
        "DatasetLinks": {"raw": str(raw)},
    }))  # fmt: skip
    return out, [(np.asarray(nib.load(out / layout.session_outputs({"sub": s}, template, layout.PREPROCESSING)["t1w_grid"]).dataobj, np.float32),
                  mask > 0) for s in labels]  # fmt: skip


def test_a_site_reference_from_its_controls_calibrates_the_flags_and_the_class(tmp_path, capsys):
    labels = [f"site{k:02d}" for k in range(22)]
    ages = [20.0 + 2 * k for k in range(21)] + [np.nan]  # the last has no age: left out, not the age adjustment
    out, images = site_output(tmp_path, labels, ages)
    code = normative_main([str(DEMO_MODEL), str(out), str(tmp_path / "site_model"), "-w", str(tmp_path / "work"), "--calibrate-class",
                           "--skip-bids-validation"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    bundle = load_bundle(tmp_path / "site_model")
    record = bundle.metadata["normative"]
    assert record["reference"]["left_out_without_age_or_sex"] == ["site21"] and record["reference"]["images"] == 21
    assert bundle.normative.covariates.age and bundle.normative.covariates.sex and "pscore" in bundle.normative.regions
    # the offset by hand: minus the 0.97 quantile of the 21 kept heads' meta-classifier logits
    grid_atlas = atlas_on_grid()
    sizes = pscore.region_sizes(grid_atlas)
    reference = pscore.Reference.from_dict(bundle.metadata["reference"])
    logits = np.array([score_image(bundle.ensemble, reference, image, mask, grid_atlas, sizes).image_logit for image, mask in images[:21]])
    assert bundle.class_offset == pytest.approx(-np.quantile(logits, 0.97), abs=1e-5)
    assert record["class_calibration"]["called_ad_before"] == int((logits >= 0).sum())
    # with the offset, 20 of the 21 heads are called control (the 0.97 quantile lies between the 20th and the 21st);
    # the AD probability is sigmoid(logit + offset)
    moved = [score_image(bundle.ensemble, reference, image, mask, grid_atlas, sizes, bundle.class_offset) for image, mask in images[:21]]
    assert sum(m.ad_probability < pscore.AD_THRESHOLD for m in moved) == 20
    assert moved[0].ad_probability == pytest.approx(1 / (1 + np.exp(-(logits[0] + bundle.class_offset))), rel=1e-6)
    assert 0.0 <= record["class_calibration"]["heldout_called_control"] <= 1.0
    # the demo model's own bundle moves nothing
    assert load_bundle(DEMO_MODEL).class_offset == 0.0
    # the class is now set on the site's heads: they replace the demo's training scanner as the class domain
    domain = bundle.metadata["class_domain"]
    assert domain["from_class_calibration"] is True and domain["reference"] == record["reference"]
    np.testing.assert_array_equal(bundle.class_domain.regions["grey_level"].coef, bundle.normative.regions["grey_level"].coef)
    assert domain["sha256"] != load_bundle(DEMO_MODEL).metadata["class_domain"]["sha256"]


def test_the_first_reference_of_a_model_becomes_its_class_domain_and_a_later_one_keeps_it(tmp_path, capsys):
    from .test_class_domain import without_class_domain

    # subjects of the demo's training split: their P-scores are in-sample, so no image is scored (the grey level only)
    trained_on = sorted(s for s, part in json.loads((DEMO_MODEL / "model.json").read_text())["training"]["split"].items() if part == "train")
    old = without_class_domain(DEMO_MODEL, tmp_path / "old")
    said = []
    for run, (source, labels) in enumerate(((old, trained_on[:20]), (tmp_path / "first", trained_on[20:40]))):
        out, _ = site_output(tmp_path / f"site{run}", labels, [30.0 + k for k in range(20)], seed=run)
        code = normative_main([str(source), str(out), str(tmp_path / ("first", "second")[run]), "-w", str(tmp_path / f"work{run}"),
                               "--skip-bids-validation"])  # fmt: skip
        captured = capsys.readouterr()
        assert code == 0, captured.err
        said.append(captured.out)
    first, second = (load_bundle(tmp_path / name).metadata for name in ("first", "second"))
    # the model had no domain: its first reference is taken as its training scanner's
    first_bundle = load_bundle(tmp_path / "first")
    np.testing.assert_array_equal(first_bundle.class_domain.regions["grey_level"].coef, first_bundle.normative.regions["grey_level"].coef)
    assert first["class_domain"]["from_class_calibration"] is False
    assert first["class_domain"]["reference"]["images"] == 20
    # the second reference, without --calibrate-class, leaves the class and its domain as they were
    assert second["class_domain"] == first["class_domain"] and second["normative"]["sha256"] != first["normative"]["sha256"]
    assert "the model had none" in said[0] and "class domain carried over unchanged: 20 images of test" in said[1]


def test_the_class_is_not_calibrated_on_heads_the_model_trained_on(tmp_path, capsys):
    # validation subjects: the meta-classifier was fitted on them, so their logits are in-sample though no base network saw them
    trained_on = sorted(s for s, part in json.loads((DEMO_MODEL / "model.json").read_text())["training"]["split"].items() if part == "validation")
    out, _ = site_output(tmp_path, trained_on[:2], [40.0, 50.0])
    code = normative_main([str(DEMO_MODEL), str(out), str(tmp_path / "site_model"), "-w", str(tmp_path / "work"), "--calibrate-class",
                           "--skip-bids-validation"])  # fmt: skip
    assert code == errors.EXIT_USAGE and "--calibrate-class needs controls the model was not fitted on" in capsys.readouterr().err
    assert not (tmp_path / "site_model").exists() or not any((tmp_path / "site_model").iterdir())
