"""The disease model of cohorts on real heads: subtypes, stages, ageing, who is AD."""

import numpy as np
import pytest

from bids_pscore.synth import disease


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


def test_ageing_grows_with_age_and_starts_at_fifty():
    assert disease.ageing(30) == (0.0, 0.0) and disease.ageing(50) == (0.0, 0.0)
    grey70, ventricles70 = disease.ageing(70)
    grey80, ventricles80 = disease.ageing(80)
    assert grey70 == pytest.approx(0.02) and ventricles70 == pytest.approx(0.20)
    assert grey80 > grey70 and ventricles80 > ventricles70


def test_ad_subjects_are_older_on_average():
    ages = np.linspace(20, 85, 100)
    chosen = [disease.choose_ad(ages, 30, np.random.default_rng(seed)) for seed in range(50)]
    assert all(len(set(c)) == 30 for c in chosen)
    assert np.mean([ages[c].mean() for c in chosen]) > ages.mean() + 2
    assert np.array_equal(disease.choose_ad(ages, 30, np.random.default_rng(7)), disease.choose_ad(ages, 30, np.random.default_rng(7)))
