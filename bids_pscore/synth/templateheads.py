"""Template heads: the MNI152 brain under a random deformation as a cohort subject (``write_dataset``,
``bids_pscore-synth`` without --base), beside ``realheads`` for real base heads; both are written by
``dataset``."""

from dataclasses import dataclass

import numpy as np

from ..bids import BIDS_VERSION
from . import CSF_INTENSITY, DATASET_NAME, Head, acquire, add_head, find_ventricles, make_anatomy
from .dataset import SubjectJob, write_subjects
from .disease import choose_ad


@dataclass(frozen=True)
class TemplateHead:
    """How a template head is made and scanned (``dataset.SubjectJob.head``): the MNI152 brain under a
    random deformation, its ventricles found as on a real head, and each session wrapped in CSF,
    skull and scalp and scanned anew (``acquire``)."""

    origin = ""  # whose the subject's age and sex are, for participants.json: drawn for the template heads

    def prepare(self, rng):
        anatomy = make_anatomy(rng)
        return Head(anatomy, find_ventricles(anatomy.image, anatomy.mask, anatomy.labels), CSF_INTENSITY)

    def scan(self, head, image, labels, rng):
        return acquire(add_head(image, head.anatomy.mask), labels, head.anatomy.mask, head.anatomy.affine, rng)


def write_dataset(out_dir, n_subjects=1, n_sessions=1, seed=0, acquisition_seed=None, ad_fraction=0.5):
    """A BIDS dataset of synthetic heads (AD and CN) with its ground truth in derivatives/groundtruth.

    Ages (55-84) and sexes, who is AD (``disease.choose_ad``), anatomy and disease course come
    from ``seed``; pose, voxel grid, bias field and noise from ``acquisition_seed`` (default:
    ``seed``), so two datasets that differ only in the latter are a test-retest pair of the same brains.
    """
    acquisition_seed = seed if acquisition_seed is None else acquisition_seed
    people = np.random.default_rng([seed, 0])
    ages, sexes = people.integers(55, 85, n_subjects), people.choice(["F", "M"], n_subjects)
    ad = set(choose_ad(ages, int(round(n_subjects * ad_fraction)), people).tolist())
    description = {
        "Name": DATASET_NAME, "BIDSVersion": BIDS_VERSION, "DatasetType": "raw", "License": "CC0",
        "GeneratedBy": [{"Name": "bids_pscore-synth", "Description": f"seed {seed}, acquisition seed {acquisition_seed}"}],
    }  # fmt: skip
    readme = ("Synthetic T1w heads made by bids_pscore-synth from the MNI152 template; AD subjects have simulated regional "
              "atrophy and everyone ages, whose truth is in derivatives/groundtruth. Not real data.\n")  # fmt: skip
    jobs = [SubjectJob(str(out_dir), f"{s:02d}", TemplateHead(), int(ages[s - 1]), str(sexes[s - 1]), s - 1 in ad, n_sessions, seed, acquisition_seed)
            for s in range(1, n_subjects + 1)]  # fmt: skip
    return write_subjects(out_dir, description, readme, jobs)
