"""The group level's sessions table: the participant-level results of every scored T1w ("session")
read into one frame and its region arrays, ordered in time, with the dataset's participant columns
and diagnoses beside them. One row of every array is one session."""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import bids, tabular
from .derivatives import layout
from .derivatives.records import Summary
from .errors import ModelError, NoT1wError

# the group level's messages, under one logger name whichever of its modules says them
log = logging.getLogger(f"{__package__}.group")


@dataclass(frozen=True)
class Normative:
    """The sessions' comparison with the model's normative reference (SPEC 10)."""

    z: np.ndarray  # (n, 246) grey-level z
    atrophic: np.ndarray  # (n, 246) bool
    flag_z: float  # a region is atrophic below this z
    reliable: np.ndarray  # (n,) False where the session lies beyond the reference's distance threshold (its flags mean nothing)


def select_summaries(summaries, participant_labels=(), session_labels=()):
    """The summaries of the subjects and sessions selected (every one when no label is given)."""
    if participant_labels:
        summaries = [p for p in summaries if bids.source_entities(p)["sub"] in set(participant_labels)]
    if session_labels:
        summaries = [p for p in summaries if bids.source_entities(p).get("ses") in set(session_labels)]
    return summaries


def _check_region_rows(table, what=""):
    """A ValueError where ``table`` lacks a row per region or misses a value (``what`` names the table in the message)."""
    if len(table) != 246 or table.isna().any().any():
        raise ValueError(f"{what}{len(table)} rows, {int(table.isna().sum().sum())} missing values")


def read_session(output_dir, path):
    """One session's results: (its columns of the sessions table, its model record, its region table
    (p_region, p_region_norm), its normative deviation (z, atrophic, flag z, reference checksum,
    reliable) or None). OSError, ValueError, KeyError or TypeError where its outputs are unreadable or
    incomplete (JSON, pandas and NumPy parse errors are ValueErrors)."""
    summary = Summary.from_json(path)
    model = {**summary.model, "Space": summary.space}
    # model.json's checksum (weights, reference, rule, class offset), asked for first so that a summary without it is left out
    # like any other damaged one
    if "MetadataSHA256" not in model:
        raise KeyError("MetadataSHA256")
    # class_reliable: None where the model had no class domain (and in summaries written before it)
    scored = {"ad_probability": float(summary.ad_probability), "predicted_class": str(summary.predicted_class),
              "class_reliable": summary.class_reliable, "lambda": float(summary.lambda_)}  # fmt: skip
    entities = bids.source_entities(path)
    # the session's other files, named by the one description of its outputs
    outputs = layout.session_outputs(entities, summary.space, layout.PSCORE, layout.NORMATIVE)
    table = pd.read_csv(Path(output_dir) / outputs["region_table"], sep="\t", usecols=["p_region", "p_region_norm"])
    _check_region_rows(table)
    deviation = None
    if summary.normative is not None:
        z = pd.read_csv(Path(output_dir) / outputs["normative_region_table"], sep="\t", usecols=["grey_level_z", "atrophic"])
        _check_region_rows(z, "normative table: ")
        deviation = (z["grey_level_z"].to_numpy(float), z["atrophic"].astype(str).str.lower().eq("true").to_numpy(),
                     float(summary.normative["Threshold"]), summary.normative.get("SHA256"),
                     bool(summary.normative.get("Reliable", True)))  # fmt: skip
    columns = {
        "participant_id": f"sub-{entities['sub']}", "session_id": f"ses-{entities['ses']}" if "ses" in entities else "n/a",
        "t1w": layout.t1w_name(entities), "sub": entities["sub"], "ses": entities.get("ses"), **scored,
    }  # fmt: skip
    return columns, model, table, deviation


