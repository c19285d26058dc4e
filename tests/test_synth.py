"""The synthetic cohort generator: ground truth that matches the images, and a valid BIDS dataset."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_pscore import bids, synth
from bids_pscore.cli import synth as synth_cli


def _volumes_ml(img, indices):
    counts = np.bincount(np.asarray(img.dataobj).astype(int).ravel(), minlength=247)[indices]
    return counts * float(np.prod(img.header.get_zooms()[:3])) / 1000.0


def test_volume_loss_measured_on_the_scanned_label_maps_matches_the_truth():
    """Healthy and atrophied scans of one brain, each in its own pose and voxel grid."""
    order = synth.region_order()
    indices = order["index"].to_numpy()
    anatomy = synth.make_anatomy(np.random.default_rng(3))
    target = synth.stage_losses(4.0, order, np.ones(len(order)))
    brain, labels = synth.atrophy(anatomy, dict(zip(indices, target)))
    healthy = np.bincount(anatomy.labels.ravel(), minlength=247)[indices]
    truth = 1.0 - np.bincount(labels.ravel(), minlength=247)[indices] / healthy
    atrophied = target > 0
    # the truth the generator writes is the loss it realised, close to the loss it aimed at
    assert np.all(np.abs(truth - target)[atrophied] <= 0.1 * target[atrophied] + 0.002)
    assert np.all(truth[~atrophied] == 0)
    *_, before = synth.acquire(synth.add_head(anatomy.image, anatomy.mask), anatomy.labels, anatomy.mask,
                               anatomy.affine, np.random.default_rng(10))  # fmt: skip
    *_, after = synth.acquire(synth.add_head(brain, anatomy.mask), labels, anatomy.mask, anatomy.affine, np.random.default_rng(11))
    measured = 1.0 - _volumes_ml(after, indices) / _volumes_ml(before, indices)
    large = truth >= 0.1
    # nearest-neighbour resampling of small regions onto a rotated grid moves a few voxels
    assert np.mean(np.abs(measured - truth)[large] / truth[large]) <= 0.1
    assert np.all(np.abs(measured - truth)[atrophied] <= 0.05)


def test_healthy_regional_volumes_vary_by_about_ten_percent():
    volumes = np.array([np.bincount(synth.make_anatomy(np.random.default_rng(s)).labels.ravel(), minlength=247)[1:] for s in range(6)], float)
    cv = volumes.std(axis=0) / volumes.mean(axis=0)
    assert 0.06 <= np.median(cv) <= 0.15


def test_losses_follow_the_order_of_involvement_and_stay_between_5_and_30_percent():
    order = synth.region_order()
    assert list(order.loc[order["rank"] == 1, "label"]) == ["L.mAmyg", "R.mAmyg", "L.lAmyg", "R.lAmyg"]
    ones = np.ones(len(order))
    assert not synth.stage_losses(None, order, ones).any()
    early, late = synth.stage_losses(0.5, order, ones), synth.stage_losses(4.5, order, ones)
    assert set(order.loc[early > 0, "group"]) == {"amygdala"}
    assert np.all(late >= early) and late[order["rank"] <= 5].min() >= 0.05 and late.max() <= 0.30
    # regions of an earlier group never lose less than those of a later group at the same stage (without jitter)
    by_rank = pd.Series(late).groupby(order["rank"]).min()
    assert by_rank[1] >= by_rank[2] and by_rank[4] >= by_rank[5]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    test = synth.write_dataset(root / "test", n_subjects=2, n_sessions=2, seed=11)
    retest = synth.write_dataset(root / "retest", n_subjects=2, n_sessions=2, seed=11, acquisition_seed=99)
    return test, retest


def test_dataset_is_valid_bids_with_groups_times_and_varied_scans(cohort):
    test, _ = cohort
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


def test_truth_tables_say_who_atrophies_and_that_it_grows(cohort):
    test, _ = cohort
    truth = test / synth.GROUNDTRUTH
    regions = pd.read_csv(truth / "regions.tsv", sep="\t")
    groups = pd.read_csv(test / "participants.tsv", sep="\t").set_index("participant_id")["group"]
    loss = regions.pivot_table(index=["participant_id", "session_id"], columns="label", values="volume_loss")
    ad = groups[groups == "AD"].index[0]
    cn = groups[groups == "CN"].index[0]
    assert (loss.loc[cn] == 0).all().all()
    assert (loss.loc[(ad, "ses-2")] >= loss.loc[(ad, "ses-1")] - 0.01).all() and loss.loc[(ad, "ses-2")].max() >= 0.1
    stages = pd.read_csv(truth / "sessions.tsv", sep="\t").set_index(["participant_id", "session_id"])["disease_stage"]
    assert stages.loc[(ad, "ses-2")] > stages.loc[(ad, "ses-1")] and np.isnan(stages.loc[(cn, "ses-1")])
    for sub, ses in loss.index:
        assert (truth / sub / ses / "anat" / f"{sub}_{ses}_desc-brain_mask.nii.gz").is_file()
        assert (truth / sub / ses / "anat" / f"{sub}_{ses}_atlas-Brainnetome_dseg.nii.gz").is_file()


def test_another_acquisition_seed_rescans_the_same_brains(cohort):
    test, retest = cohort
    for name in ("participants.tsv", "derivatives/groundtruth/regions.tsv"):
        assert (test / name).read_text() == (retest / name).read_text()
    first = nib.load(test / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz")
    second = nib.load(retest / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz")
    assert first.shape != second.shape or not np.allclose(first.affine, second.affine)


def test_command_line_refuses_a_folder_of_other_files(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert synth_cli.main([str(tmp_path), "--n-subjects", "1"]) == 2
    assert "holds other files" in capsys.readouterr().err


def test_work_grid_of_a_real_head_is_1mm_over_the_same_field_of_view():
    from bids_pscore.synth.realheads import _work_grid

    affine = np.array([[-2.0, 0, 0, 90], [0, 0, 2.0, -100], [0, -2.0, 0, 80], [0, 0, 0, 1]])  # LIA-like, 2 mm
    img = nib.Nifti1Image(np.zeros((90, 120, 100), np.float32), affine)
    shape, fine = _work_grid(img)
    assert shape == (180, 240, 200) and np.allclose(np.abs(fine[:3, :3]).sum(axis=0), 1.0)
    # the outer corners of the first and last voxels (half a voxel out from their centres) coincide
    for coarse_corner, fine_corner in (((-0.5,) * 3, (-0.5,) * 3), ((89.5, 119.5, 99.5), (179.5, 239.5, 199.5))):
        assert np.allclose(affine @ [*coarse_corner, 1], fine @ [*fine_corner, 1])
