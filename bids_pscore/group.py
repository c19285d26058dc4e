"""Group level (SPEC section 9): what the P-scores say across people and over time.

``run_group`` reads the participant-level files (``read_participant_outputs``), computes the
tables with the pure functions on arrays and data frames below, and writes the tables and the
report. One row of every array is one scored T1w ("session").
"""

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import bids, tabular
from .config import write_config
from .derivatives import layout
from .errors import EXIT_OK, EXIT_SESSION_FAILED, ModelError, NoT1wError, UsageError
from .fileio import remove_stale_temporaries
from .progress import RESULT
from .pscore import normalise_regions, reference_statistics

log = logging.getLogger(__name__)

# Mann-Whitney's smallest two-sided p is 2 / C(n_ad + n_control, n_ad): 1 at 1 against 1, 0.1 at 3
# against 3, 0.029 at 4 against 4, 0.008 at 5 against 5. A group of fewer than 5 subjects is not
# tested (a sentence says why): at 4 against 4 no region could reach p < 0.01, and the median of so
# few is hardly the group's.
MIN_SUBJECTS_PER_GROUP = 5
# Cohort normalisation sets each region's 0 and 1 by its lowest and highest session: over fewer than
# 10 sessions a fifth or more of the scores are those two ends, and lambda over its AD sessions rests on
# a handful of values. It is still computed, with a warning in the report and the sidecars.
MIN_COHORT_SESSIONS = 10
# a subset's folder is named for its labels up to this length (file names have limits), else by a checksum of them
MAX_SUBSET_NAME = 80


def select_summaries(summaries, participant_labels=(), session_labels=()):
    """The summaries of the subjects and sessions selected (every one when no label is given)."""
    if participant_labels:
        summaries = [p for p in summaries if bids.source_entities(p)["sub"] in set(participant_labels)]
    if session_labels:
        summaries = [p for p in summaries if bids.source_entities(p).get("ses") in set(session_labels)]
    return summaries


def group_folder(output_dir, participant_labels=(), session_labels=()):
    """The folder a group run writes to, and a sentence saying which subset it analyses (None for all).

    group/ always holds the analysis of every scored session in the output folder: a run whose
    --participant-label or --session-label leave some out writes beside it, to a folder named for
    the selection (group_sub-01+02_ses-1), so that it never silently replaces the larger analysis.
    """
    every = layout.summary_files(output_dir)
    selected = select_summaries(every, participant_labels, session_labels)
    if len(selected) == len(every):
        return Path(output_dir) / layout.GROUP_DIR, None
    parts = [f"{key}-{'+'.join(labels)}" for key, labels in (("sub", participant_labels), ("ses", session_labels)) if labels]
    name = "_".join([layout.GROUP_DIR, *parts])
    if len(name) > MAX_SUBSET_NAME:
        name = f"{layout.GROUP_DIR}_subset-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    subset = (f"a subset: {' '.join(parts)} ({len(selected)} of the {len(every)} scored T1w in the output folder), written to {name}/ "
              f"beside {layout.GROUP_DIR}/, which holds the analysis of every scored T1w and is not replaced")  # fmt: skip
    return Path(output_dir) / name, subset


