"""The class domain (issue 41): a scan unlike the heads the model's class was set on (another scanner)
gets its AD probability marked not reliable in the summary, the console and the report; a bundle
without a domain is not checked (null); bids_pscore-normative sets, keeps or replaces the domain."""

import dataclasses
import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from bids_pscore import cohort, normative, participant, qc, results, scoring
from bids_pscore.atlas import N_REGIONS
from bids_pscore.derivatives import layout
from bids_pscore.derivatives.records import class_domain_summary, class_mark
from bids_pscore.fileio import write_json
from bids_pscore.grid import GRID_SHAPE
from bids_pscore.model.bundle import DOMAIN, METADATA, NORMATIVE, add_normative, load_bundle, metadata_sha256, save_bundle, sha256
from bids_pscore.model.networks import Ensemble
from bids_pscore.model.preprocessing import PreprocParams
from bids_pscore.reference import class_domain_change

from .test_subject_report import TEMPLATE, preprocessed_session
from .test_summary_schema import summary_problems

MASK = np.zeros(GRID_SHAPE, bool)
MASK[50:60, 60:70, 50:60] = True
FIELDS = {
    "name": "class-domain-test", "version": "0", "preprocessing": PreprocParams().to_dict(),
    "reference": {"region_min": [0.0] * 246, "region_max": [1.0] * 246, "lambda": 0.7},
    "atlas": {"name": "Brainnetome"}, "labels": {}, "training": {}, "software": {},
}  # fmt: skip


def generated_reference(seed, level=0.5):
    """A reference of 30 healthy heads whose regions' and voxels' grey level is ``level`` + noise (SD 0.05)."""
    rng = np.random.default_rng(seed)
    voxels = level + rng.normal(0, 0.05, (30, int(MASK.sum())))
    regions = level + rng.normal(0, 0.05, (30, N_REGIONS))
    return normative.build(voxels, MASK, {"grey_level": regions}, rng.uniform(20, 80, 30), np.full(30, np.nan), np.arange(30)).reference


def without_class_domain(source, folder):
    """A copy of the bundle ``source`` as a bids_pscore before the class domain wrote it: no domain.safetensors, no class_domain."""
    shutil.copytree(source, folder)
    (folder / DOMAIN).unlink()
    meta = json.loads((folder / METADATA).read_text())
    del meta["class_domain"]
    write_json(folder / METADATA, {**meta, "metadata_sha256": metadata_sha256(meta)})
    return folder


def test_a_scan_near_the_class_domain_is_reliable_and_one_with_intensities_shifted_is_not(tmp_path):
    torch.manual_seed(0)
    folder = save_bundle(tmp_path / "model", Ensemble(np.arange(5)), FIELDS, (generated_reference(0), {"reference": {"images": 30}}))
    bundle = load_bundle(folder)
    record = bundle.metadata["class_domain"]
    # training's reference is of the training data's scanner: the domain holds its region statistics, no voxel's
    assert record["sha256"] == sha256(folder / DOMAIN) and (folder / DOMAIN).stat().st_size < (folder / NORMATIVE).stat().st_size
    assert not bundle.class_domain.voxel_mask.any() and bundle.normative.voxel_mask.any()
    for name, stats in bundle.normative.regions.items():
        np.testing.assert_array_equal(bundle.class_domain.regions[name].coef, stats.coef)
        np.testing.assert_array_equal(bundle.class_domain.regions[name].spread, stats.spread)
    assert record["reference"] == {"images": 30} and record["from_class_calibration"] is False
    assert bundle.class_domain.max_distance == bundle.normative.max_distance < 1.5
    image = np.zeros(GRID_SHAPE, np.float32)
    image[MASK] = 0.5

    def summary(scale):
        regions = {"grey_level": np.full(N_REGIONS, 0.5 * scale)}
        return class_domain_summary(normative.deviation(bundle.class_domain, image * scale, regions, 50.0, np.nan), record)

    near = summary(1.0)
    assert near["ClassReliable"] is True and near["ClassDomain"]["Distance"] < 0.5 and "Caution" not in near["ClassDomain"]
    assert near["ClassDomain"]["DistanceThreshold"] == record["distance_threshold"] and class_mark(near["ClassDomain"]) == ""
    # another scanner: the whole brain 20% darker, 2 healthy spreads (0.05) in every region
    shifted = summary(0.8)
    assert shifted["ClassReliable"] is False and shifted["ClassDomain"]["Distance"] == pytest.approx(2.0, abs=0.3)
    assert "the class is not reliable" in shifted["ClassDomain"]["Caution"] and "--calibrate-class" in shifted["ClassDomain"]["Caution"]
    assert class_mark(shifted["ClassDomain"]) == "class not reliable: scan unlike the model's training scanner"
    calibrated = {**shifted["ClassDomain"], "FromClassCalibration": True}
    assert class_mark(calibrated) == "class not reliable: scan unlike the site's heads the class was calibrated on"
    # an old bundle, made before the domain, still loads; its class is not checked
    old = load_bundle(without_class_domain(folder, tmp_path / "old"))
    assert old.class_domain is None and old.normative is not None
    assert class_domain_summary(None, old.metadata.get("class_domain")) == {"ClassReliable": None, "ClassDomain": None}


