"""The per-subject HTML report (``sub-<label>.html`` at the output root, figures in ``sub-<label>/figures``).

Like fMRIPrep's: one page per subject with a summary, then per session the preprocessing checks
(brain mask, registration against the template) and the P-score maps, then the model, its card and
any warning or error. The report reads back the derivatives the run wrote, so it shows what is on
disk and nothing else; for a dataset bids_pscore-synth made, that includes the dataset's own
derivatives/groundtruth, shown beside the results (``synth.truth``).
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from .. import viz
from ..atlas import N_REGIONS
from ..derivatives import layout, records, sidecars
from ..figures import draw_normative_figure, draw_score_figures
from ..figures import load as _load
from ..fileio import write_json, write_text
from ..model.bundle import model_warnings
from ..model.splits import SPLITS
from .html import TRUTH_COLUMNS, Folded, named_regions, render, truth_cells, truth_note

# below this many brain voxels on the grid (about 0.9 L) the mask is too small to be a brain
SMALL_BRAIN_VOXELS = 270_000


def score_figures(out, image, mask, paths, lambda_, kind, kept=()):
    """Voxel map, region map and ranked regions of SPEC's even spread (``kind`` "") or of the
    relevance-weighted spread ("relevance"); ``paths`` hold the maps and the figures' names; those
    in ``kept`` are on disk already and not drawn again. Returns [(relative path, caption)]."""
    key = f"{kind}_" if kind else ""
    what = "relevance-weighted " if kind else ""
    spread = ("spread over its brain voxels in proportion to their relevance to the cube's classifier (docs/relevance.md)" if kind
              else "spread evenly over its brain voxels (SPEC)")  # fmt: skip
    shown = draw_score_figures(out, out, image, mask, paths, lambda_, kind, kept)
    unit, colours, above = shown["unit"], shown["colours"], shown["above"]
    drawn = [(paths[f"{key}voxel_figure"],
              f"Voxel-level {what}P-score: each selected cube's score {spread}; voxels of the cubes the model does not "
              f"use carry none and are not coloured. Colours: {colours}; the scale{unit} stops at the 99th percentile of "
              "the brain's absolute values, so a few voxels are above it.")]  # fmt: skip
    flagged = (f"the {above} region(s) above lambda = {lambda_:.2f} are outlined in cyan as degenerative" if above
               else f"no region is above lambda = {lambda_:.2f}, so none is outlined")  # fmt: skip
    drawn.append((paths[f"{key}region_figure"], f"Normalised {what}region-level P-score over the anatomy (each region one colour, brighter "
                                                f"is higher, regions scoring 0 not coloured); {flagged}."))  # fmt: skip
    bars = (f"red bars are the regions above lambda = {lambda_:.2f} (dashed line), the degenerative ones" if above
            else f"none is above lambda = {lambda_:.2f} (dashed line), so no bar is red")  # fmt: skip
    drawn.append((paths[f"{key}bars_figure"], f"The 25 regions with the highest normalised {what}P-score; {bars}."))
    return drawn


def normative_figure(out, image, paths, summary, kept=()):
    """The voxel-wise deviation map with the atrophic regions outlined (not drawn again if in
    ``kept``); returns [(path, caption)]."""
    name = paths["normative_figure"]
    if name not in kept:
        draw_normative_figure(out, out, image, paths)
    rate = summary.get("FalseFlagsPerHealthyImage")
    return [(name, f"Grey level against the model's normative reference of healthy people ({summary['Reference'].get('images')} images), "
                   f"{'adjusted for age and sex where known' if summary.get('AgeAdjusted') else 'without age adjustment'}: red is "
                   f"darker than expected (less tissue), blue brighter, than the rest of this brain says (its median region lies at "
                   f"z = {summary['MedianRegionZ']:+.2f} against healthy people: the flags are relative to it, the map to its median voxel). "
                   f"Regions whose mean is below z = {summary['Threshold']:.2f} are outlined in yellow as atrophic;"
                   f" healthy images held out of the reference got {rate:.2f} such flags on average.")]  # fmt: skip


def input_rows(t1w):
    """The input T1w as its header says (the header only: cheap): file, voxel size, dimensions, orientation."""
    try:
        image = nib.load(t1w.path)
    except (OSError, nib.filebasedimages.ImageFileError) as exc:
        return [("input T1w", t1w.relpath), ("its header", f"cannot be read now: {exc}")]
    zooms = image.header.get_zooms()
    return [
        ("input T1w", t1w.relpath),
        ("voxel size", " x ".join(f"{z:.2f}" for z in zooms[:3]) + " mm"),
        ("dimensions", " x ".join(str(n) for n in image.shape) + " voxels"),
        ("orientation", f"{''.join(nib.aff2axcodes(image.affine))} (the direction each voxel axis runs towards)"),
    ]


def output_links(out, result):
    """[(plain name, path, its JSON sidecar or None)] of every output file of a session, the quality
    gate's record included; paths relative to the output folder, where the report is."""
    links = []
    for key, output in layout.SESSION_OUTPUTS.items():  # in the order of the description, however they were found
        if key in result.paths:
            path = Path(result.paths[key])
            sidecar = layout.sidecar_path(path) if output.sidecar and (out / layout.sidecar_path(path)).is_file() else None
            links.append((output.role, path.as_posix(), sidecar.as_posix() if sidecar else None))
    return links