def read_participant_outputs(output_dir, participant_labels=None, session_labels=None):
    """Summaries and region tables of every scored session.

    Returns (sessions frame, raw region scores (n, 246), reference-normalised scores (n, 246),
    lambda, model record, one line per session left out because its outputs cannot be read, and
    the normative comparison (``Normative``) when every read session has one, else None).
    Refuses an empty folder and outputs of more than one model.
    """
    from .derivatives.records import Summary

    summaries = select_summaries(layout.summary_files(output_dir), participant_labels, session_labels)
    if not summaries:
        raise NoT1wError(f"{output_dir}: holds no participant-level P-score outputs (*_desc-summary_pscore.json); "
                         "run the participant level first")  # fmt: skip
    rows, raw, norm, models, damaged, deviations = [], [], [], {}, [], []
    for path in summaries:
        try:
            summary = Summary.from_json(path)
            model = {**summary.model, "Space": summary.space}
            # model.json's checksum (weights, reference, rule, class offset), read here so that a summary without it is left out
            # like any other damaged one
            model_checksum = model["MetadataSHA256"]
            # class_reliable: None where the model had no class domain (and in summaries written before it)
            scored = {"ad_probability": float(summary.ad_probability), "predicted_class": str(summary.predicted_class),
                      "class_reliable": summary.class_reliable, "lambda": float(summary.lambda_)}  # fmt: skip
            entities = bids.source_entities(path)
            # the session's other files, named by the one description of its outputs
            outputs = layout.session_outputs(entities, summary.space, layout.PSCORE, layout.NORMATIVE)
            table = pd.read_csv(Path(output_dir) / outputs["region_table"], sep="\t", usecols=["p_region", "p_region_norm"])
            if len(table) != 246 or table.isna().any().any():
                raise ValueError(f"{len(table)} rows, {int(table.isna().sum().sum())} missing values")
            deviation = None
            if summary.normative is not None:
                z = pd.read_csv(Path(output_dir) / outputs["normative_region_table"], sep="\t", usecols=["grey_level_z", "atrophic"])
                if len(z) != 246 or z.isna().any().any():
                    raise ValueError(f"normative table: {len(z)} rows, {int(z.isna().sum().sum())} missing values")
                deviation = (z["grey_level_z"].to_numpy(float), z["atrophic"].astype(str).str.lower().eq("true").to_numpy(),
                             float(summary.normative["Threshold"]), summary.normative.get("SHA256"),
                             bool(summary.normative.get("Reliable", True)))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError) as exc:  # JSON, pandas and NumPy parse errors are ValueErrors
            damaged.append(f"{path.name}: unreadable or incomplete outputs ({str(exc).splitlines()[0][:120]}); "
                           "run the participant level again for this session")  # fmt: skip
            continue
        models.setdefault(model_checksum, (model, path))
        raw.append(table["p_region"].to_numpy())
        norm.append(table["p_region_norm"].to_numpy())
        deviations.append(deviation)
        rows.append({
            "participant_id": f"sub-{entities['sub']}", "session_id": f"ses-{entities['ses']}" if "ses" in entities else "n/a",
            "t1w": layout.t1w_name(entities), "sub": entities["sub"], "ses": entities.get("ses"),
            **scored, "row": len(rows),
        })  # fmt: skip
    if len(models) > 1:
        (first, first_path), (second, second_path) = list(models.values())[:2]
        raise ModelError(
            f"{output_dir}: holds outputs of {len(models)} different models ({first['Name']} in {first_path.name}, {second['Name']} "
            f"in {second_path.name}; model.json checksums {first['MetadataSHA256'][:8]} and {second['MetadataSHA256'][:8]}: other weights, "
            "normative reference or class offset); their scores cannot be pooled: give each model its own output folder, or score "
            "them again with one"
        )
    if not rows:
        raise NoT1wError(f"{output_dir}: none of its {len(summaries)} scored session(s) can be read: {damaged[0]}")
    lambdas = {row["lambda"] for row in rows}
    ((model, _),) = models.values()
    normative = None
    if all(d is not None for d in deviations):
        references = {d[3] for d in deviations}
        if len(references) > 1:
            raise ModelError(f"{output_dir}: its sessions were compared with {len(references)} different normative references (Normative.SHA256 "
                             "of the summaries): their flags cannot be pooled; score them again with one model")  # fmt: skip
        normative = Normative(np.array([d[0] for d in deviations]), np.array([d[1] for d in deviations]), deviations[0][2],
                              np.array([d[4] for d in deviations]))  # fmt: skip
    elif any(d is not None for d in deviations):
        without = [row["t1w"] for row, d in zip(rows, deviations) if d is None]
        log.warning("%d session(s) have no normative outputs (%s%s), so the normative flags are not counted; score them again with a model "
                    "that has a normative reference", len(without), ", ".join(without[:3]), ", ..." if len(without) > 3 else "")  # fmt: skip
    return pd.DataFrame(rows), np.array(raw), np.array(norm), lambdas.pop(), model, damaged, normative


