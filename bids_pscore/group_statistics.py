"""The group level's statistics (SPEC section 9) as pure functions on arrays and data frames: the
cohort's normalisation and lambda, the regional flags, their frequency and co-occurring sets, each
subject's trajectories, the order of involvement and the comparison of the labelled groups. One row
of every array is one session, in the row order of the ordered sessions table."""

import logging
import math

import numpy as np
import pandas as pd

from .errors import UsageError
from .pscore import normalise_regions, reference_statistics

# the group level's messages, under one logger name whichever of its modules says them
log = logging.getLogger(f"{__package__}.group")

# Mann-Whitney's smallest two-sided p is 2 / C(n_ad + n_control, n_ad): 1 at 1 against 1, 0.1 at 3
# against 3, 0.029 at 4 against 4, 0.008 at 5 against 5. A group of fewer than 5 subjects is not
# tested (a sentence says why): at 4 against 4 no region could reach p < 0.01, and the median of so
# few is hardly the group's.
MIN_SUBJECTS_PER_GROUP = 5
# Cohort normalisation sets each region's 0 and 1 by its lowest and highest session: over fewer than
# 10 sessions a fifth or more of the scores are those two ends, and lambda over its AD sessions rests on
# a handful of values. It is still computed, with a warning in the report and the sidecars.
MIN_COHORT_SESSIONS = 10


def cohort_normalise(p_region):
    """Min-max normalisation of each region over the analysed sessions (instead of the model's reference)."""
    p_region = np.asarray(p_region, np.float64)
    return normalise_regions(p_region, p_region.min(axis=0), p_region.max(axis=0))


def cohort_lambda(p_region, is_ad, predicted_ad, flag_kind):
    """lambda of --normalisation cohort: SPEC 5's lambda (mean + 2 SD of the normalised scores over all
    regions of the AD images classified as AD) taken over the analysed sessions, the cohort that
    normalises them. The model's lambda was taken over its reference cohort's normalisation; applied
    to the cohort's, it flags every region in the session where the region reaches 1.

    ``is_ad``: the sessions labelled AD, or without labels those predicted AD. None when no session
    is both, unless patent flags need it (then a UsageError)."""
    try:
        lambda_ = reference_statistics(p_region, is_ad, predicted_ad).lambda_
    except ValueError:
        if flag_kind == "patent":
            raise UsageError(
                "--normalisation cohort: no analysed session is AD and predicted AD, so lambda (SPEC 5) cannot be computed over the cohort; "
                "use --normalisation reference (or --flags normative)"
            ) from None
        return None
    log.info("--normalisation cohort: lambda %.3f, computed over the %d session(s) AD and predicted AD, as SPEC 5 computes the model's "
             "over its reference cohort", lambda_, int((np.asarray(is_ad) & np.asarray(predicted_ad)).sum()))  # fmt: skip
    return lambda_


def regional_flags(flag_kind, norm, lambda_, normative, rows):
    """(flags (n, 246), the scores the trajectories follow, the cut-off they cross, a note on unreliable
    sessions or None): normalised scores above lambda (patent), or grey-level z below the reference's
    calibrated cut-off (normative)."""
    if flag_kind != "normative":
        return norm > lambda_, norm, lambda_, None
    # trajectories follow the grey-level z (falling with atrophy) and its calibrated flag_z; the flags of a session
    # far from the reference (another scanner) would swamp the counts, so they are counted apart
    reliable = normative.reliable[rows]
    flags, traj_scores, flag_cutoff = normative.atrophic[rows] & reliable[:, None], normative.z[rows], normative.flag_z
    unreliable_note = None
    if not reliable.all():
        unreliable_note = (f"{(~reliable).sum()} of {len(reliable)} session(s) lie far from the model's normative reference (e.g. another "
                           f"scanner or protocol): their {int(normative.atrophic[rows][~reliable].sum())} atrophic flag(s) are not reliable "
                           "and are left out of the frequencies, sets, trajectories and order (sessions.tsv: normative_reliable false); "
                           "build a reference from your site's healthy scans with bids_pscore-normative")  # fmt: skip
    return flags, traj_scores, flag_cutoff, unreliable_note


