"""The group HTML report (``group/report.html``), drawn from the group tables."""

from pathlib import Path

import numpy as np

from .. import bids
from ..fileio import write_text
from . import figures
from .html import frame_rows, render, truth_note

# rows shown of each table (the TSV files hold them all)
TOP = 20


def write_group_report(output_dir, tables, norm, threshold, model, options, flags="patent", truth=None):
    """Figures and report.html under <output_dir>/group; returns the report's path. ``norm`` and
    ``threshold`` are what the trajectories follow: normalised scores and lambda with patent
    flags, grey-level z and the calibrated threshold with normative ones. ``truth``: (header, rows)
    of the sessions' truth beside their results (group.truth_rows), or None."""
    from ..atlas import atlas_on_grid
    from ..derivatives import FLAG_DESCRIPTIONS
    from ..preprocess.steps import template_on_grid
    from ..pscore import paint_regions

    out = Path(output_dir)
    fig_dir = Path(bids.GROUP_DIR) / bids.GROUP_FILES["figures"]
    sessions, frequency, onset = tables["sessions"], tables["frequency"], tables["onset"]
    whole = sessions[f"whole_brain_pscore_{options.normalisation}"].to_numpy()
    drawn = []

    name = fig_dir / "whole_brain_by_group.png"
    groups = sessions["diagnosis"] if "diagnosis" in sessions else "predicted " + sessions["predicted_class"]
    figures.by_group(out / name, whole, groups.to_numpy(), "whole-brain P-score (0-246)", "whole-brain P-score by group")
    drawn.append((name, "Whole-brain P-score of every session by " + ("diagnosis" if "diagnosis" in sessions else "predicted class") + "."))

    name = fig_dir / "degeneration_frequency_bars.png"
    figures.ranked_bars(out / name, frequency["label"], frequency["frequency_predicted_ad"].fillna(0), "share of sessions predicted AD",
                        title="regions most often degenerative")  # fmt: skip
    drawn.append((name, "Share of the sessions predicted AD in which each region is degenerative (the 25 most frequent)."))

    name = fig_dir / "degeneration_frequency_map.png"
    by_index = frequency.set_index("index")["frequency_predicted_ad"].fillna(0).sort_index().to_numpy()
    template = np.asarray(template_on_grid(model["Space"])[0].dataobj, np.float32)
    figures.mosaic(out / name, template, overlay=paint_regions(by_index, atlas_on_grid())[0], cmap="hot", vmin=0, vmax=1,
                   title="degeneration frequency among sessions predicted AD", colorbar_label="share of sessions")  # fmt: skip
    drawn.append((name, "Degeneration frequency painted over the regions on the template."))

    traj = tables["trajectories"]
    if len(traj):
        top_regions = onset[onset["order"] > 0]["index"].head(4).tolist() or frequency["index"].head(4).tolist()
        unit = traj["unit"].iloc[0]
        x_column = "years_from_first" if unit == "year" else "session_index"
        panels = []
        for index in top_regions:
            label = frequency.loc[frequency["index"] == index, "label"].iloc[0]
            lines = []
            for participant in traj["participant_id"].unique():
                rows = (sessions["participant_id"] == participant).to_numpy()
                x = sessions.loc[rows, x_column].to_numpy(float)
                y = norm[rows, index - 1]
                lines.append((x, y))
            panels.append((label, lines))
        name = fig_dir / "trajectories_plot.png"
        followed = "grey-level z against the healthy reference" if flags == "normative" else "normalised score"
        figures.trajectories(out / name, panels, f"{unit}s from the first session", threshold,
                             "grey-level z" if flags == "normative" else "normalised region P-score")  # fmt: skip
        line = "the calibrated threshold (below: atrophic)" if flags == "normative" else "lambda"
        drawn.append((name, f"The {followed} of the earliest-involved regions over each subject's sessions; dashed: {line}."))
        involved = onset[onset["order"] > 0]
        name = fig_dir / "onset_order_plot.png"
        figures.onset_dots(
            out / name,
            involved["label"],
            involved["median_onset"],
            involved["subjects_involved"],
            involved["unit"].iloc[0] if len(involved) else unit,
        )
        drawn.append((name, "Regions in their order of involvement across subjects, with the number of subjects behind each."))

    ordered_by = sessions.groupby("participant_id")["order_by"].first().value_counts().to_dict()
    cohort = [
        ("sessions", len(sessions)), ("subjects", sessions["participant_id"].nunique()),
        ("predicted AD", int((sessions["predicted_class"] == "AD").sum())),
        ("normalisation", options.normalisation), ("flags counted", f"{flags}: {FLAG_DESCRIPTIONS[flags]}"),
        ("threshold of the flags", f"{threshold:.3f}"),
        ("sessions ordered by", ", ".join(f"{k} ({v} subjects)" for k, v in ordered_by.items())),
        ("model", f"{model.get('Name')} version {model.get('Version')} ({model.get('SHA256')})"),
    ]  # fmt: skip
    comparison = None
    if "comparison" in tables:
        columns = ["label", "n_ad", "n_control", "median_ad", "median_control", "rank_biserial_r", "p", "q_fdr"]
        comparison = {"title": f"{options.positive} against {options.negative}", **frame_rows(tables["comparison"], columns, TOP)}
    onset_columns = ["order", "label", "median_onset", "subjects_involved", "subjects_followed", "unit"]
    page = render(
        "group.html", title="bids_pscore group report", warnings=[model["Warning"]] if model.get("Warning") else [], cohort=cohort,
        figures=[((Path(bids.GROUP_FILES["figures"]) / Path(p).name).as_posix(), c) for p, c in drawn],
        frequency=frame_rows(frequency, [c for c in frequency.columns if c != "name"], TOP),
        min_support=f"{options.min_support:g}", max_set_size=options.max_set_size,
        sets=frame_rows(tables["sets"], list(tables["sets"].columns), TOP),
        onset=frame_rows(onset[onset["order"] > 0], onset_columns, TOP) if len(traj) else None, comparison=comparison,
        truth={"note": truth_note(), "header": truth[0], "rows": truth[1]} if truth else None,
    )  # fmt: skip
    path = out / bids.GROUP_DIR / bids.GROUP_FILES["report"]
    write_text(path, page)
    return path
