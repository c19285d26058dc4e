"""The quick start's demo: two real IXI heads that ship with the package, one given simulated AD.

Which heads, by a rule fixed before any result was seen (``demo_labels``): the demo model's recipe
(``data/demo_model/recipe.sh``) trains on three of every four IXI subjects in label order and keeps
every fourth out (``held_out_labels``); the validation benchmark uses the first half of those
(``validation_labels``); the demo heads are the first two of the other half aged 60 or more, the
first made atrophied (sub-01), the second left healthy (sub-02). ``data/demo_heads/recipe.py``
copies them and writes what ``prepare_base`` found on each, so the demo is made in seconds.
"""

from pathlib import Path

import pandas as pd

from ..bids import BIDS_VERSION
from . import DATASET_NAME

DEMO_HEADS = Path(__file__).resolve().parents[1] / "data" / "demo_heads"
DEMO_MIN_AGE = 60.0
# sub-01's stated course: the commonest subtype, at a moderate stage where the medial temporal regions
# have lost about a quarter of their volume and the lateral temporal ones a sixth (disease.SUBTYPES),
# one stage more a year
DEMO_COURSE = {"subtype": "typical", "stage0": 3.0, "rate": 1.0}
DEMO_SESSIONS = 2


def held_out_labels(base_dir):
    """The base subjects the demo model's recipe kept out of training: every fourth in label order."""
    labels = sorted(pd.read_csv(Path(base_dir) / "participants.tsv", sep="\t")["participant_id"])
    return [label.removeprefix("sub-") for k, label in enumerate(labels, start=1) if k % 4 == 0]


def validation_labels(base_dir):
    """The held-out subjects the validation benchmark uses: the first half."""
    held_out = held_out_labels(base_dir)
    return held_out[: len(held_out) // 2]


def demo_labels(base_dir):
    """The demo heads: among the held-out subjects the benchmark leaves alone, the first two in label
    order aged DEMO_MIN_AGE or more (atrophied, then healthy)."""
    held_out = held_out_labels(base_dir)
    ages = pd.read_csv(Path(base_dir) / "participants.tsv", sep="\t").set_index("participant_id")["age"]
    return [label for label in held_out[len(held_out) // 2 :] if ages[f"sub-{label}"] >= DEMO_MIN_AGE][:2]


def reference_labels(base_dir):
    """The subjects of the demo model's normative reference: every base subject that neither the
    validation benchmark nor the demo uses (a head is never compared with its own healthy self)."""
    labels = sorted(pd.read_csv(Path(base_dir) / "participants.tsv", sep="\t")["participant_id"].str.removeprefix("sub-"))
    kept_out = set(validation_labels(base_dir)) | set(demo_labels(base_dir))
    return [label for label in labels if label not in kept_out]


def write_demo(out_dir, n_sessions=DEMO_SESSIONS, seed=0):
    """The quick start's dataset from the shipped heads (``heads.tsv``): sub-01 with simulated AD of a
    stated course (DEMO_COURSE), sub-02 healthy, sessions about a year apart, each on its head's own
    scan, and the truth in derivatives/groundtruth. ``seed`` draws the region jitter and visit dates."""
    from .dataset import SubjectJob, write_subjects
    from .realheads import BaseScan

    out_dir = Path(out_dir)
    heads = pd.read_csv(DEMO_HEADS / "heads.tsv", sep="\t", dtype={"participant_id": str})
    jobs = [
        SubjectJob(
            str(out_dir),
            head.participant_id.removeprefix("sub-"),
            BaseScan(str(DEMO_HEADS / head.t1w), prepared=str(DEMO_HEADS / head.prepared)),
            float(head.age),
            head.sex,
            head.group == "AD",
            n_sessions,
            seed,
            course=DEMO_COURSE if head.group == "AD" else None,
        )  # fmt: skip
        for head in heads.itertuples()
    ]
    description = {
        "Name": f"{DATASET_NAME}: the demo, simulated atrophy on two IXI heads",
        "BIDSVersion": BIDS_VERSION, "DatasetType": "raw", "License": "CC BY-SA 3.0",
        "HowToAcknowledge": "IXI dataset, https://brain-development.org/ixi-dataset/ (CC BY-SA 3.0)",
        "GeneratedBy": [{"Name": "bids_pscore-synth",
                         "Description": f"the demo: simulated atrophy on the shipped IXI heads, on their own scans; seed {seed}"}],
        "SourceDatasets": [{"URL": "https://brain-development.org/ixi-dataset/", "Name": "IXI (Hammersmith Hospital T1w, 2 mm copies)"}],
    }  # fmt: skip
    readme = ("The demo of bids_pscore: two real healthy IXI heads (CC BY-SA 3.0, brain-development.org), sub-01 given simulated "
              f"AD-like atrophy ({DEMO_COURSE['subtype']} subtype, stage {DEMO_COURSE['stage0']:g} at the first session) and ageing, "
              "sub-02 ageing alone, made by bids_pscore-synth; the truth is in derivatives/groundtruth. The atrophy is not real.\n")  # fmt: skip
    return write_subjects(out_dir, description, readme, jobs)