def test_a_changed_class_domain_is_refused(tmp_path):
    from bids_pscore.model.bundle import BundleError

    folder = save_bundle(tmp_path / "model", Ensemble(np.arange(5)), FIELDS, (generated_reference(0), {"reference": {"images": 30}}))
    data = bytearray((folder / DOMAIN).read_bytes())
    data[-100] ^= 0x01
    (folder / DOMAIN).write_bytes(bytes(data))
    with pytest.raises(BundleError, match=f"{folder / DOMAIN}: checksum does not match model.json: the class domain was changed"):
        load_bundle(folder)
    with pytest.raises(BundleError, match="the class domain was changed"):  # bids_pscore-normative carries it over: checked there too
        load_bundle(folder, normative=False)


def test_a_new_reference_sets_keeps_or_replaces_the_class_domain(tmp_path, caplog, capsys):
    """The first reference of a model becomes its domain; a later one leaves the domain (and the class offset set on it)
    as it was, unless the class is calibrated on its heads or they are said to be of its scanner (--class-domain)."""
    training, site, other_site = (generated_reference(seed, level) for seed, level in ((0, 0.5), (1, 0.4), (2, 0.45)))
    trained = save_bundle(tmp_path / "trained", Ensemble(np.arange(5)), FIELDS)
    assert "class_domain" not in load_bundle(trained).metadata and not (trained / DOMAIN).exists()

    def added(source, reference, name, calibrate_class, class_domain=False):
        description = {"reference": {"images": 30, "dataset": name}}
        if calibrate_class:
            description["class_calibration"] = {"logit_offset": -3.0, "specificity": 0.97, "images": 30, "called_ad_before": 30,
                                                "heldout_called_control": 0.9}  # fmt: skip
        meta = json.loads((source / METADATA).read_text())
        with caplog.at_level(logging.INFO, logger="bids_pscore"):
            new_domain = class_domain_change(meta, description, calibrate_class, class_domain)
        return load_bundle(add_normative(source, tmp_path / name, reference, description, new_domain))

    first = added(trained, training, "training-scanner", calibrate_class=False)
    assert first.metadata["class_domain"]["reference"]["dataset"] == "training-scanner" and "the model had none" in caplog.text
    np.testing.assert_array_equal(first.class_domain.regions["grey_level"].coef, first.normative.regions["grey_level"].coef)
    assert not first.class_offset
    caplog.clear()
    kept = added(tmp_path / "training-scanner", site, "site", calibrate_class=False)
    assert kept.metadata["class_domain"] == first.metadata["class_domain"] and "carried over unchanged" in caplog.text
    assert (tmp_path / "site" / DOMAIN).read_bytes() == (tmp_path / "training-scanner" / DOMAIN).read_bytes()
    assert kept.metadata["normative"]["sha256"] != kept.metadata["class_domain"]["sha256"]
    # said to be of the scanner the class was set on (the demo's real heads of its training scanner): the domain, the class unchanged
    declared = added(tmp_path / "site", site, "site-declared", calibrate_class=False, class_domain=True)
    assert declared.metadata["class_domain"]["reference"]["dataset"] == "site-declared" and "(--class-domain)" in caplog.text
    assert declared.metadata["class_domain"]["from_class_calibration"] is False and not declared.class_offset
    calibrated = added(tmp_path / "site", site, "site-calibrated", calibrate_class=True)
    assert calibrated.metadata["class_domain"]["reference"]["dataset"] == "site-calibrated" and calibrated.class_offset == -3.0
    assert calibrated.metadata["class_domain"]["from_class_calibration"] is True
    np.testing.assert_allclose(calibrated.class_domain.regions["grey_level"].coef, site.regions["grey_level"].coef)
    # a later reference without --calibrate-class keeps the site's domain and the offset set on it
    again = added(tmp_path / "site-calibrated", other_site, "other-site", calibrate_class=False)
    assert again.metadata["class_domain"] == calibrated.metadata["class_domain"] and again.class_offset == -3.0
    # declaring other heads the domain of a class calibrated elsewhere is refused, before any preprocessing
    from bids_pscore.cli.normative import main as normative_main

    code = normative_main([str(tmp_path / "other-site"), str(tmp_path / "no-such-dataset"), str(tmp_path / "declared"), "--class-domain"])
    assert code == 2 and "calibrated on other healthy heads" in caplog.text + capsys.readouterr().err


