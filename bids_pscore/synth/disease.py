"""The disease model of every synthetic cohort, template and real heads alike: AD subtypes with
their own orders, stages, ageing, and who is AD.

Written down with its sources in ``docs/disease_model.md``. Pure numpy and pandas: which regions
lose how much volume at a stage, how a subject's stage moves with time, and how much every
subject loses to ageing. ``dataset`` draws each subject's course; the anatomy changes in
``synth.session_anatomy``, and the images are made by the head (``templateheads.TemplateHead``,
``realheads.BaseScan``).
"""

from functools import cache

import numpy as np
import pandas as pd

# Each subtype is an ordered list of stages of involvement: (Brainnetome gyri or abbreviations,
# largest volume loss). A region becomes involved at its stage's onset (0, 1, 2, ... in units of
# disease stage, about a year at an average rate) and then loses LOSS_PER_STAGE a stage up to its
# largest loss. Gyri are the codes of the atlas table's "gyrus" column (e.g. "ITG").
SUBTYPES = {
    # medial temporal -> lateral temporal -> parietal and posterior cingulate -> frontal (Braak-like)
    "typical": (
        (("Amyg", "Hipp", "A28/34", "A35/36r", "A35/36c"), 0.30),
        (("TL", "TI", "TH", "A38m", "A38l", "FuG"), 0.22),
        (("ITG", "MTG", "pSTS"), 0.18),
        (("IPL", "Pcun", "A23d", "A23c", "A23v"), 0.16),
        (("MFG", "IFG", "SFG", "OrG"), 0.12),
        (("A41/42", "TE1.0 and TE1.2", "A22c", "A22r", "INS", "LOcC"), 0.10),
    ),
    # medial temporal and limbic loss, the neocortex mildly and late
    "limbic-predominant": (
        (("Amyg", "Hipp", "A28/34", "A35/36r", "A35/36c"), 0.35),
        (("TL", "TI", "TH", "A38m", "A38l", "NAC"), 0.25),
        (("A14m", "A11m", "A13", "vIa", "vId/vIg", "A24rv", "A32sg"), 0.15),
        (("FuG", "ITG"), 0.08),
    ),
    # parietal, posterior cingulate and lateral temporal first; the hippocampus late and mildly
    "hippocampal-sparing": (
        (("IPL", "Pcun", "A23d", "A23c", "A23v"), 0.22),
        (("SPL", "MTG", "ITG", "pSTS"), 0.18),
        (("MFG", "IFG", "SFG", "LOcC"), 0.15),
        (("STG", "FuG", "OrG"), 0.10),
        (("Amyg", "Hipp", "A28/34", "A35/36r", "A35/36c"), 0.08),
    ),
}
# share of each subtype among AD subjects: typical the commonest, then limbic-predominant, then
# hippocampal-sparing, as across the studies pooled by Ferreira et al. 2020
SUBTYPE_WEIGHTS = {"typical": 0.59, "limbic-predominant": 0.23, "hippocampal-sparing": 0.18}
LOSS_PER_STAGE = 0.08  # volume lost per unit of stage once a region is involved
FIRST_STAGE = (0.1, 4.5)  # an AD subject's stage at its first session, uniform: prodromal to moderate
RATE = (0.5, 1.5)  # stages per year, uniform per subject
REGION_JITTER = (0.8, 1.2)  # each region's loss times a factor of this range, per subject
HEMISPHERE_BIAS = 0.15  # one hemisphere loses up to this fraction more, per subject
# ageing, for everyone, beyond the real anatomy's own (from the base's age on): grey-matter loss and
# ventricular growth per year of age past AGEING_FROM
AGEING_FROM = 50.0
GLOBAL_LOSS_PER_YEAR = 0.001
VENTRICLE_GROWTH_PER_YEAR = 0.01
# the odds of being AD grow by this factor per decade of age: AD a few years older than CN, as in
# research cohorts that match ages (2.5 made AD 20-25 years older and age alone separated them, AUC 0.86-0.94)
AD_ODDS_PER_DECADE = 1.15


@cache
def subtype_order(subtype):
    """One row per involved region of a subtype: stage (0-based), onset, index, label, largest loss."""
    from ..atlas import region_table

    table = region_table()
    gyrus_code = table["gyrus"].str.split(",").str[0]
    rows = []
    for stage, (names, max_loss) in enumerate(SUBTYPES[subtype]):
        chosen = table[gyrus_code.isin(names) | table["abbreviation"].isin(names)]
        for _, region in chosen.iterrows():
            rows.append({"subtype": subtype, "stage": stage, "onset_stage": float(stage), "index": int(region["index"]),
                         "label": region["label"], "hemisphere": region["hemisphere"], "max_loss": max_loss})  # fmt: skip
    order = pd.DataFrame(rows)
    if order["index"].duplicated().any():
        raise ValueError(f"subtype {subtype}: a region is in two stages")
    return order


def disease_losses(stage, order, jitter):
    """Volume loss of each region of ``order`` at a disease stage (None: no disease).

    A region loses nothing before its onset, then LOSS_PER_STAGE a stage up to its largest loss,
    each times its own ``jitter``: a prodromal subject (stage below 1) has small losses in the
    first stage's regions only.
    """
    if stage is None:
        return np.zeros(len(order))
    since = stage - order["onset_stage"].to_numpy()
    loss = np.minimum(LOSS_PER_STAGE * np.clip(since, 0.0, None), order["max_loss"].to_numpy())
    return loss * jitter


def ageing(base_age, age):
    """(grey-matter loss of every region, relative growth of the ventricles) from ``base_age`` to ``age``
    in years: a real head already shows its own age, so a session at the base's age has none."""
    years = max(float(age) - AGEING_FROM, 0.0) - max(float(base_age) - AGEING_FROM, 0.0)
    return GLOBAL_LOSS_PER_YEAR * years, VENTRICLE_GROWTH_PER_YEAR * years


def choose_ad(ages, n_ad, rng):
    """Indices of the ``n_ad`` subjects labelled AD, drawn with odds that grow with age."""
    ages = np.asarray(ages, float)
    weights = AD_ODDS_PER_DECADE ** ((ages - ages.mean()) / 10.0)
    return np.sort(rng.choice(len(ages), size=n_ad, replace=False, p=weights / weights.sum()))


def draw_course(rng, subtype=None, stage0=None, rate=None):
    """An AD subject's subtype, stage at the first session, rate (stages a year) and region jitter.

    A given ``subtype``, ``stage0`` or ``rate`` replaces the drawn one (the demo states its course);
    the draws are made all the same, so the rest of the course comes from the same numbers.
    """
    names = list(SUBTYPE_WEIGHTS)
    drawn = names[rng.choice(len(names), p=np.array([SUBTYPE_WEIGHTS[n] for n in names]))]
    subtype = subtype or drawn
    order = subtype_order(subtype)
    drawn_stage0, drawn_rate = rng.uniform(*FIRST_STAGE), rng.uniform(*RATE)
    stage0 = drawn_stage0 if stage0 is None else stage0
    rate = drawn_rate if rate is None else rate
    jitter = rng.uniform(*REGION_JITTER, len(order))
    biased = rng.choice(["L", "R"])
    jitter = jitter * np.where(order["hemisphere"].to_numpy() == biased, 1.0 + rng.uniform(0, HEMISPHERE_BIAS), 1.0)
    return subtype, stage0, rate, jitter
