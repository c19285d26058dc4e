"""The synthetic anatomy: healthy variation, atrophy in the order of involvement, and losses that
the scanned label maps confirm (apart from test_synth.py, so that the two run side by side)."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_pscore import synth


def _volumes_ml(img, indices):
    counts = np.bincount(np.asarray(img.dataobj).astype(int).ravel(), minlength=247)[indices]
    return counts * float(np.prod(img.header.get_zooms()[:3])) / 1000.0


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_another_acquisition_seed_rescans_the_same_brains(tmp_path):
    test = synth.write_dataset(tmp_path / "test", n_subjects=1, seed=11, ad_fraction=1.0)
    retest = synth.write_dataset(tmp_path / "retest", n_subjects=1, seed=11, acquisition_seed=99, ad_fraction=1.0)
    for name in ("participants.tsv", "derivatives/groundtruth/regions.tsv"):
        assert (test / name).read_text() == (retest / name).read_text()
    first = nib.load(test / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz")
    second = nib.load(retest / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz")
    assert first.shape != second.shape or not np.allclose(first.affine, second.affine)