@dataclass(frozen=True)
class Normative:
    """The sessions' comparison with the model's normative reference (SPEC 10)."""

    z: np.ndarray  # (n, 246) grey-level z
    atrophic: np.ndarray  # (n, 246) bool
    flag_z: float  # a region is atrophic below this z
    reliable: np.ndarray  # (n,) False where the session lies beyond the reference's distance threshold (its flags mean nothing)


FLAG_TEXT = {
    "normative": "regions whose grey-level z against the model's healthy reference is below its calibrated threshold (SPEC 10)",
    "patent": "regions whose normalised P-score is above lambda (SPEC 5)",
}


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


def order_sessions(sessions, times):
    """Sessions sorted within each subject by acquisition time, else by session label.

    ``times`` maps (sub, ses) to (timestamp, source file). Adds ``acq_time``, ``time_source``,
    ``order_by`` (what the subject's sessions are ordered by: 'acq_time' when every one of them
    has a time, else 'session label'), ``session_index`` (0, 1, ... per session), ``years_from_first``
    (n/a when ordered by label) and ``repeat`` (True for a second T1w of a session already
    counted, e.g. run-2: the same time point, kept out of trajectories and comparisons).
    """
    out = sessions.copy()
    found = [times.get((sub, ses)) for sub, ses in zip(out["sub"], out["ses"])]
    out["acq_time"] = pd.to_datetime([t[0] if t else pd.NaT for t in found])
    out["time_source"] = [t[1] if t else "n/a" for t in found]
    parts = []
    for _, part in out.groupby("participant_id", sort=True):
        if part["acq_time"].notna().all():
            part = part.sort_values(["acq_time", "t1w"]).assign(order_by="acq_time")
            part["years_from_first"] = (part["acq_time"] - part["acq_time"].min()).dt.total_seconds() / (365.25 * 86400)
        else:
            part = part.loc[sorted(part.index, key=lambda i: (bids.natural_key(part.at[i, "session_id"]), bids.natural_key(part.at[i, "t1w"])))]
            part = part.assign(order_by="session label", years_from_first=np.nan)
        repeat = part["session_id"].duplicated().to_numpy()
        parts.append(part.assign(session_index=np.cumsum(~repeat) - 1, repeat=repeat))
    return pd.concat(parts).reset_index(drop=True)


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


