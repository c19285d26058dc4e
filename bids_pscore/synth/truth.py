"""The reader of the truth bids_pscore-synth writes, kept beside its writer: what a dataset it made truly is, to show next to what the app found.

``read_truth`` is the one place that reads ``derivatives/groundtruth``, and only when its
``dataset_description.json`` names bids_pscore-synth as its maker (a real dataset's derivatives are
never taken for a truth). The rest is pure: which flags fall on truly atrophied regions, and the
sentence that says it for a subject. Only the reports use it (and the tests and benchmarks): the
runtime path never reads the truth, an import-linter contract in pyproject.toml holds it.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..atlas import N_REGIONS
from ..bids import dataset_description
from . import GROUNDTRUTH

MAKER = "bids_pscore-synth"
# a region counts as truly atrophied from this true volume loss (disease, ageing and the ventricles'
# widening together, as the images show it); the template cohorts' validation uses the same bound
ATROPHIED_FROM = 0.10


@dataclass(frozen=True)
class SessionTruth:
    group: str  # "AD" or "CN"
    subtype: str  # "none" for CN; "n/a" where the generator has no subtypes (template heads)
    stage: float  # disease stage, nan for CN
    loss: np.ndarray  # (246,) true volume loss of each region, in index order

    @property
    def atrophied(self):
        return self.loss >= ATROPHIED_FROM

    def describe(self):
        """e.g. "AD, typical subtype, stage 3.0" or "healthy (CN)"."""
        return _course(self.group, self.subtype, f"{self.stage:.1f}")


def _course(group, subtype, stage):
    if group != "AD":
        return f"healthy ({group})"
    return "AD" + (f", {subtype} subtype" if subtype not in ("n/a", "none") else "") + f", stage {stage}"


def read_truth(bids_dir):
    """{(participant_id, session_id): SessionTruth} of a dataset bids_pscore-synth made, else None."""
    root = Path(bids_dir) / GROUNDTRUTH
    try:
        if not any(g.get("Name") == MAKER for g in dataset_description(root).get("GeneratedBy", [])):
            return None
        sessions = pd.read_csv(root / "sessions.tsv", sep="\t", na_values="n/a")
        regions = pd.read_csv(root / "regions.tsv", sep="\t", usecols=["participant_id", "session_id", "index", "volume_loss"])
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    losses = {key: frame.set_index("index")["volume_loss"].reindex(range(1, N_REGIONS + 1), fill_value=0.0).to_numpy(float)
              for key, frame in regions.groupby(["participant_id", "session_id"])}  # fmt: skip
    return {
        (row.participant_id, row.session_id): SessionTruth(row.group, getattr(row, "subtype", "n/a"), float(row.disease_stage),
                                                           losses.get((row.participant_id, row.session_id), np.zeros(N_REGIONS)))
        for row in sessions.itertuples()
    }  # fmt: skip


@dataclass(frozen=True)
class FlagCheck:
    """A session's flags against its truth: (region label, true loss) of each, largest loss first."""

    hits: list  # flagged and truly atrophied
    misses: list  # truly atrophied, not flagged
    false_flags: list  # flagged, not truly atrophied


def check_flags(flagged, truth, labels):
    """``flagged`` ((246,) bool) against ``truth`` (SessionTruth); ``labels`` names the regions."""

    def listed(where):
        order = np.flatnonzero(where)[np.argsort(-truth.loss[where], kind="stable")]
        return [(str(labels[i]), float(truth.loss[i])) for i in order]

    flagged = np.asarray(flagged, bool)
    return FlagCheck(listed(flagged & truth.atrophied), listed(~flagged & truth.atrophied), listed(flagged & ~truth.atrophied))


def called_right(predicted_class, truth):
    return (predicted_class == "AD") == (truth.group == "AD")


def session_key(entities):
    """(participant_id, session_id) of a T1w's entities, as the truth's tables name them."""
    return f"sub-{entities['sub']}", f"ses-{entities['ses']}" if "ses" in entities else "n/a"


def checked_sessions(results, truth, labels):
    """[(result, SessionTruth, FlagCheck, flag kind)] of the scored sessions (results.SessionResult)
    that have a truth; their normative flags are checked when they have them, else the patent's."""
    checked = []
    for result in results:
        session_truth = truth.get(session_key(result.t1w.entities))
        if session_truth is None:
            continue
        kind, flagged = ("normative", result.normative["AtrophicRegions"]) if result.normative else ("patent", result.degenerative)
        checked.append((result, session_truth, check_flags(np.isin(labels, flagged), session_truth, labels), kind))
    return checked


def subject_sentences(checked):
    """One sentence per subject on ``checked_sessions``' sessions (in their order), in subject order."""
    by_subject = {}
    for row in checked:
        by_subject.setdefault(row[0].t1w.entities["sub"], []).append(row)
    return [subject_sentence(subject, rows) for subject, rows in sorted(by_subject.items())]


def subject_sentence(subject, rows):
    """e.g. "truth check, sub-01: truly AD, typical subtype, stage 3.0 to 4.3; called AD in 2 of 2 session(s) ..."."""
    results, truths, checks, kind = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], rows[0][3]
    stages = " to ".join(dict.fromkeys(f"{t.stage:.1f}" for t in truths))
    what = _course(truths[0].group, truths[0].subtype, stages)
    right = sum(called_right(r.predicted_class, t) for r, t in zip(results, truths))
    probabilities = ", ".join(f"{r.ad_probability:.2f}" for r in results)
    atrophied = [len(c.hits) + len(c.misses) for c in checks]
    false = " and ".join(str(len(c.false_flags)) for c in checks)
    if any(atrophied):
        found = " and ".join(f"{len(c.hits)} of {n}" for c, n in zip(checks, atrophied))
        flags = f"its {kind} flags found {found} truly atrophied regions (lost {ATROPHIED_FROM:.0%} or more), with {false} false flag(s)"
    else:
        flags = f"no region truly lost {ATROPHIED_FROM:.0%} or more, and its {kind} flags made {false} false flag(s)"
    called = "AD" if truths[0].group == "AD" else "control"
    return (f"truth check, sub-{subject}: truly {what}; called {called} in {right} of {len(rows)} session(s) "
            f"(AD probability {probabilities}); {flags}")  # fmt: skip