def degeneration_frequency(flags, regions, predicted_ad, labelled_ad=None):
    """Per region, the share of sessions predicted AD (and labelled AD) in which it is degenerative, ranked.

    ``flags`` (n, 246) bool; ``regions`` the atlas table (index, label, name).
    """
    flags = np.asarray(flags, bool)
    table = regions[["index", "label", "name"]].copy()
    groups = {"predicted_ad": np.asarray(predicted_ad, bool)}
    if labelled_ad is not None:
        groups["labelled_ad"] = np.asarray(labelled_ad, bool)
    for name, rows in groups.items():
        n = int(rows.sum())
        table[f"sessions_{name}"] = n
        table[f"degenerative_{name}"] = flags[rows].sum(axis=0)
        table[f"frequency_{name}"] = table[f"degenerative_{name}"] / n if n else np.nan
    table = table.sort_values(["frequency_predicted_ad", "index"], ascending=[False, True], na_position="last")
    frequency = table["frequency_predicted_ad"]
    # regions as frequent share a rank; one never degenerative (or no session predicted AD) has none (n/a), not a place by atlas index
    table.insert(0, "rank", frequency.rank(method="min", ascending=False).where(frequency > 0).astype("Int64"))
    return table.reset_index(drop=True)


def frequent_sets(flags, labels, min_support, max_size):
    """Sets of two or more regions that are degenerative together in at least ``min_support`` of the sessions.

    The patent's Table 2. Mined with efficient-apriori (Apriori, Agrawal and Srikant 1994) over one
    transaction per session: the set of its degenerative regions. Returns regions (joined with
    ' + '), size, sessions and support, by support then size.
    """
    from efficient_apriori import itemsets_from_transactions

    labels = np.asarray(labels)
    transactions = [tuple(labels[row]) for row in np.asarray(flags, bool)]
    columns = ["regions", "size", "sessions", "support"]
    if not transactions or max_size < 2:
        return pd.DataFrame(columns=columns)
    itemsets, _ = itemsets_from_transactions(transactions, min_support, max_length=max_size)
    rows = [
        {"regions": " + ".join(sorted(items)), "size": size, "sessions": count, "support": count / len(transactions)}
        for size, found in itemsets.items() if size >= 2 for items, count in found.items()
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values(["support", "size", "regions"], ascending=[False, False, True]).reset_index(drop=True)


def trajectories(ordered, scores, flags, regions):
    """Per subject with two or more sessions and per region: slope of the score and first crossing of lambda.

    ``ordered`` comes from ``order_sessions``; ``scores`` and ``flags`` are (n, 246) in the row
    order of ``ordered``. The slope is per year when the acquisition times of every followed
    subject are known, else per session for the whole group, so that no table or median mixes the
    two; the onset is when the region is first above lambda (0 when it already is at the first
    session), in the same unit; n/a if it never is.
    """
    counted = ordered[~ordered["repeat"]]
    followed = counted[counted.groupby("participant_id")["participant_id"].transform("size") >= 2]
    without_times = sorted(followed.loc[followed["order_by"] != "acq_time", "participant_id"].unique())
    by_time = not without_times
    if without_times and (followed["order_by"] == "acq_time").any():
        log.info("trajectories are per session for every subject: %s lack acquisition times (acq_time in sessions.tsv or scans.tsv)",
                 ", ".join(without_times))  # fmt: skip
    rows = []
    for participant, part in followed.groupby("participant_id", sort=True):
        idx = part.index.to_numpy()
        x = part["years_from_first"].to_numpy(float) if by_time else part["session_index"].to_numpy(float)
        y, above = scores[idx], flags[idx]
        centred = x - x.mean()
        slope = centred @ (y - y.mean(axis=0)) / (centred @ centred) if centred.any() else np.full(y.shape[1], np.nan)
        first = np.where(above.any(axis=0), above.argmax(axis=0), -1)
        rows.append(pd.DataFrame({
            "participant_id": participant, "index": regions["index"], "label": regions["label"],
            "sessions": len(part), "unit": "year" if by_time else "session",
            "first": part["session_id"].iloc[0], "last": part["session_id"].iloc[-1],
            "slope": slope, "start": y[0], "end": y[-1],
            "onset_session": np.where(first >= 0, part["session_id"].to_numpy()[np.maximum(first, 0)], "n/a"),
            "onset": np.where(first >= 0, x[np.maximum(first, 0)], np.nan),
        }))  # fmt: skip
    columns = ["participant_id", "index", "label", "sessions", "unit", "first", "last", "slope", "start", "end", "onset_session", "onset"]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)


