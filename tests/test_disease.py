"""The disease model of cohorts on real heads: subtypes, stages, ageing, who is AD, and a session on its base scan."""

import nibabel as nib
import numpy as np
import pytest

from bids_pscore.synth import Anatomy, Head, disease, realheads


@pytest.mark.parametrize("subtype", list(disease.SUBTYPES))
def test_each_subtype_involves_its_stages_in_order(subtype):
    order = disease.subtype_order(subtype)
    ones = np.ones(len(order))
    for stage in np.arange(0.0, 8.0, 0.25):
        loss = disease.disease_losses(stage, order, ones)
        involved = set(order.loc[loss > 0, "stage"])
        # involvement is a prefix of the subtype's stages: group g only once every earlier one is involved
        assert involved == set(range(len(involved)))
        # at the same stage, a region of an earlier group has lost at least as much as a later one,
        # unless the earlier group has reached its (smaller) ceiling
        by_group = [loss[(order["stage"] == g).to_numpy()] for g in range(order["stage"].max() + 1)]
        for earlier, later, ceiling in zip(by_group, by_group[1:], disease.SUBTYPES[subtype]):
            assert earlier.min() >= min(later.max(), ceiling[1]) - 1e-12


def test_subtypes_differ_where_the_literature_says():
    first = {s: set(disease.subtype_order(s).query("stage == 0")["label"]) for s in disease.SUBTYPES}
    assert {"L.rHipp", "R.cHipp", "L.mAmyg"} <= first["typical"] and {"L.rHipp", "L.mAmyg"} <= first["limbic-predominant"]
    sparing = disease.subtype_order("hippocampal-sparing")
    assert not any("Hipp" in label for label in first["hippocampal-sparing"])
    assert sparing.loc[sparing["label"] == "L.rHipp", "stage"].item() == sparing["stage"].max()
    assert "L.A7m" in first["hippocampal-sparing"]  # precuneus
    # limbic-predominant: the largest medial temporal loss, the least neocortex
    limbic = disease.subtype_order("limbic-predominant")
    assert limbic["max_loss"].max() > disease.subtype_order("typical")["max_loss"].max()
    assert len(limbic) < len(disease.subtype_order("typical")) / 2


def test_stages_advance_over_sessions_and_late_stages_involve_tens_of_regions():
    rng = np.random.default_rng(0)
    for _ in range(20):
        subtype, stage0, rate, jitter = disease.draw_course(rng)
        order = disease.subtype_order(subtype)
        stages = [stage0 + rate * years for years in (0.0, 1.1, 2.0, 3.2)]
        losses = [disease.disease_losses(s, order, jitter) for s in stages]
        assert np.all(np.diff(stages) > 0)
        assert all(np.all(b >= a) for a, b in zip(losses, losses[1:]))
    typical = disease.subtype_order("typical")
    late = disease.disease_losses(5.5, typical, np.ones(len(typical)))
    assert (late >= 0.05).sum() >= 40 and len(np.unique(np.round(late[late > 0], 3))) >= 4  # graded


def test_prodromal_subjects_lose_little_in_few_regions():
    order = disease.subtype_order("typical")
    loss = disease.disease_losses(0.5, order, np.full(len(order), disease.REGION_JITTER[1]))
    assert 0 < (loss > 0).sum() <= 20 and loss.max() < 0.05
    assert not disease.disease_losses(None, order, np.ones(len(order))).any()


def test_ageing_starts_at_fifty_and_from_the_base_heads_own_age():
    assert disease.ageing(30, 30) == disease.ageing(30, 50) == (0.0, 0.0)
    # a real head already shows its own age: none at the base's age, however old
    assert disease.ageing(70, 70) == (0.0, 0.0)
    grey, ventricles = disease.ageing(40, 70)
    assert grey == pytest.approx(0.02) and ventricles == pytest.approx(0.20)
    assert disease.ageing(60, 70) == pytest.approx((0.01, 0.10)) and disease.ageing(60, 80) > disease.ageing(60, 70)


def test_a_session_on_a_real_head_is_its_base_scan_changed_only_where_tissue_moved(tmp_path):
    """A 2 mm uint8 scan with its own scaling, its 1 mm image, and a tissue move in one corner: the
    session keeps every stored voxel elsewhere, and where tissue moved takes the 1 mm change as a ratio."""
    rng = np.random.default_rng(0)
    stored = rng.integers(20, 200, (6, 6, 6)).astype(np.uint8)
    scan = nib.Nifti1Image(stored, np.diag([2.0, 2.0, 2.0, 1.0]))
    scan.header.set_slope_inter(3.5, 0.0)
    scan.to_filename(tmp_path / "base.nii.gz")
    scan = nib.load(tmp_path / "base.nii.gz")

    def session(image):
        """The session's T1w as written and read back, its stored voxels, and its mask and labels."""
        t1w, mask, dseg = realheads.on_base_scan(scan, base, image, labels)
        t1w.to_filename(tmp_path / "session.nii.gz")
        t1w = nib.load(tmp_path / "session.nii.gz")
        return t1w, np.asanyarray(t1w.dataobj.get_unscaled()), mask, dseg

    fine_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    fine_affine[:3, 3] = -0.5  # the 1 mm grid over the same field of view: voxel centres half a fine voxel in
    fine = np.repeat(np.repeat(np.repeat(stored / 255.0, 2, 0), 2, 1), 2, 2).astype(np.float32)
    labels = np.ones(fine.shape, np.int16)
    base = Head(Anatomy(fine, np.ones(fine.shape, bool), labels, fine_affine), np.zeros(fine.shape, bool), 0.1)
    t1w, written, *_ = session(fine)  # nothing moved: the scan itself
    assert np.array_equal(written, stored) and t1w.dataobj.slope == pytest.approx(3.5)
    moved = fine.copy()
    moved[:2, :2, :2] *= 0.5  # the first coarse voxel's tissue halved (to CSF)
    moved[2, 2, 2] *= 0.5  # one of the eight fine voxels of coarse voxel (1, 1, 1)
    t1w, written, mask, dseg = session(moved)
    assert t1w.get_data_dtype() == np.uint8 and t1w.dataobj.slope == pytest.approx(3.5) and np.allclose(t1w.affine, scan.affine)
    assert written[0, 0, 0] == round(int(stored[0, 0, 0]) * 0.5) and written[1, 1, 1] == round(int(stored[1, 1, 1]) * 15 / 16)
    untouched = np.ones(stored.shape, bool)
    untouched[0, 0, 0] = untouched[1, 1, 1] = False
    assert np.array_equal(written[untouched], stored[untouched])
    assert mask.shape == dseg.shape == stored.shape and np.asarray(mask.dataobj).all() and (np.asarray(dseg.dataobj) == 1).all()


def test_ad_subjects_are_older_on_average():
    ages = np.linspace(20, 85, 100)
    chosen = [disease.choose_ad(ages, 30, np.random.default_rng(seed)) for seed in range(50)]
    assert all(len(set(c)) == 30 for c in chosen)
    assert np.mean([ages[c].mean() for c in chosen]) > ages.mean() + 2
    assert np.array_equal(disease.choose_ad(ages, 30, np.random.default_rng(7)), disease.choose_ad(ages, 30, np.random.default_rng(7)))
