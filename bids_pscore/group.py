"""Group level (SPEC section 9): what the P-scores say across people and over time.

``run_group`` reads the participant-level files into the sessions table (``group_sessions``),
computes the tables with the statistics of ``group_statistics`` and writes the tables and the
report. One row of every array is one scored T1w ("session").
"""

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .config import write_config
from .derivatives import layout
from .derivatives.columns import REGION_SEPARATOR
from .errors import EXIT_OK, EXIT_SESSION_FAILED, UsageError
from .fileio import remove_stale_temporaries
from .group_sessions import read_participant_outputs, select_summaries, sessions_in_order
from .group_statistics import (
    MIN_COHORT_SESSIONS,
    MIN_SUBJECTS_PER_GROUP,
    cohort_lambda,
    cohort_normalise,
    degeneration_frequency,
    frequent_sets,
    group_comparison,
    onset_order,
    regional_flags,
    trajectories,
)
from .progress import RESULT

log = logging.getLogger(__name__)

# a subset's folder is named for its labels up to this length (file names have limits), else by a checksum of them
MAX_SUBSET_NAME = 80


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


FLAG_TEXT = {
    "normative": "regions whose grey-level z against the model's healthy reference is below its calibrated threshold (SPEC 10)",
    "patent": "regions whose normalised P-score is above lambda (SPEC 5)",
}


def run_group(config):
    """Group level (SPEC section 9) over the participant outputs in the output folder; returns the
    exit code (1 when damaged outputs were left out)."""
    from .atlas import region_table
    from .derivatives.dataset_files import write_group_tables
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
    ordered, labelled_ad, is_labelled = sessions_in_order(sessions, config.bids_dir, options)
    rows = ordered["row"].to_numpy()
    raw, reference_norm = raw[rows], reference_norm[rows]
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
    tables = group_tables(ordered, raw, reference_norm, cohort_norm, flags, traj_scores, flag_kind, normative, rows, regions, predicted_ad,
                          labelled_ad, options)  # fmt: skip
    warnings = analysis_warnings(model, model_lambda, unreliable_note, len(ordered), options.normalisation)
    comparison, comparison_note = (
        group_comparison(ordered, norm, labelled_ad, is_labelled, regions, options) if options.label_column else (None, None)
    )
    if comparison is not None:
        tables["comparison"] = comparison
    said = warnings + ([comparison_note] if comparison_note else [])
    for line in said:
        log.warning("%s", line)
    minimums = analysis_minimums(options)
    # what every sidecar says beside its columns
    notes = {**({"Selection": subset} if subset else {}), **({"Warnings": said} if said else {}), **minimums}
    written = write_group_tables(folder, tables, options.normalisation, lambda_, model, flag_kind, flag_cutoff, notes)
    write_group_report(folder, tables, traj_scores, flag_cutoff, model, options, flag_kind, config.bids_dir, warnings, comparison_note, subset,
                       minimums)  # fmt: skip
    log.log(RESULT, "group: %d sessions of %d subjects (%d predicted AD); tables and report in %s", len(ordered),
            ordered["participant_id"].nunique(), predicted_ad.sum(), written)  # fmt: skip
    return EXIT_SESSION_FAILED if damaged else EXIT_OK


def analysis_minimums(options):
    """The least the analysis needs (cohort sessions; subjects per group with labels), as the sidecars and the report state it."""
    return {"MinimumCohortSessions": MIN_COHORT_SESSIONS, **({"MinimumSubjectsPerGroup": MIN_SUBJECTS_PER_GROUP} if options.label_column else {})}


def flag_kind_of(options, normative, output_dir):
    """The flags counted (--flags, by default normative where every session has them, else patent);
    refuses --flags normative without normative outputs."""
    flag_kind = options.flags or ("normative" if normative is not None else "patent")
    if flag_kind == "normative" and normative is None:
        raise UsageError(f"{output_dir}: --flags normative, but not every session has normative outputs (the model that scored them has "
                         "no normative reference, or they were scored before it had one): use --flags patent, or score them again")  # fmt: skip
    return flag_kind


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
    ordered["degenerative_regions"] = [REGION_SEPARATOR.join(labels[f]) for f in flags]
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
