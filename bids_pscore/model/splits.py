"""Train / validation / test splits by subject, stratified by label (SPEC section 7).

All sessions of a subject go to one split: sessions of one person in two splits leak.
"""

import numpy as np

SPLITS = ("train", "validation", "test")


class SplitError(ValueError):
    """The labels cannot be split as asked; the message says why and what to change."""


def split_subjects(subject_labels, val_fraction=0.15, test_fraction=0.15, seed=0):
    """Assign each subject to a split, keeping each label's proportion in every split.

    ``subject_labels`` maps subject -> label (one label per subject). Returns subject -> split.
    Each label needs at least one subject in every split that has a non-zero fraction.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise SplitError(f"validation ({val_fraction}) and test ({test_fraction}) fractions must be in [0, 1) with a sum below 1")
    labels = sorted(set(subject_labels.values()))
    if len(labels) < 2:
        raise SplitError(f"only one class ({labels[0] if labels else 'none'}) among the subjects: training needs two")
    rng = np.random.default_rng(seed)
    wanted = [("validation", val_fraction), ("test", test_fraction)]
    assignment = {}
    for label in labels:
        subjects = sorted(s for s, lab in subject_labels.items() if lab == label)
        needed = 1 + sum(1 for _, f in wanted if f > 0)
        if len(subjects) < needed:
            raise SplitError(
                f"class {label!r} has {len(subjects)} subject(s); every split needs at least one, "
                f"so at least {needed} are required (or lower --val-fraction/--test-fraction to 0)"
            )
        order = [subjects[i] for i in rng.permutation(len(subjects))]
        start = 0
        for split, fraction in wanted:
            count = max(1, int(round(fraction * len(subjects)))) if fraction > 0 else 0
            count = min(count, len(subjects) - start - 1)  # keep one for training
            for subject in order[start : start + count]:
                assignment[subject] = split
            start += count
        for subject in order[start:]:
            assignment[subject] = "train"
    return dict(sorted(assignment.items()))