def read_participant_outputs(output_dir, participant_labels=None, session_labels=None):
    """Summaries and region tables of every scored session.

    Returns (sessions frame, raw region scores (n, 246), reference-normalised scores (n, 246),
    lambda, model record, one line per session left out because its outputs cannot be read, and
    the normative comparison (``Normative``) when every read session has one, else None).
    Refuses an empty folder and outputs of more than one model.
    """
    summaries = select_summaries(layout.summary_files(output_dir), participant_labels, session_labels)
    if not summaries:
        raise NoT1wError(f"{output_dir}: holds no participant-level P-score outputs (*_desc-summary_pscore.json); "
                         "run the participant level first")  # fmt: skip
    rows, raw, norm, models, damaged, deviations = [], [], [], {}, [], []
    for path in summaries:
        try:
            columns, model, table, deviation = read_session(output_dir, path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            damaged.append(f"{path.name}: unreadable or incomplete outputs ({str(exc).splitlines()[0][:120]}); "
                           "run the participant level again for this session")  # fmt: skip
            continue
        models.setdefault(model["MetadataSHA256"], (model, path))
        raw.append(table["p_region"].to_numpy())
        norm.append(table["p_region_norm"].to_numpy())
        deviations.append(deviation)
        rows.append({**columns, "row": len(rows)})
    model = one_model(models, output_dir)
    if not rows:
        raise NoT1wError(f"{output_dir}: none of its {len(summaries)} scored session(s) can be read: {damaged[0]}")
    lambdas = {row["lambda"] for row in rows}
    return pd.DataFrame(rows), np.array(raw), np.array(norm), lambdas.pop(), model, damaged, pooled_normative(rows, deviations, output_dir)


def one_model(models, output_dir):
    """The one model record of ``models`` (model.json checksum -> (record, a summary's path)), None
    when there is none; refuses more than one, whose scores cannot be pooled."""
    if len(models) > 1:
        (first, first_path), (second, second_path) = list(models.values())[:2]
        raise ModelError(
            f"{output_dir}: holds outputs of {len(models)} different models ({first['Name']} in {first_path.name}, {second['Name']} "
            f"in {second_path.name}; model.json checksums {first['MetadataSHA256'][:8]} and {second['MetadataSHA256'][:8]}: other weights, "
            "normative reference or class offset); their scores cannot be pooled: give each model its own output folder, or score "
            "them again with one"
        )
    return next((model for model, _ in models.values()), None)


def pooled_normative(rows, deviations, output_dir):
    """The sessions' ``Normative`` when every one has a normative deviation (refused when they come from
    different references), else None, said with a warning when only some have one."""
    if all(d is not None for d in deviations):
        references = {d[3] for d in deviations}
        if len(references) > 1:
            raise ModelError(f"{output_dir}: its sessions were compared with {len(references)} different normative references (Normative.SHA256 "
                             "of the summaries): their flags cannot be pooled; score them again with one model")  # fmt: skip
        return Normative(np.array([d[0] for d in deviations]), np.array([d[1] for d in deviations]), deviations[0][2],
                         np.array([d[4] for d in deviations]))  # fmt: skip
    if any(d is not None for d in deviations):
        without = [row["t1w"] for row, d in zip(rows, deviations) if d is None]
        log.warning("%d session(s) have no normative outputs (%s%s), so the normative flags are not counted; score them again with a model "
                    "that has a normative reference", len(without), ", ".join(without[:3]), ", ..." if len(without) > 3 else "")  # fmt: skip
    return None


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


def log_repeats(ordered):
    """Say which T1w repeat a session already counted (e.g. run-2)."""
    if ordered["repeat"].any():
        log.info(
            "%d T1w repeat a session already counted (e.g. run-2): they are in the tables but not in trajectories or comparisons: %s",
            ordered["repeat"].sum(),
            ", ".join(ordered.loc[ordered["repeat"], "t1w"]),
        )


def sessions_in_order(sessions, bids_dir, options):
    """The sessions table ordered in time (``order_sessions``, repeats said) with the columns of the
    dataset's participants.tsv and, with --label-column, each session's diagnosis; and (labelled AD,
    labelled at all) per session, (None, None) without labels."""
    ordered = order_sessions(sessions, tabular.acquisition_times(bids_dir))
    log_repeats(ordered)
    ordered = with_participant_columns(ordered, Path(bids_dir) / "participants.tsv")
    labelled_ad, is_labelled = with_diagnoses(ordered, bids_dir, options)
    return ordered, labelled_ad, is_labelled
