"""Participant-level outputs with chosen scores, for testing and benchmarking the group level on
large cohorts without scoring an image."""

from pathlib import Path

import numpy as np
import pandas as pd

from bids_pscore.atlas import N_REGIONS, region_table
from bids_pscore.bids import BIDS_VERSION
from bids_pscore.derivatives.records import normative_summary
from bids_pscore.derivatives.session_files import write_normative, write_session
from bids_pscore.fileio import write_json, write_tsv
from bids_pscore.grid import GRID_SHAPE, N_CUBES
from bids_pscore.normative import Deviation, distance
from bids_pscore.pscore import AD_THRESHOLD, Scores
from bids_pscore.synth.disease import disease_losses, subtype_order

SCORED_LAMBDA = 0.5
SCORED_NORMATIVE_THRESHOLD = -3.0
NORMATIVE_RECORD = {
    "rule": f"a region is atrophic when the z of its grey level is below {SCORED_NORMATIVE_THRESHOLD}",
    "threshold": SCORED_NORMATIVE_THRESHOLD, "distance_threshold": 1.0, "calibration": {"false_flags_per_healthy_image": 0.33},
    "reference": {"images": 100}, "covariates": {"age": True, "sex": False},
}  # fmt: skip


def write_scored_session(out_dir, key, region_norm, ad_probability, model="synthetic-scores", region_z=None):
    """Participant-level outputs of one session whose normalised region scores are ``region_norm``
    (and, given ``region_z``, whose grey-level z against a normative reference is that).

    No image is scored: the files are those the participant level writes, for trying and testing
    the group level on large cohorts.
    """
    sub, ses = key
    entities = {"sub": sub, **({"ses": ses} if ses else {})}
    region_norm = np.asarray(region_norm, float)[None]
    scores = Scores(
        p_ad=np.zeros((1, N_CUBES)), cube=np.zeros((1, N_CUBES)), brain_voxels=np.zeros((1, N_CUBES), int),
        region=region_norm, region_norm=region_norm, whole=region_norm.sum(axis=1), degenerative=region_norm > SCORED_LAMBDA,
    )  # fmt: skip
    empty = np.zeros(GRID_SHAPE, np.float32)
    card = {"name": model, "version": "1", "sha256": f"{model:0>64}"[-64:], "metadata_sha256": f"{model + '-json':0>64}"[-64:]}
    t1w = f"sub-{sub}/anat/sub-{sub}_T1w.nii.gz"
    summary = None
    if region_z is not None:
        z = np.asarray(region_z, float)
        far = float(distance(z))
        deviation = Deviation(empty, {"grey_level": z}, {"grey_level": np.zeros(N_REGIONS)}, {"grey_level": z}, z < SCORED_NORMATIVE_THRESHOLD,
                              float(np.median(z)), far, far <= NORMATIVE_RECORD["distance_threshold"], True)  # fmt: skip
        summary = normative_summary(deviation, NORMATIVE_RECORD, region_table()["label"].to_numpy(), 70.0, "F")
        write_normative(out_dir, entities, "MNI152NLin2009aSym", deviation, summary, card, t1w)
    write_session(out_dir, entities, "MNI152NLin2009aSym", scores, empty, empty, ad_probability,
                  "AD" if ad_probability >= AD_THRESHOLD else "control", np.zeros(N_CUBES), np.zeros(N_CUBES, bool), SCORED_LAMBDA,
                  card, t1w, normative=summary)  # fmt: skip


def write_scored_cohort(out_dir, bids_dir, n_subjects, n_sessions, seed=0, normative=False):
    """A longitudinal cohort's participant-level outputs, scores following the disease course of the typical subtype.

    Half the subjects are AD: the normalised score of an atrophied region is its volume loss /
    0.25 plus noise (so it crosses lambda = 0.5 at 12.5% loss); every other score is uniform noise
    below 0.35. With ``normative``, each session also has a grey-level z: normal noise, minus
    20 per unit of loss in atrophied regions (crossing z = -3 at about 15% loss). Writes the
    outputs to ``out_dir`` and participants.tsv and sessions.tsv (acq_time, about a year apart)
    to ``bids_dir``; returns (bids_dir, the regions of ``subtype_order("typical")`` that cross lambda
    in some session whose flags count: with ``normative``, one within the reference's distance; the
    typical subtype's late sessions, with over a third of the regions atrophied, lie beyond it).
    """
    rng = np.random.default_rng(seed)
    order = subtype_order("typical")
    position = region_table().set_index("index").index.get_indexer(order["index"])
    bids_dir, participants, crossed = Path(bids_dir), [], np.zeros(len(order), bool)
    write_json(bids_dir / "dataset_description.json", {"Name": "scored synthetic cohort", "BIDSVersion": BIDS_VERSION})
    for s in range(1, n_subjects + 1):
        sub, is_ad = f"{s:04d}", s % 2 == 1
        stage0, rate = rng.uniform(0.0, 1.5), rng.uniform(0.8, 1.2)
        days = np.arange(n_sessions) * 365.25 + rng.uniform(-30, 30, n_sessions)
        times = pd.Timestamp("2018-01-01") + pd.to_timedelta(days - days[0], unit="D")
        write_tsv(bids_dir / f"sub-{sub}" / f"sub-{sub}_sessions.tsv", pd.DataFrame({
            "session_id": [f"ses-{k}" for k in range(1, n_sessions + 1)], "acq_time": times.strftime("%Y-%m-%dT%H:%M:%S")}))  # fmt: skip
        participants.append({"participant_id": f"sub-{sub}", "group": "AD" if is_ad else "CN"})
        for k in range(n_sessions):
            years = (times[k] - times[0]).days / 365.25
            loss = disease_losses(stage0 + rate * years if is_ad else None, order, np.ones(len(order)))
            norm = rng.uniform(0.0, 0.35, N_REGIONS)
            z = rng.normal(0, 1, N_REGIONS)
            if is_ad:
                norm[position] = np.clip(loss / 0.25 + rng.normal(0, 0.05, len(loss)), 0, 1)
                z[position] -= 20 * loss
            if not normative or distance(z) <= NORMATIVE_RECORD["distance_threshold"]:
                crossed |= loss / 0.25 > SCORED_LAMBDA
            write_scored_session(out_dir, (sub, str(k + 1)), norm, 0.9 if is_ad else 0.1, region_z=z if normative else None)
    write_tsv(bids_dir / "participants.tsv", pd.DataFrame(participants))
    return bids_dir, order[crossed]
