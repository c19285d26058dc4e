"""The group HTML report (``group/report.html``, or a subset's folder beside it), drawn from the group tables."""

from pathlib import Path

import numpy as np

from .. import viz
from ..derivatives import layout
from ..fileio import write_text
from .html import TRUTH_COLUMNS, frame_rows, render, truth_cells, truth_note

# rows shown of each table (the TSV files hold them all), and bars of the frequency chart
TOP = 20
BARS = 25

# every figure the group report can show; one this run does not draw is removed, not left from an earlier run
FIGURES = ("whole_brain_by_group", "degeneration_frequency_bars", "degeneration_frequency_map", "trajectories_plot", "onset_order_plot")


def write_group_report(folder, tables, norm, flag_cutoff, model, options, flags, bids_dir, warnings, comparison_note, subset, minimums):
    """Figures and report.html in ``folder`` (group.group_folder); returns the report's path. ``norm`` and
    ``flag_cutoff`` are what the trajectories follow: normalised scores and lambda with patent
    flags, grey-level z and the calibrated threshold with normative ones. ``bids_dir``: the dataset,
    whose truth the report shows beside the results when bids_pscore-synth made it. ``warnings``: the
    model's and the analysis' (shown at the top); ``comparison_note``: why there is no comparison of
    the groups, or None; ``subset``: the sentence saying which subset this is, or None; ``minimums``: the
    analysis' rules as the tables' sidecars state them (MinimumCohortSessions, and MinimumSubjectsPerGroup with labels)."""
    folder = Path(folder)
    fig_dir = folder / layout.GROUP_FILES["figures"]
    sessions, frequency, onset = tables["sessions"], tables["frequency"], tables["onset"]
    flagged = frequency[frequency["frequency_predicted_ad"] > 0]  # ranked, most frequent first
    involved = onset[onset["order"] > 0]
    # per section of the page, (figure name, caption) of what is drawn; a section with nothing to draw says why in a sentence
    drawn = {
        "cohort": [draw_whole_brain_by_group(fig_dir, sessions, options.normalisation)],
        "frequency": draw_frequency(fig_dir, frequency, flagged, model),
    }
    no_onset, drawn["onset"] = draw_onset(fig_dir, sessions, frequency, tables["trajectories"], flagged, involved, norm, flag_cutoff, flags)
    for name in set(FIGURES) - {name for section in drawn.values() for name, _ in section}:
        (fig_dir / f"{name}.png").unlink(missing_ok=True)

    onset_columns = ["order", "label", "median_onset", "subjects_involved", "subjects_followed", "unit"]
    page = render(
        "group.html", title="bids_pscore group report", warnings=warnings, subset=subset,
        cohort=cohort_rows(sessions, options, flags, flag_cutoff, model, subset, minimums),
        figures={section: [((Path(layout.GROUP_FILES["figures"]) / f"{name}.png").as_posix(), caption) for name, caption in items]
                 for section, items in drawn.items()},
        frequency=frame_rows(flagged, [c for c in frequency.columns if c != "name"], TOP) if len(flagged) else None,
        no_frequency=no_frequency_sentence(sessions, flags),
        min_support=f"{options.min_support:g}", max_set_size=options.max_set_size,
        sets=frame_rows(tables["sets"], list(tables["sets"].columns), TOP),
        onset=frame_rows(involved, onset_columns, TOP) if len(involved) else None, no_onset=no_onset,
        comparison=comparison_section(tables, options, comparison_note),
        truth=truth_section(sessions, tables["regions"], flags, bids_dir),
    )  # fmt: skip
    path = folder / layout.GROUP_FILES["report"]
    write_text(path, page)
    return path