def test_the_summary_console_and_report_say_a_class_is_not_reliable_beside_the_probability(tmp_path, caplog):
    """A box is no head of the demo model's training scanner: its class is marked; a bundle without a domain says null."""
    bundle = cohort.load_model()
    item = preprocessed_session(tmp_path, "1")
    gate_off = qc.parse_bounds("off")  # a box, no head
    with caplog.at_level(logging.INFO, logger="bids_pscore"):
        (result,), _ = scoring.score_sessions([item], tmp_path, bundle, TEMPLATE, gate_off, tmp_path / "logs")
    summary = json.loads((tmp_path / layout.output_path(item.entities, "summary", TEMPLATE)).read_text())
    assert summary_problems(summary) == []
    keys = list(summary)
    assert keys.index("ClassReliable") == keys.index("PredictedClass") + 1 and summary["ClassReliable"] is False
    domain = summary["ClassDomain"]
    assert domain["Distance"] > domain["DistanceThreshold"] == bundle.metadata["class_domain"]["distance_threshold"]
    assert domain["Reference"]["images"] == 121 and domain["FromClassCalibration"] is False
    line = f"AD probability {result.ad_probability:.2f} ({result.predicted_class}; class not reliable: scan unlike the model's training scanner)"
    assert line in caplog.text and "the class is not reliable" in caplog.text
    read_back = results.read_session_result(tmp_path, item, TEMPLATE)  # --reports-only and earlier sessions in a report
    assert (read_back.class_reliable, read_back.class_domain) == (result.class_reliable, result.class_domain) == (False, domain)
    (report,), _ = participant.write_run_reports(tmp_path, [item], [item], [result], {}, bundle.metadata, TEMPLATE, {"run": "test"})
    page = (tmp_path / report).read_text()
    assert f"<td>{result.ad_probability:.2f} (CLASS NOT RELIABLE: SCAN UNLIKE THE MODEL&#39;S TRAINING SCANNER)</td>" in page
    assert '<div class="warning">sub-01 ses-1: the class is not reliable' in page
    assert "121 healthy images of IXI" in page

    # a bundle made before the class domain: not checked, said as null, nothing marked
    meta = {k: v for k, v in bundle.metadata.items() if k != "class_domain"}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="bids_pscore"):
        (old,), _ = scoring.score_sessions([item], tmp_path, dataclasses.replace(bundle, metadata=meta, class_domain=None), TEMPLATE,
                                               gate_off, tmp_path / "logs")  # fmt: skip
    summary = json.loads((tmp_path / layout.output_path(item.entities, "summary", TEMPLATE)).read_text())
    assert summary_problems(summary) == []
    assert summary["ClassReliable"] is None and summary["ClassDomain"] is None and old.class_reliable is None
    assert "class not reliable" not in caplog.text and f"AD probability {old.ad_probability:.2f} ({old.predicted_class})" in caplog.text


def test_the_group_table_carries_whether_each_class_is_reliable(tmp_path):
    from bids_pscore.cli import run as cli

    from .test_group import _with_scores

    out = tmp_path / "out"
    bids_dir = _with_scores(out, ["01", "02", "03"], {"01": []})
    for path, reliable in zip(sorted(layout.summary_files(out)), (False, True)):  # sub-03 keeps the null of a model without a domain
        summary = json.loads(path.read_text())
        write_json(path, {**summary, "ClassReliable": reliable})
    assert cli.main([str(bids_dir), str(out), "group", "--flags", "patent"]) == 0
    sessions = pd.read_csv(out / "group" / "sessions.tsv", sep="\t", na_values="n/a", dtype={"class_reliable": object})
    assert dict(zip(sessions["participant_id"], sessions["class_reliable"].fillna("n/a"))) == {
        "sub-01": "False", "sub-02": "True", "sub-03": "n/a"}  # fmt: skip
    assert "class domain" in json.loads((out / "group" / "sessions.json").read_text())["class_reliable"]["Description"]
    # sub-01, the one predicted AD, has its class marked not reliable: the report's count of sessions predicted AD says so
    assert "<td>predicted AD</td><td>1 (1 with the class marked not reliable)</td>" in (out / "group" / "report.html").read_text()


def test_the_group_reports_count_of_predicted_ad_names_the_unreliable_classes_only_where_there_are_some():
    from bids_pscore.report.group import predicted_ad_count

    sessions = pd.DataFrame({"predicted_class": ["AD", "AD", "AD", "control"], "class_reliable": [False, True, None, False]})
    assert predicted_ad_count(sessions) == "3 (1 with the class marked not reliable)"
    assert predicted_ad_count(sessions.assign(class_reliable=[True, True, None, False])) == 3  # a control's mark is not counted
    assert predicted_ad_count(sessions.assign(class_reliable=None)) == 3  # a model without a class domain