def onset_order(traj, regions):
    """The order in which regions become involved across subjects: median onset, subjects behind it.

    Regions are ranked by median onset over the subjects in which they cross lambda, then by the
    share of followed subjects in which they do (involved in more subjects = earlier); regions
    that never cross come last, unranked.
    """
    followed = traj["participant_id"].nunique()
    involved = traj[traj["onset"].notna()]
    stats = involved.groupby("index")["onset"].agg(["median", "mean", "count"])
    table = regions[["index", "label", "name"]].merge(stats, left_on="index", right_index=True, how="left")
    table = table.rename(columns={"median": "median_onset", "mean": "mean_onset", "count": "subjects_involved"})
    table["subjects_involved"] = table["subjects_involved"].fillna(0).astype(int)
    table["subjects_followed"] = followed
    table["share_involved"] = table["subjects_involved"] / followed if followed else np.nan
    table["unit"] = traj["unit"].iloc[0] if len(traj) else "n/a"  # one unit for the whole group (trajectories)
    table = table.sort_values(["median_onset", "share_involved", "index"], ascending=[True, False, True], na_position="last")
    # regions as early and in as many subjects share an order (the first place of their tie), not one by atlas index
    place = pd.Series(np.arange(1, len(table) + 1), index=table.index)
    tied_first = place.groupby([table["median_onset"], table["share_involved"]]).transform("min")
    table.insert(0, "order", np.where(table["subjects_involved"] > 0, tied_first, 0).astype(int))
    return table.reset_index(drop=True)


def compare_groups(scores, is_ad, regions):
    """Per region, AD against control: Mann-Whitney U, Benjamini-Hochberg q, rank-biserial r.

    One row of ``scores`` per subject (sessions of one person are not independent). r > 0 means
    higher scores in AD.
    """
    from scipy.stats import false_discovery_control, mannwhitneyu

    scores, is_ad = np.asarray(scores, np.float64), np.asarray(is_ad, bool)
    ad, control = scores[is_ad], scores[~is_ad]
    table = regions[["index", "label", "name"]].copy()
    table["n_ad"], table["n_control"] = len(ad), len(control)
    table["median_ad"], table["median_control"] = np.median(ad, axis=0), np.median(control, axis=0)
    u, p = mannwhitneyu(ad, control, axis=0, alternative="two-sided")
    table["u"], table["p"] = u, p
    table["rank_biserial_r"] = 2.0 * u / (len(ad) * len(control)) - 1.0
    tested = ~np.isnan(p)
    q = np.full(len(p), np.nan)
    if tested.any():
        q[tested] = false_discovery_control(p[tested], method="bh")
    table["q_fdr"] = q
    return table.sort_values(["q_fdr", "index"], na_position="last").reset_index(drop=True)


def group_comparison(ordered, norm, labelled_ad, is_labelled, regions, options):
    """(the comparison of the labelled groups on each subject's first session, or None, and the note saying
    why there is none, or None): made only with MIN_SUBJECTS_PER_GROUP subjects in each group."""
    first = (ordered["session_index"].to_numpy() == 0) & ~ordered["repeat"].to_numpy()
    use = first & is_labelled
    n_ad, n_control = int(labelled_ad[use].sum()), int((~labelled_ad[use]).sum())
    if min(n_ad, n_control) >= MIN_SUBJECTS_PER_GROUP:
        return compare_groups(norm[use], labelled_ad[use], regions), None
    smallest_p = min(1.0, 2 / math.comb(n_ad + n_control, n_ad))
    return None, (
        f"no comparison of {options.positive} and {options.negative}: their first sessions hold {n_ad} and {n_control} subject(s), and "
        f"the Mann-Whitney test is made only with at least {MIN_SUBJECTS_PER_GROUP} in each group (with these, its smallest "
        f"possible p is {smallest_p:.2g})"
    )