def scoring_runs(out):
    """{T1w path in the dataset: the id of the last run that scored it}, from the list each participant
    run keeps in its log folder (logs/run-<id>/scored.tsv; ids begin with the run's start time)."""
    runs = {}
    for path in sorted((out / "logs").glob("run-*/scored.tsv")):
        for relpath in pd.read_csv(path, sep="\t", dtype=str)["t1w"].dropna():
            runs[relpath] = path.parent.name.removeprefix("run-")
    return runs


def scored_by_run(run_id):
    if run_id is None:
        return "not recorded in logs/ (scored by an earlier version of bids_pscore, or its log folder was removed)"
    return f"{run_id} (its logs: logs/run-{run_id}/)"


def session_figures(output_dir, result, lambda_, template):
    """The figures of one session: the preprocessing checks the workflow drew, then the P-score
    figures drawn here; returns [(relative path, caption)] and warnings."""
    out = Path(output_dir)
    figure_paths = layout.session_outputs(result.t1w.entities, template, layout.FIGURES)
    paths = {**result.paths, **figure_paths}
    # a session whose figures this run's workflow drew keeps them; a missing one is drawn
    kept = {p for p in figure_paths.values() if result.figures_drawn and (out / p).is_file()}
    image = _load(out / result.paths["t1w_grid"])
    mask = _load(out / result.paths["mask_grid"]) > 0
    drawn, warnings = [], []
    checks = layout.session_outputs(result.t1w.entities, template, layout.CHECKS)
    for key, caption in (
        ("figure_brainmask", "Brain mask (red) over the bias-corrected T1w with its skull, in the T1w's own space: it should "
                             "follow the brain's edge, keeping no skull or dura and cutting no cortex or cerebellum."),
        ("figure_registration", "Registration check: the template's grey/white boundary (cyan) over the subject's brain on the grid, "
                                "before smoothing; the two should agree in the ventricles, the deep grey matter and the cortex."),
    ):  # fmt: skip
        if (out / checks[key]).is_file():
            drawn.append((checks[key], caption))
        else:
            warnings.append(f"{result.t1w.label}: {checks[key]} is missing (the preprocessing draws it): run the participant level again")
    drawn += score_figures(out, image, mask, paths, lambda_, "", kept)
    if records.class_mark(result.class_domain):
        warnings.append(f"{result.t1w.label}: {result.class_domain['Caution']}")
    if "normative_voxel_map" in result.paths and result.normative:
        drawn += normative_figure(out, image, paths, result.normative, kept)
        if result.normative.get("Caution"):
            warnings.append(f"{result.t1w.label}: {result.normative['Caution']}")
    if "relevance_voxel_map" in result.paths:
        drawn += score_figures(out, image, mask, paths, result.relevance["lambda"], "relevance", kept)
    if mask.sum() < SMALL_BRAIN_VOXELS:
        warnings.append(f"{result.t1w.label}: the brain mask on the grid holds {int(mask.sum())} voxels "
                        f"({mask.sum() * 1.5**3 / 1e6:.2f} L), too small for a brain: check skull stripping")  # fmt: skip
    return drawn, warnings


