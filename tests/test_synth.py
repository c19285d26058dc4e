"""The synthetic cohort generator: ground truth that matches the images, and a valid BIDS dataset."""

import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_pscore import bids, synth
from bids_pscore.cli import synth as synth_cli
from bids_pscore.synth import disease, templateheads


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return templateheads.write_dataset(tmp_path_factory.mktemp("synth") / "test", n_subjects=2, n_sessions=2, seed=11)


@pytest.mark.slow
def test_dataset_is_valid_bids_with_groups_times_and_varied_scans(cohort):
    test = cohort
    layout = bids.load_layout(test, validate=True)
    t1w = bids.find_t1w(layout)
    assert len(t1w) == 4
    participants = pd.read_csv(test / "participants.tsv", sep="\t")
    assert sorted(participants["group"]) == ["AD", "CN"] and {"age", "sex"} <= set(participants.columns)
    for sub in participants["participant_id"]:
        times = pd.to_datetime(pd.read_csv(test / sub / f"{sub}_sessions.tsv", sep="\t")["acq_time"])
        assert times.is_monotonic_increasing and (times.diff().dt.days.dropna() > 200).all()
    images = [nib.load(t.path) for t in t1w]
    assert len({nib.aff2axcodes(i.affine) for i in images} | {i.header.get_zooms()[:3] for i in images}) >= 3
    for img in images:
        assert img.get_data_dtype() == np.int16 and 0.3 <= min(img.header.get_zooms()) and max(img.header.get_zooms()) <= 3


@pytest.mark.slow
def test_truth_tables_follow_the_disease_model_of_the_real_heads(cohort):
    """Template heads get the one disease model: an AD subject's subtype involves its regions up to
    its stage, which grows; everyone ages from the second session on; the images realise the losses."""
    truth = cohort / synth.GROUNDTRUTH
    regions = pd.read_csv(truth / "regions.tsv", sep="\t").set_index(["participant_id", "session_id", "index"]).sort_index()
    sessions = pd.read_csv(truth / "sessions.tsv", sep="\t", na_values="n/a").set_index(["participant_id", "session_id"])
    groups = pd.read_csv(cohort / "participants.tsv", sep="\t").set_index("participant_id")["group"]
    ad, cn = groups[groups == "AD"].index[0], groups[groups == "CN"].index[0]
    assert len(regions) == 4 * 246 and sessions.loc[cn, "subtype"].eq("none").all() and sessions.loc[cn, "disease_stage"].isna().all()
    # CN: no disease, no ageing at the first session (the healthy anatomy shows its own age), a little at the second
    assert (regions.loc[cn, "disease_loss"] == 0).all() and (regions.loc[(cn, "ses-1"), "volume_loss"] == 0).all()
    grey, _ = disease.ageing(*sessions.loc[cn, "age"])
    assert 0 < grey < 0.002 and np.median(regions.loc[(cn, "ses-2"), "target_loss"]) == pytest.approx(grey, abs=1e-5)
    assert 0 < (regions.loc[(cn, "ses-2"), "volume_loss"] > 0).mean() and regions.loc[(cn, "ses-2"), "volume_loss"].median() < 0.005
    subtype = sessions.loc[(ad, "ses-1"), "subtype"]
    order = disease.subtype_order(subtype).set_index("index")
    stages = sessions.loc[ad, "disease_stage"]
    assert subtype in disease.SUBTYPES and stages.iloc[1] > stages.iloc[0] >= disease.FIRST_STAGE[0]
    for ses, stage in stages.items():
        rows = regions.loc[(ad, ses)]
        assert set(rows.index[rows["disease_loss"] > 0]) == set(order.index[order["onset_stage"] < stage])
        assert (rows["disease_loss"].reindex(order.index) <= order["max_loss"] * disease.REGION_JITTER[1] * (1 + disease.HEMISPHERE_BIAS)).all()
    growth = regions.loc[(ad, "ses-2"), "disease_loss"] - regions.loc[(ad, "ses-1"), "disease_loss"]
    assert (growth >= 0).all() and growth.max() > 0
    # the label maps lose what the model says (the first session: disease alone, no ventricles widening)
    first = regions.loc[(ad, "ses-1")]
    atrophied = first["target_loss"] > 0
    assert np.all(np.abs(first["volume_loss"] - first["target_loss"])[atrophied] <= 0.1 * first["target_loss"][atrophied] + 0.002)
    assert (first["volume_loss"][~atrophied] == 0).all()
    for sub, ses in sessions.index:
        assert (truth / sub / ses / "anat" / f"{sub}_{ses}_desc-brain_mask.nii.gz").is_file()
        assert (truth / sub / ses / "anat" / f"{sub}_{ses}_atlas-Brainnetome_dseg.nii.gz").is_file()


def test_command_line_refuses_a_folder_of_other_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert synth_cli.main([str(tmp_path), "--n-subjects", "1"]) == 2
    assert "holds other files" in capsys.readouterr().err


@pytest.mark.slow
def test_run_as_a_module_it_says_what_it_wrote(tmp_path):
    done = subprocess.run([sys.executable, "-m", "bids_pscore.cli.synth", str(tmp_path / "bids"), "--n-subjects", "1"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert "bids_pscore-synth: wrote 1 subject(s) x 1 session(s)" in done.stdout


def test_work_grid_of_a_real_head_is_1mm_over_the_same_field_of_view():
    from bids_pscore.synth.realheads import _work_grid

    affine = np.array([[-2.0, 0, 0, 90], [0, 0, 2.0, -100], [0, -2.0, 0, 80], [0, 0, 0, 1]])  # LIA-like, 2 mm
    img = nib.Nifti1Image(np.zeros((90, 120, 100), np.float32), affine)
    shape, fine = _work_grid(img)
    assert shape == (180, 240, 200) and np.allclose(np.abs(fine[:3, :3]).sum(axis=0), 1.0)
    # the outer corners of the first and last voxels (half a voxel out from their centres) coincide
    for coarse_corner, fine_corner in (((-0.5,) * 3, (-0.5,) * 3), ((89.5, 119.5, 99.5), (179.5, 239.5, 199.5))):
        assert np.allclose(affine @ [*coarse_corner, 1], fine @ [*fine_corner, 1])