def with_participant_columns(ordered, participants_tsv):
    """The session table with the columns of the dataset's participants.tsv (age, sex, ...)."""
    if not participants_tsv.is_file():
        return ordered
    try:
        extra = pd.read_csv(participants_tsv, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        extra = pd.DataFrame()
    if "participant_id" not in extra.columns:
        log.warning(
            "%s: no participant_id column (or not a TSV table), so its columns are not added to the tables; fix it as BIDS describes",
            participants_tsv,
        )
        return ordered
    extra = extra.drop(columns=[c for c in extra.columns if c in ordered.columns and c != "participant_id"])
    return ordered.merge(extra.drop_duplicates("participant_id"), on="participant_id", how="left")


def truth_rows(ordered, flags, flag_kind, truth, labels):
    """(header, rows) of the sessions' truth beside their results when bids_pscore-synth made the
    dataset (``truth``: groundtruth.read_truth), else None."""
    from .groundtruth import check_flags
    from .report.html import TRUTH_COLUMNS, truth_cells

    rows = []
    for k, session in enumerate(ordered.itertuples()):
        session_truth = (truth or {}).get((session.participant_id, session.session_id))
        if session_truth is not None:
            check = check_flags(flags[k], session_truth, labels)
            rows.append((session.participant_id, session.session_id,
                         *truth_cells(session_truth, session.predicted_class, session.ad_probability, check, flag_kind)))  # fmt: skip
    return (("subject", "session", *TRUTH_COLUMNS), rows) if rows else None


def run_group(config):
    """Group level (SPEC section 9) over the participant outputs in the output folder; returns the
    exit code (1 when damaged outputs were left out)."""
    from .atlas import region_table
    from .derivatives.dataset_files import write_group_tables
    from .groundtruth import read_truth
    from .report.group import write_group_report

    options, output_dir, selection = config.group, Path(config.output_dir), config.selection
    # reading refuses an empty folder or mixed models before anything is written
    sessions, raw, reference_norm, model_lambda, model, damaged, normative = read_participant_outputs(
        output_dir, selection.participant_label, selection.session_label
    )
    folder, subset = group_folder(output_dir, selection.participant_label, selection.session_label)
    flag_kind = flag_kind_of(options, normative, output_dir)
    remove_stale_temporaries(output_dir)
    write_config(config, output_dir / "logs" / f"run-{config.run_id}")
    for line in damaged:
        log.warning("left out %s", line)
    if subset:
        log.info("group: %s", subset)
    ordered = order_sessions(sessions, tabular.acquisition_times(config.bids_dir))
    log_repeats(ordered)
    rows = ordered["row"].to_numpy()
    raw, reference_norm = raw[rows], reference_norm[rows]
    ordered = with_participant_columns(ordered, Path(config.bids_dir) / "participants.tsv")
    labelled_ad, is_labelled = with_diagnoses(ordered, config.bids_dir, options)
    predicted_ad = ordered["predicted_class"].to_numpy() == "AD"
    cohort_norm = cohort_normalise(raw)
    lambda_ = model_lambda
    if options.normalisation == "reference":
        norm = reference_norm
    else:
        norm, lambda_ = cohort_norm, cohort_lambda(raw, predicted_ad if labelled_ad is None else labelled_ad, predicted_ad, flag_kind)
    if normative is not None:
        ordered["normative_reliable"] = normative.reliable[rows]
    flags, traj_scores, flag_cutoff, unreliable_note = regional_flags(flag_kind, norm, lambda_, normative, rows)
    log.info("group: counting %s flags (%s)", flag_kind, FLAG_TEXT[flag_kind])
    regions = region_table()
    labels = np.asarray(regions["label"])
    tables = group_tables(ordered, raw, reference_norm, cohort_norm, flags, traj_scores, flag_kind, normative, rows, regions, predicted_ad,
                          labelled_ad, options)  # fmt: skip
    warnings = analysis_warnings(model, model_lambda, unreliable_note, len(ordered), options.normalisation)
    comparison_note = None
    if options.label_column:
        comparison, comparison_note = group_comparison(ordered, norm, labelled_ad, is_labelled, regions, options)
        if comparison is not None:
            tables["comparison"] = comparison
    said = warnings + ([comparison_note] if comparison_note else [])
    for line in said:
        log.warning("%s", line)
    # what every sidecar says beside its columns
    minimums = {"MinimumCohortSessions": MIN_COHORT_SESSIONS, **({"MinimumSubjectsPerGroup": MIN_SUBJECTS_PER_GROUP} if options.label_column else {})}
    notes = {**({"Selection": subset} if subset else {}), **({"Warnings": said} if said else {}), **minimums}
    written = write_group_tables(folder, tables, options.normalisation, lambda_, model, flag_kind, flag_cutoff, notes)
    truth = read_truth(config.bids_dir)
    write_group_report(folder, tables, traj_scores, flag_cutoff, model, options, flag_kind,
                       truth_rows(ordered, flags, flag_kind, truth, labels), warnings, comparison_note, subset, minimums)  # fmt: skip
    log.log(
        RESULT,
        "group: %d sessions of %d subjects (%d predicted AD); tables and report in %s",
        len(ordered),
        ordered["participant_id"].nunique(),
        predicted_ad.sum(),
        written,
    )
    return EXIT_SESSION_FAILED if damaged else EXIT_OK


def flag_kind_of(options, normative, output_dir):
    """The flags counted (--flags, by default normative where every session has them, else patent);
    refuses --flags normative without normative outputs."""
    flag_kind = options.flags or ("normative" if normative is not None else "patent")
    if flag_kind == "normative" and normative is None:
        raise UsageError(f"{output_dir}: --flags normative, but not every session has normative outputs (the model that scored them has "
                         "no normative reference, or they were scored before it had one): use --flags patent, or score them again")  # fmt: skip
    return flag_kind


def log_repeats(ordered):
    """Say which T1w repeat a session already counted (e.g. run-2)."""
    if ordered["repeat"].any():
        log.info(
            "%d T1w repeat a session already counted (e.g. run-2): they are in the tables but not in trajectories or comparisons: %s",
            ordered["repeat"].sum(),
            ", ".join(ordered.loc[ordered["repeat"], "t1w"]),
        )


def with_diagnoses(ordered, bids_dir, options):
    """With --label-column: each session's diagnosis added to ``ordered`` (in place), and (labelled AD,
    labelled at all) per session; (None, None) without labels."""
    if not options.label_column:
        return None, None
    label_of, _, _ = tabular.read_labels(bids_dir, options.label_column, options.positive, options.negative)
    values = [label_of.get((sub, ses), label_of.get((sub, None))) for sub, ses in zip(ordered["sub"], ordered["ses"])]
    is_labelled = np.array([v is not None for v in values])
    labelled_ad = np.array([v == 1 for v in values])
    ordered["diagnosis"] = [{1: options.positive, 0: options.negative}.get(v, "n/a") for v in values]
    return labelled_ad, is_labelled


def regional_flags(flag_kind, norm, lambda_, normative, rows):
    """(flags (n, 246), the scores the trajectories follow, the cut-off they cross, a note on unreliable
    sessions or None): normalised scores above lambda (patent), or grey-level z below the reference's
    calibrated cut-off (normative)."""
    if flag_kind != "normative":
        return norm > lambda_, norm, lambda_, None
    # trajectories follow the grey-level z (falling with atrophy) and its calibrated threshold; the flags of a session
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


def group_tables(ordered, raw, reference_norm, cohort_norm, flags, traj_scores, flag_kind, normative, rows, regions, predicted_ad, labelled_ad,
                 options):  # fmt: skip
    """The group tables (sessions, regions, frequency, sets, trajectories, onset); adds the sessions' whole-brain
    scores and flags to ``ordered`` (in place)."""
    from .pscore import whole_brain

    labels = np.asarray(regions["label"])
    ordered["whole_brain_pscore_reference"] = whole_brain(reference_norm)
    ordered["whole_brain_pscore_cohort"] = whole_brain(cohort_norm)
    ordered["normalisation"] = options.normalisation
    ordered["flags"] = flag_kind
    ordered["n_degenerative"] = flags.sum(axis=1)
    ordered["degenerative_regions"] = [" ".join(labels[f]) for f in flags]
    traj = trajectories(ordered, traj_scores, flags, regions)
    return {
        "sessions": ordered.drop(columns=["sub", "ses", "row", "lambda"]),
        "regions": pd.DataFrame(
            {
                "participant_id": np.repeat(ordered["participant_id"].to_numpy(), len(labels)),
                "session_id": np.repeat(ordered["session_id"].to_numpy(), len(labels)),
                "t1w": np.repeat(ordered["t1w"].to_numpy(), len(labels)),
                "index": np.tile(regions["index"].to_numpy(), len(ordered)),
                "label": np.tile(labels, len(ordered)),
                "p_region": raw.ravel(),
                "p_region_norm_reference": reference_norm.ravel(),
                "p_region_norm_cohort": cohort_norm.ravel(),
                **({"grey_level_z": normative.z[rows].ravel(), "atrophic": normative.atrophic[rows].ravel()} if normative else {}),
                "degenerative": flags.ravel(),
            }
        ),  # fmt: skip
        "frequency": degeneration_frequency(flags, regions, predicted_ad, labelled_ad),
        "sets": frequent_sets(flags[predicted_ad], labels, options.min_support, options.max_set_size),
        "trajectories": traj,
        "onset": onset_order(traj, regions),
    }


def analysis_warnings(model, model_lambda, unreliable_note, n_sessions, normalisation):
    """What the participant level said of the model, and what makes this analysis less certain."""
    from .model.bundle import lambda_warning

    warnings = [w for w in (model.get("Warning"), lambda_warning(model_lambda), unreliable_note) if w]
    if n_sessions < MIN_COHORT_SESSIONS:
        warnings.append(
            f"cohort normalisation is over {n_sessions} session(s), fewer than the {MIN_COHORT_SESSIONS} it needs: each region's 0 and 1 "
            "are its lowest and highest session, so the *_cohort scores"
            + (", the flags and lambda of this run (--normalisation cohort)" if normalisation == "cohort" else "")
            + " say little more than which session is highest"
        )
    return warnings


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