def truth_section(sessions, regions, flag_kind, bids_dir):
    """The truth of ``bids_dir`` beside each T1w's result in the sessions and regions tables, its ``flag_kind``
    flags checked, when bids_pscore-synth made the dataset; else None."""
    from ..atlas import region_table
    from ..synth.truth import check_flags, read_truth

    truth = read_truth(bids_dir)
    if not truth:
        return None
    labels = region_table()["label"].to_numpy()
    # the flagged labels of each T1w (a session may have two) from the regions table
    flagged = regions.loc[regions["degenerative"], ["t1w", "label"]].groupby("t1w")["label"].agg(list)
    rows = []
    for session in sessions.itertuples():
        session_truth = truth.get((session.participant_id, session.session_id))
        if session_truth is not None:
            check = check_flags(np.isin(labels, flagged.get(session.t1w, [])), session_truth, labels)
            rows.append((session.participant_id, session.session_id,
                         *truth_cells(session_truth, session.predicted_class, session.ad_probability, check, flag_kind)))  # fmt: skip
    return {"note": truth_note(), "header": ("subject", "session", *TRUTH_COLUMNS), "rows": rows} if rows else None


def draw_whole_brain_by_group(fig_dir, sessions, normalisation):
    """The whole-brain P-score of every session by diagnosis (or predicted class); its (figure name, caption)."""
    whole = sessions[f"whole_brain_pscore_{normalisation}"].to_numpy()
    groups = sessions["diagnosis"] if "diagnosis" in sessions else "predicted " + sessions["predicted_class"]
    viz.by_group(fig_dir / "whole_brain_by_group.png", whole, groups.to_numpy(), "whole-brain P-score (0-246)", "whole-brain P-score by group")
    by = "diagnosis" if "diagnosis" in sessions else "predicted class"
    return ("whole_brain_by_group", f"Whole-brain P-score of every session by {by}.")


def no_frequency_sentence(sessions, flags):
    """Why there is no degeneration frequency, shown where ``flagged`` is empty."""
    if (sessions["predicted_class"] == "AD").any():
        return f"No session predicted AD has a region flagged ({flags} flags), so there is no degeneration frequency to draw or rank."
    return "No session is predicted AD, so there is no degeneration frequency to draw or rank."


def draw_frequency(fig_dir, frequency, flagged, model):
    """The bars of the regions most often degenerative and their frequency painted on the template,
    where any region is flagged; [(figure name, caption)] of what was drawn."""
    from ..atlas import atlas_on_grid
    from ..preprocess.steps import template_on_grid
    from ..pscore import paint_regions

    if not len(flagged):
        return []
    viz.ranked_bars(fig_dir / "degeneration_frequency_bars.png", flagged["label"], flagged["frequency_predicted_ad"],
                        "share of sessions predicted AD", top=BARS, title="regions most often degenerative")  # fmt: skip
    drawn_bars = f"the {len(flagged)} regions" if len(flagged) <= BARS else f"the {BARS} most frequent of the {len(flagged)} regions"
    caption = f"Share of the sessions predicted AD in which each region is degenerative ({drawn_bars} degenerative in any)."
    drawn = [("degeneration_frequency_bars", caption)]
    by_index = frequency.set_index("index")["frequency_predicted_ad"].fillna(0).sort_index().to_numpy()
    template = np.asarray(template_on_grid(model["Space"])[0].dataobj, np.float32)
    viz.mosaic(fig_dir / "degeneration_frequency_map.png", template, overlay=paint_regions(by_index, atlas_on_grid())[0], cmap="hot",
                   vmin=0, vmax=1, title="degeneration frequency among sessions predicted AD", colorbar_label="share of sessions")  # fmt: skip
    drawn.append(("degeneration_frequency_map", "Degeneration frequency painted over the regions on the template."))
    return drawn