def model_rows(metadata):
    """What the report says of the model: its card, training and reference statistics."""
    training = metadata.get("training", {})
    metrics = training.get("metrics", {}).get("test", {})
    return [
        ("name", metadata.get("name")), ("version", metadata.get("version")),
        ("description", metadata.get("description", "")),
        ("trained on", training.get("dataset", "n/a")),
        ("images (train / validation / test)", " / ".join(str(training.get("images", {}).get(k, "n/a")) for k in SPLITS)),
        ("labels", f"{metadata['labels'].get('positive')} vs {metadata['labels'].get('negative')} from column {metadata['labels'].get('column')}"),
        ("test AUC / balanced accuracy", f"{metrics.get('auc', float('nan')):.3f} / {metrics.get('balanced_accuracy', float('nan')):.3f}"),
        ("selected cubes", len(metadata.get("selected_cubes", []))),
        ("lambda", f"{metadata['reference']['lambda']:.3f}"),
        ("weights SHA256", metadata["weights"]["sha256"]),
    ] + normative_rows(metadata.get("normative")) + [("class domain", class_domain_text(metadata.get("class_domain")))]  # fmt: skip


def class_domain_text(record):
    """What the report says of the heads the model's class was set on (model.json's "class_domain")."""
    if not record:
        return "none: whether a scan is like the heads the class was set on is not checked (bids_pscore-normative adds it)"
    who = record["reference"]
    how = "a site's heads, the class calibrated on them" if record["from_class_calibration"] else "heads of the model's training scanner"
    return (
        f"{who.get('images')} healthy images of {who.get('dataset')} ({how}); a scan beyond median |z| "
        f"{record['distance_threshold']:.2f} from them gets no reliable class"
    )


def normative_rows(record):
    """What the report says of the model's normative reference (SPEC 10)."""
    if not record:
        return [("normative reference", "none: no region is compared with healthy people (bids_pscore-normative adds one)")]
    who = record.get("reference", {})
    ages = who.get("age", {})
    calibration = record.get("calibration", {})
    rows = [
        ("normative reference", f"{who.get('images')} healthy images of {who.get('subjects')} subjects from {who.get('dataset')} "
                                f"({who.get('source')})"),
        ("its ages, sexes", f"{ages.get('min', float('nan')):.0f}-{ages.get('max', float('nan')):.0f} years (median "
                            f"{ages.get('median', float('nan')):.0f}); {who.get('sex', {}).get('F', 0)} F, {who.get('sex', {}).get('M', 0)} M"),
        ("its licence", who.get("license", "not stated by its dataset")),
        ("normative flag rule", record.get("rule")),
        ("false flags per healthy image (held out)", f"{calibration.get('false_flags_per_healthy_image', float('nan')):.2f}"),
    ]  # fmt: skip
    if "unseen_controls" in record:
        unseen = record["unseen_controls"]
        rows.append(("false flags per unseen control (test split)", f"{unseen['false_flags_per_healthy_image']:.2f} ({unseen['images']} images)"))
    if "class_calibration" in record:
        moved = record["class_calibration"]
        rows.append(("AD probability calibrated on the reference's controls",
                     f"logit offset {moved['logit_offset']:+.2f}: {moved['called_ad_before']} of its {moved['images']} healthy images were "
                     f"called AD before; held out, {moved['heldout_called_control']:.0%} are called control"))  # fmt: skip
    if "added_to_trained_model" in record:
        rows.append(
            ("reference added after training", f"by {record['added_to_trained_model'].get('by')} on {record['added_to_trained_model'].get('date')}")
        )
    return rows


def flag_rows(result, metadata):
    """Each kind of flag the session has: (kind, rule, how many, which, false flags measured on healthy images)."""
    not_measured = "not measured: the model card holds no false-flag rate for these flags"
    lambda_ = metadata["reference"]["lambda"]
    rule = f"normalised region P-score above lambda = {lambda_:.2f}"
    if lambda_ >= 1:
        rule += " (not below 1, the largest normalised score: no region can be flagged)"
    rows = [("P-score degenerative regions (patent)", rule, len(result.degenerative), named_regions(result.degenerative), not_measured)]
    if result.relevance is not None:
        rows.append(("relevance-weighted degenerative regions", f"normalised relevance-weighted region P-score above lambda = "
                     f"{result.relevance['lambda']:.2f}", len(result.relevance["degenerative"]),
                     named_regions(result.relevance["degenerative"]), not_measured))  # fmt: skip
    if result.normative is not None:
        calibration = (metadata.get("normative") or {}).get("calibration", {})
        held_out = result.normative.get("FalseFlagsPerHealthyImage")
        rate = not_measured if held_out is None else f"{held_out:.2f} per healthy image held out of the reference"
        if held_out is not None and "share_of_healthy_images_with_a_flag" in calibration:
            rate += f" ({calibration['share_of_healthy_images_with_a_flag']:.0%} of them had one or more)"
        unseen = (metadata.get("normative") or {}).get("unseen_controls")
        if unseen:
            rate += f"; {unseen['false_flags_per_healthy_image']:.2f} per control of the test split ({unseen['images']} images)"
        rows.append(("atrophic regions against healthy people (normative)", result.normative["Rule"], result.normative["NumberOfAtrophicRegions"],
                     atrophic_regions(result.normative), rate))  # fmt: skip
    return rows


