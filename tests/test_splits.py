"""Splits by subject, stratified by label, reproducible."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bids_pscore.model.splits import SplitError, split_subjects


def cohort(n_ad, n_cn):
    return {**{f"ad{i:03d}": "AD" for i in range(n_ad)}, **{f"cn{i:03d}": "CN" for i in range(n_cn)}}


def test_proportions_and_reproducibility():
    subjects = cohort(40, 60)
    split = split_subjects(subjects, 0.2, 0.2, seed=3)
    assert set(split) == set(subjects)
    counts = Counter((subjects[s], part) for s, part in split.items())
    assert counts[("AD", "validation")] == 8 and counts[("AD", "test")] == 8 and counts[("AD", "train")] == 24
    assert counts[("CN", "validation")] == 12 and counts[("CN", "test")] == 12 and counts[("CN", "train")] == 36
    assert split_subjects(subjects, 0.2, 0.2, seed=3) == split
    assert split_subjects(subjects, 0.2, 0.2, seed=4) != split


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 30), st.integers(3, 30), st.integers(0, 1000))
def test_every_subject_in_exactly_one_split_and_each_class_everywhere(n_ad, n_cn, seed):
    subjects = cohort(n_ad, n_cn)
    split = split_subjects(subjects, 0.15, 0.15, seed)
    assert sorted(split) == sorted(subjects)
    for label in ("AD", "CN"):
        assert {part for s, part in split.items() if subjects[s] == label} == {"train", "validation", "test"}


def test_refusals_name_the_problem():
    with pytest.raises(SplitError, match="only one class"):
        split_subjects(cohort(10, 0))
    with pytest.raises(SplitError, match="'AD' has 2 subject"):
        split_subjects(cohort(2, 10))
    with pytest.raises(SplitError, match="fractions"):
        split_subjects(cohort(10, 10), 0.6, 0.5)
    # training needs every split: an empty one is refused before any image is read
    with pytest.raises(SplitError, match="--val-fraction 0 leaves the validation split empty.*give --val-fraction above 0"):
        split_subjects(cohort(10, 10), 0.0, 0.15)
    with pytest.raises(SplitError, match="--test-fraction 0 leaves the test split empty.*give --test-fraction above 0"):
        split_subjects(cohort(10, 10), 0.15, 0.0)


def test_a_large_validation_fraction_leaves_each_class_in_the_test_split():
    subjects = cohort(3, 3)
    split = split_subjects(subjects, 0.9, 0.05)
    for label in ("AD", "CN"):
        assert {part for s, part in split.items() if subjects[s] == label} == {"train", "validation", "test"}
