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
    Each label has at least one subject in every split.
    """
    if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise SplitError(f"validation ({val_fraction}) and test ({test_fraction}) fractions must be in [0, 1) with a sum below 1")
    # training needs both: validation images select the cubes and fit the meta-classifier and
    # lambda (SPEC 7), test images measure the model
    for option, split, fraction in (("--val-fraction", "validation", val_fraction), ("--test-fraction", "test", test_fraction)):
        if fraction == 0:
            raise SplitError(f"{option} 0 leaves the {split} split empty, and training needs it: give {option} above 0 (default 0.15)")
    labels = sorted(set(subject_labels.values()))
    if len(labels) < 2:
        raise SplitError(f"only one class ({labels[0] if labels else 'none'}) among the subjects: training needs two")
    rng = np.random.default_rng(seed)
    wanted = [("validation", val_fraction), ("test", test_fraction)]
    assignment = {}
    for label in labels:
        subjects = sorted(s for s, lab in subject_labels.items() if lab == label)
        if len(subjects) < len(SPLITS):
            raise SplitError(
                f"class {label!r} has {len(subjects)} subject(s); every split needs at least one, "
                f"so at least {len(SPLITS)} are required: add subjects of that class"
            )
        order = [subjects[i] for i in rng.permutation(len(subjects))]
        start = 0
        for k, (split, fraction) in enumerate(wanted):
            # keep one subject for each split after this one and for training
            count = min(max(1, int(round(fraction * len(subjects)))), len(subjects) - start - (len(wanted) - k))
            for subject in order[start : start + count]:
                assignment[subject] = split
            start += count
        for subject in order[start:]:
            assignment[subject] = "train"
    return dict(sorted(assignment.items()))