def atrophic_regions(normative):
    """The regions flagged atrophic; for a scan far from the reference, where they mean nothing, why, with the list folded."""
    listed = named_regions(normative["AtrophicRegions"])
    if normative.get("Reliable", True):
        return listed
    return Folded(f"not reliable: this scan is far from the normative reference (median |z| {normative['Distance']:.2f} > "
                  f"{normative['DistanceThreshold']:.2f}), e.g. another scanner; open for the list", listed)  # fmt: skip


def ad_probability_cell(result):
    """The AD probability, and beside it, in capitals, that the class is not reliable where it is not."""
    mark = records.class_mark(result.class_domain)
    return f"{result.ad_probability:.2f}" + (f" ({mark.upper()})" if mark else "")


def summary_row(result, with_normative):
    row = (result.t1w.label, f"{result.whole:.1f}", ad_probability_cell(result), result.predicted_class,
           len(result.degenerative), named_regions(result.degenerative))  # fmt: skip
    if result.normative is not None:
        row += (result.normative["NumberOfAtrophicRegions"], atrophic_regions(result.normative))
    elif with_normative:  # another session of the subject has them: keep the columns in line
        row += ("n/a", "no normative reference")
    if result.relevance is not None:
        row += (f"{result.relevance['whole']:.1f}", len(result.relevance["degenerative"]), named_regions(result.relevance["degenerative"]))
    return row


def checked_against_truth(results, truth):
    """synth.truth.checked_sessions of ``results`` against ``truth`` (synth.truth.read_truth's, or None)."""
    from ..atlas import region_table
    from ..synth.truth import checked_sessions

    return checked_sessions(results, truth or {}, region_table()["label"].to_numpy())


def truth_check(results, bids_dir):
    """One sentence per subject on ``results`` against the truth of ``bids_dir`` (the participant level's last
    lines), or [] when bids_pscore-synth did not make the dataset."""
    from ..synth.truth import read_truth, subject_sentences

    return subject_sentences(checked_against_truth(results, read_truth(bids_dir)))


def truth_section(results, truth):
    """The truth of a dataset bids_pscore-synth made beside the subject's results, or None."""
    from ..synth.truth import subject_sentences

    checked = checked_against_truth(results, truth)
    if not checked:
        return None
    return {"note": truth_note(), "sentences": subject_sentences(checked), "header": ("session", *TRUTH_COLUMNS),
            "rows": [(r.t1w.label, *truth_cells(t, r.predicted_class, r.ad_probability, c, kind)) for r, t, c, kind in checked]}  # fmt: skip


def write_subject_report(output_dir, subject, t1w_inputs, results, failed, metadata, template, weights_fig, run_info, truth=None):
    """Write sub-<subject>.html (``templates/subject.html``) and its figures; return the report's
    path relative to the output folder. ``weights_fig`` is the model's figure, drawn once, and its
    caption; ``truth`` (synth.truth.read_truth), when given, is shown beside the results."""
    out = Path(output_dir)
    lambda_ = metadata["reference"]["lambda"]
    warnings = model_warnings(metadata)
    runs = scoring_runs(out)
    sessions = []
    for result in results:
        drawn, extra = session_figures(out, result, lambda_, template)
        warnings += extra
        sessions.append({
            "label": result.t1w.label,
            "input": input_rows(result.t1w) + [("scored by run", scored_by_run(runs.get(result.t1w.relpath)))],
            "flags": flag_rows(result, metadata),
            "qc": ", ".join(f"{k} {v:g}" for k, v in result.qc.items()) if result.qc else None,
            "qc_path": layout.output_path(result.t1w.entities, "qc").as_posix(),
            "figures": [(Path(p).as_posix(), c) for p, c in drawn],
            "files": output_links(out, result),
        })  # fmt: skip
    relevance_columns = ("relevance-weighted whole-brain P-score", "relevance-weighted degenerative regions", "which")
    normative_columns = ("atrophic regions against healthy people (normative)", "which")
    header = ("session", f"whole-brain P-score (0-{N_REGIONS})", "AD probability", "predicted", "degenerative regions (patent lambda)",
              "which", *(normative_columns if any(r.normative for r in results) else ()),
              *(relevance_columns if any(r.relevance for r in results) else ()))  # fmt: skip
    errors = [{"label": t.label, "step": failed[t.label].failed_step or "?", "message": failed[t.label].message, "log": failed[t.label].log}
              for t in t1w_inputs if t.label in failed]  # fmt: skip
    page = render(
        "subject.html", title=f"bids_pscore report: sub-{subject}", warnings=warnings,
        summary={"header": header, "rows": [summary_row(r, any(s.normative for s in results)) for r in results]},
        truth=truth_section(results, truth), errors=errors, sessions=sessions,
        model={"rows": model_rows(metadata), "figure": weights_fig[0], "caption": weights_fig[1]},
        citation_md=layout.CITATION_MD, citation_bib=layout.CITATION_BIB, run_info=list(run_info.items()),
        software=sorted(sidecars.software_versions().items()),
    )  # fmt: skip
    path = layout.subject_report_path(subject)
    write_text(out / path, page)
    return path


