"""The template heads' anatomy: healthy variation, the disease model's losses that the scanned label
maps confirm, and ventricles and ageing as on real heads (apart from test_synth.py, so that the two
run side by side)."""

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bids_pscore import synth
from bids_pscore.synth import disease, templateheads


def _volumes_ml(img, indices):
    counts = np.bincount(np.asarray(img.dataobj).astype(int).ravel(), minlength=247)[indices]
    return counts * float(np.prod(img.header.get_zooms()[:3])) / 1000.0


@pytest.mark.slow
def test_volume_loss_measured_on_the_scanned_label_maps_matches_the_truth():
    """Healthy and atrophied scans of one brain, each in its own pose and voxel grid."""
    order = disease.subtype_order("typical")
    indices = order["index"].to_numpy()
    anatomy = synth.make_anatomy(np.random.default_rng(3))
    target = disease.disease_losses(4.0, order, np.ones(len(order)))
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


@pytest.mark.slow
def test_template_heads_have_ventricles_and_age_as_real_heads_do():
    head = templateheads.TemplateHead().prepare(np.random.default_rng(3))
    anatomy = head.anatomy
    assert 15 <= head.ventricles.sum() / 1000 <= 60  # ml: the MNI152 brain's lateral and third ventricles, deformed
    assert not (head.ventricles & (anatomy.labels > 0)).any() and anatomy.mask[head.ventricles].all()
    grey, growth = disease.ageing(60.0, 80.0)
    image, labels, target = synth.session_anatomy(head, 60.0, 80.0, {})
    assert np.allclose(target[1:], grey) and target[0] == 0
    healthy = np.bincount(anatomy.labels.ravel(), minlength=247)[1:]
    realised = 1.0 - np.bincount(labels.ravel(), minlength=247)[1:] / healthy
    assert np.median(realised) == pytest.approx(grey, abs=0.003) and realised.min() >= grey - 0.003
    # the ventricles took growth of their volume from the brain next to them, which became CSF (a few of
    # those voxels were CSF already: what the shrunk regions left)
    shrunk, _ = synth.atrophy(anatomy, {i: grey for i in range(1, 247)})
    widened, n_new = image != shrunk, round(growth * head.ventricles.sum())
    assert 0.9 * n_new <= widened.sum() <= n_new and np.all(image[widened] == np.float32(synth.CSF_INTENSITY))
    assert (labels[widened] == 0).all() and ndimage.distance_transform_edt(~head.ventricles)[widened].max() <= 3
    # the first session shows the healthy anatomy itself: no ageing at its own age, no disease
    image, labels, _ = synth.session_anatomy(head, 60.0, 60.0, {})
    assert np.array_equal(image, anatomy.image) and np.array_equal(labels, anatomy.labels)


@pytest.mark.slow
def test_another_acquisition_seed_rescans_the_same_brains(tmp_path):
    test = templateheads.write_dataset(tmp_path / "test", n_subjects=1, seed=11, ad_fraction=1.0)
    retest = templateheads.write_dataset(tmp_path / "retest", n_subjects=1, seed=11, acquisition_seed=99, ad_fraction=1.0)
    for name in ("participants.tsv", "derivatives/groundtruth/regions.tsv"):
        assert (test / name).read_text() == (retest / name).read_text()
    first = nib.load(test / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz")
    second = nib.load(retest / "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz")
    assert first.shape != second.shape or not np.allclose(first.affine, second.affine)