def draw_onset(fig_dir, sessions, frequency, traj, flagged, involved, norm, flag_cutoff, flags):
    """The trajectories of the earliest-involved regions (else the most often degenerative) and the order
    of involvement; (the sentence saying why there is no order, [(figure name, caption)] of what was drawn)."""
    crossing = "the calibrated threshold (below: atrophic)" if flags == "normative" else "lambda"
    # the regions followed: the earliest involved, else the most often degenerative
    top_regions = involved["index"].head(4).tolist() or flagged["index"].head(4).tolist()
    if not len(traj):
        return "No subject has two or more sessions, so there are no trajectories and no order of involvement.", []
    if not top_regions:
        return (f"No region crosses {crossing} over a subject's sessions or is flagged in a session predicted AD, so there is no "
                "involved region to follow and no order of involvement."), []  # fmt: skip
    no_onset = f"No region crosses {crossing} over a subject's sessions, so there is no order of involvement to draw or rank."
    unit = traj["unit"].iloc[0]
    x_column = "years_from_first" if unit == "year" else "session_index"
    panels = []
    for index in top_regions:
        label = frequency.loc[frequency["index"] == index, "label"].iloc[0]
        lines = []
        for participant in traj["participant_id"].unique():
            rows = (sessions["participant_id"] == participant).to_numpy()
            lines.append((sessions.loc[rows, x_column].to_numpy(float), norm[rows, index - 1]))
        panels.append((label, lines))
    followed = "grey-level z against the healthy reference, relative to the brain's median region" if flags == "normative" else "normalised score"
    viz.trajectories(fig_dir / "trajectories_plot.png", panels, f"{unit}s from the first session", flag_cutoff,
                         "grey-level z" if flags == "normative" else "normalised region P-score")  # fmt: skip
    drawn = [("trajectories_plot", f"The {followed} of the earliest-involved regions over each subject's sessions; dashed: {crossing}.")]
    if len(involved):
        viz.onset_dots(fig_dir / "onset_order_plot.png", involved["label"], involved["median_onset"], involved["subjects_involved"],
                           involved["unit"].iloc[0])  # fmt: skip
        drawn.append(("onset_order_plot", "Regions in their order of involvement across subjects, with the number of subjects behind each."))
    return no_onset, drawn


def cohort_rows(sessions, options, flags, flag_cutoff, model, subset, minimums):
    """[(name, value)] of the report's cohort table: what was analysed and how."""
    from ..derivatives.columns import FLAG_DESCRIPTIONS

    ordered_by = sessions.groupby("participant_id")["order_by"].first().value_counts().to_dict()
    return [
        ("analysed", subset or "every scored T1w in the output folder"),
        ("sessions", len(sessions)), ("subjects", sessions["participant_id"].nunique()),
        ("predicted AD", predicted_ad_count(sessions)),
        ("normalisation", options.normalisation), ("flags counted", f"{flags}: {FLAG_DESCRIPTIONS[flags]}"),
        ("threshold of the flags", f"{flag_cutoff:.3f}"),
        ("sessions ordered by", ", ".join(f"{k} ({v} subjects)" for k, v in ordered_by.items())),
        ("cohort normalisation", f"needs {minimums['MinimumCohortSessions']} sessions or more (a warning says when there are fewer)"),
        *([("group comparison", "Mann-Whitney on each subject's first session, made when each group has "
                                f"{minimums['MinimumSubjectsPerGroup']} subjects or more")] if options.label_column else []),
        ("model", f"{model.get('Name')} version {model.get('Version')} ({model.get('SHA256')})"),
    ]  # fmt: skip


def predicted_ad_count(sessions):
    """How many sessions are predicted AD, and how many of them have their class marked not reliable
    (class_reliable false: the scan lies outside the class domain), said only where any is."""
    predicted_ad = (sessions["predicted_class"] == "AD").to_numpy()
    # class_reliable holds True, False or None (a model without a class domain): only False marks a class
    unreliable = int((predicted_ad & sessions["class_reliable"].eq(False).to_numpy()).sum())
    if not unreliable:
        return int(predicted_ad.sum())
    return f"{int(predicted_ad.sum())} ({unreliable} with the class marked not reliable)"


def comparison_section(tables, options, comparison_note):
    """The report's comparison of the groups (its table, or the note saying why there is none), or None without labels."""
    if "comparison" in tables:
        columns = ["label", "n_ad", "n_control", "median_ad", "median_control", "rank_biserial_r", "p", "q_fdr"]
        return {"title": f"{options.positive} against {options.negative}", "note": None, **frame_rows(tables["comparison"], columns, TOP)}
    if comparison_note:
        return {"title": f"{options.positive} against {options.negative}", "note": comparison_note[0].upper() + comparison_note[1:] + "."}
    return None