def model_figure_record(path, metadata):
    """What the work folder keeps of the model's figure at ``path``: the model and version it was drawn
    for, and its bytes' checksum."""
    from .. import __version__
    from ..model.bundle import sha256

    return {"model": metadata["metadata_sha256"], "bids_pscore": __version__, "sha256": sha256(path)}


def write_subject_reports(output_dir, t1w_inputs, results, failed, metadata, template, run_info, bids_dir=None, model_figure_kept_in=None):
    """One report per subject of ``t1w_inputs``; returns the paths of those written, relative to the
    output folder, and {report name: exception} of those that could not be (each subject on its own).

    ``run_info`` ({name: value}: command line, date, version) is shown in every report; so is the truth
    of ``bids_dir`` beside the results when bids_pscore-synth made the dataset. The model's
    figure is drawn again unless the record ``model_figure_kept_in`` (in the work folder) says it is
    the one this model and version draw."""
    import contextlib
    import json

    from ..errors import OutputNotWritableError
    from ..grid import N_CUBES, paint_cubes
    from ..preprocess.steps import template_on_grid
    from ..synth.truth import read_truth

    # the model's figure is the same for every subject: drawn once, beside the reports
    weights_path = layout.MODEL_FIGURE
    weights = np.zeros(N_CUBES)
    weights[metadata["selected_cubes"]] = metadata["cube_weights"]
    limit = float(np.abs(weights).max()) or 1.0
    cmap, vmin, vmax, factor, unit, colours = viz.score_scale(weights, limit)
    path = Path(output_dir) / weights_path
    try:
        drawn = model_figure_kept_in is not None and json.loads(Path(model_figure_kept_in).read_text()) == model_figure_record(path, metadata)
    except (OSError, ValueError):  # no record or no figure yet, or either damaged
        drawn = False
    if not drawn:
        template_image = np.asarray(template_on_grid(template)[0].dataobj, np.float32)
        viz.mosaic(path, template_image, overlay=paint_cubes(weights * factor), cmap=cmap,
                       vmin=vmin, vmax=vmax, title="meta-classifier weight of each cube", colorbar_label=f"w_c{unit}")  # fmt: skip
        if model_figure_kept_in is not None:
            with contextlib.suppress(OSError, OutputNotWritableError):  # without it the next run draws it again, that is all
                write_json(model_figure_kept_in, model_figure_record(path, metadata))
    weights_fig = (weights_path.as_posix(), f"Per-cube weights w_c of the meta-classifier over the template ({colours}); the "
                                            f"{N_CUBES - len(metadata['selected_cubes'])} cubes the model does not use are blank.")  # fmt: skip
    truth = None if bids_dir is None else read_truth(bids_dir)  # read once for every subject
    written, unwritten = [], {}
    for sub in sorted({t.entities["sub"] for t in t1w_inputs}):
        try:
            written.append(write_subject_report(output_dir, sub, [t for t in t1w_inputs if t.entities["sub"] == sub],
                                                [r for r in results if r.t1w.entities["sub"] == sub], failed, metadata, template, weights_fig,
                                                run_info, truth))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - one subject's report (a figure, a full disk) must not cost the others theirs
            unwritten[layout.subject_report_path(sub).as_posix()] = exc
    return written, unwritten
