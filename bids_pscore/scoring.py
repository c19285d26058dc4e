"""Scoring the preprocessed T1w of a participant-level run (SPEC sections 4, 5, 8 and 10): the quality
gate's record, the ensemble, P-scores, the class domain, the normative deviations, the relevance-weighted
scores and the derivatives of each T1w (``score_t1w``). The participant level runs them as nodes of its
workflow (bids_pscore.workflows.scoring), whose cache decides what is reused; ``score_sessions`` runs them in
this process, one T1w after the other, without a cache."""

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cohort import RESCORE_FIX, gate_failures, gate_record, gated_out, grid_image
from .derivatives import layout
from .errors import OutputNotWritableError, PscoreError, in_one_line
from .fileio import write_json, write_text
from .results import SessionResult, log_result

# the participant level's messages: the run's debug log names them as it did before scoring had a module of its own
log = logging.getLogger(f"{__package__}.participant")


def model_card(bundle):
    """What the outputs and reports say about the model that made them."""
    meta = bundle.metadata
    return {
        "name": meta["name"],
        "version": meta["version"],
        "sha256": meta["weights"]["sha256"],
        "metadata_sha256": meta["metadata_sha256"],
        "warning": meta.get("warning"),
    }


def write_crash(path, exc):
    """The traceback of ``exc`` in a crash file; returns its path, or None when the disk refuses it too
    (the disk that refused an output may refuse the log)."""
    import traceback

    try:
        write_text(path, "".join(traceback.format_exception(exc)))
    except (OSError, OutputNotWritableError):
        return None
    return path


def quality_gate(item, output_dir, template, qc_bounds, target_dir=None):
    """The quality gate's record of one preprocessed T1w in ``output_dir``, written beside its outputs
    (or under ``target_dir``, in the same layout)."""
    record = gate_record(item, output_dir, template, qc_bounds)
    write_json(Path(target_dir or output_dir) / layout.output_path(item.entities, "qc"), {**record, "Sources": [layout.raw_uri(item.relpath)]})
    return record


def scoring_failure(item, exc, log_dir):
    """The Outcome of a T1w whose scoring or writing failed: the error in one line with what to do,
    its traceback in a crash file of the run's log folder."""
    from .progress import Outcome

    message = failure_message(item, exc)
    crash = write_crash(Path(log_dir) / f"crash-scoring-{item.ident}.txt", exc)
    return Outcome(item.label, "failed", failed_step="scoring", message=message, log=str(crash or ""))


@dataclass(frozen=True)
class ScoringModel:
    """What scoring every T1w takes from the model bundle and the atlas, prepared once per run."""

    bundle: object
    card: dict  # model_card
    weights: np.ndarray  # the meta-classifier's weight of each cube
    selected: np.ndarray  # the cubes the ensemble selected
    reference: object  # pscore.Reference: the region scores' normalisation and lambda
    grid_atlas: np.ndarray
    sizes: np.ndarray  # voxels per region of grid_atlas
    labels: np.ndarray  # the regions' labels
    relevance: dict | None  # model.json's "relevance" record, None where the model has none
    relevance_base: object = None  # the selected base classifiers whose relevance is taken
    relevance_cubes: np.ndarray | None = None
    relevance_reference: object = None  # pscore.Reference of the relevance-weighted scores


def model_notes(bundle):
    """Which of the relevance-weighted and normative outputs ``bundle`` cannot make, said once per run."""
    if bundle.metadata.get("relevance") is None:
        log.info(
            "note: this model has no relevance reference statistics; the relevance-weighted outputs are skipped "
            "(bids_pscore-train of this version writes them)"
        )
    if bundle.normative is None:
        log.info("note: this model has no normative reference, so no region is compared with healthy people; bids_pscore-normative adds one")


def scoring_model(bundle):
    """The ScoringModel of ``bundle`` (model_notes says what it cannot make)."""
    from . import pscore
    from .atlas import atlas_on_grid, region_table

    weights, selected = bundle.ensemble.weights_per_cube()
    reference = pscore.Reference.from_dict(bundle.metadata["reference"])
    relevance = bundle.metadata.get("relevance")
    prepared_relevance = {}
    if relevance is not None:
        from .model.relevance import selected_base

        prepared_relevance = {
            "relevance_base": selected_base(bundle.ensemble),
            "relevance_cubes": bundle.ensemble.selected.cpu().numpy(),
            "relevance_reference": pscore.Reference.from_dict(relevance["reference"]),
        }
    card = model_card(bundle)
    grid_atlas = atlas_on_grid()
    return ScoringModel(bundle, card, weights, selected, reference, grid_atlas, pscore.region_sizes(grid_atlas),
                        region_table()["label"].to_numpy(), relevance, **prepared_relevance)  # fmt: skip


def score_sessions(t1w_inputs, output_dir, bundle, template, qc_bounds, log_dir, covariates=None):
    """Quality gate, ensemble, P-scores, normative deviations and derivatives of every preprocessed
    T1w (SPEC sections 4, 5, 8 and 10), in this process, one after the other and without a cache (the
    participant level runs the same steps as nodes of its workflow: bids_pscore.workflows.scoring).
    ``covariates`` maps a T1w's ident to its (age, sex). Returns the scored sessions and, for each
    T1w the gate stopped or whose scoring failed (only that T1w fails; its crash file goes to
    ``log_dir``), its Outcome."""
    from .derivatives import dataset_files, session_files

    model_notes(bundle)
    model = scoring_model(bundle)
    dataset_files.write_atlas(output_dir, template, model.grid_atlas)
    results, stopped = [], {}
    for item in t1w_inputs:
        age, sex = (covariates or {}).get(item.ident, (float("nan"), "n/a"))
        try:
            # a session's scores are replaced as a set: an earlier run's go first and the summary, which
            # the group level and the reports take for a whole set, is written last, so that a run killed
            # in between leaves no new tables beside an old summary
            session_files.remove_outputs(output_dir, item.entities, template, preprocessing=False)
            gate = quality_gate(item, output_dir, template, qc_bounds)
            if gated_out(item, gate, "scoring"):
                # garbage in must not come out as a score (the image itself, the mask and the QC record stay)
                stopped[item.label] = gate_outcome(item, gate)
                continue
            result, scores = score_t1w(item, output_dir, template, model, gate, age, sex)
        except Exception as exc:  # noqa: BLE001 - whatever fails in one session (an unreadable image, a full disk) fails that T1w only
            stopped[item.label] = scoring_failure(item, exc, log_dir)
            with contextlib.suppress(OSError):  # what this run wrote of the set; a failing disk may refuse even that
                session_files.remove_outputs(output_dir, item.entities, template, preprocessing=False)
            log.warning("%s: NOT SCORED, scoring failed: %s", item.label, stopped[item.label].message)
            continue
        results.append(result)
        log_result(result)
        log.debug(
            "%s: %d of %d selected cubes hold brain; region scores normalised by the model's reference, lambda %.3f",
            item.label,
            (scores.brain_voxels[0][model.selected] > 0).sum(),
            model.selected.sum(),
            model.reference.lambda_,
        )
    return results, stopped


def scored_in_workflow(t1w_inputs, outcomes, output_dir, template):
    """After the workflow scored them (bids_pscore.workflows.scoring): each preprocessed T1w's results read
    back from the output folder and said in its RESULT line, in input order, or why it was not scored.
    ``outcomes`` are the workflow's (Progress.outcomes, by ident): a T1w whose scoring nodes failed
    fails alone, its outputs removed (an earlier run's must not be taken for this one's); one the gate
    stopped is said so; one whose figures were not drawn is scored, and said so. Returns the scored sessions and {label: Outcome} of the others."""
    import json
    import re
    from dataclasses import replace

    from .derivatives import session_files
    from .progress import Outcome
    from .results import read_session_result

    results, stopped = [], {}
    for item in t1w_inputs:
        outcome = outcomes[item.ident]
        if outcome.status == "failed":  # in a scoring node: its crash file is the log, the error's own message the message
            stopped[item.label] = replace(outcome, failed_step="scoring", message=re.sub(r"^\w+(Error|Exception): ", "", outcome.message))
            with contextlib.suppress(OSError):
                session_files.remove_outputs(output_dir, item.entities, template, preprocessing=False)
            log.warning("%s: NOT SCORED, scoring failed: %s", item.label, stopped[item.label].message)
            continue
        try:
            gate = json.loads((Path(output_dir) / layout.output_path(item.entities, "qc")).read_text())
            result = read_session_result(output_dir, item, template, required=(layout.PSCORE,)) if gate["Passed"] else None
        except (OSError, ValueError, KeyError, TypeError) as exc:  # the workflow stopped before it (--stop-on-first-crash), or a disk failed
            stopped[item.label] = Outcome(item.label, "failed", failed_step="scoring", message=f"{item.path}: not scored ({in_one_line(exc)}); "
                                          f"{RESCORE_FIX}")  # fmt: skip
            continue
        if gated_out(item, gate, "scoring"):
            stopped[item.label] = gate_outcome(item, gate)
            continue
        if result is None:
            stopped[item.label] = Outcome(item.label, "failed", failed_step="scoring", message=f"{item.path}: its scores are not all in "
                                          f"{output_dir}; {RESCORE_FIX}")  # fmt: skip
            continue
        not_drawn = outcome.not_drawn.get("figures")
        result = replace(result, reused="scoring" in outcome.reused, figures_drawn=not not_drawn)
        results.append(result)
        log_result(result)
        if not_drawn:  # its scores stand, as when the report drew the figures; the report tries again, and says it if it fails too
            log.warning("%s: figures NOT drawn (%s); its scores are kept, the report draws its figures again", item.label, not_drawn)
        log.debug("%s: scores %s in the workflow, read back from %s", item.label, "reused" if result.reused else "made", output_dir)
    return results, stopped


def failure_message(item, exc):
    """What a failed scoring says: a PscoreError's own message (it names the file and the fix, e.g. a
    damaged image, a full disk), another error in one line with the T1w and what to do."""
    if isinstance(exc, PscoreError):
        return str(exc)
    return f"{item.path}: {in_one_line(exc)}; {RESCORE_FIX}"


def gate_outcome(item, gate):
    """The Outcome of a T1w the quality gate stopped: the bounds it failed, and its record as the log."""
    from .progress import Outcome

    return Outcome(item.label, "failed", failed_step="quality gate", message=gate_failures(gate), log=str(layout.output_path(item.entities, "qc")))


def score_t1w(item, output_dir, template, model, gate, age, sex, target_dir=None):
    """Ensemble, P-scores, class domain, normative deviations and relevance-weighted scores of one T1w that
    passed the quality gate (``gate``: its record), and their derivatives, the summary last, beside its
    preprocessed images in ``output_dir`` (or under ``target_dir``, in the same layout); returns its
    SessionResult (paths relative to where they were written) and its pscore scores."""
    from . import pscore
    from .derivatives import records, session_files
    from .inference import score_image

    bundle = model.bundle
    target = Path(target_dir or output_dir)
    paths = layout.session_outputs(item.entities, template, layout.PREPROCESSING, layout.QC)
    image, mask = grid_image(item, output_dir, template)
    scored = score_image(bundle.ensemble, model.reference, image, mask, model.grid_atlas, model.sizes, bundle.class_offset)
    scores, ad_probability = scored.scores, scored.ad_probability
    predicted = "AD" if ad_probability >= pscore.AD_THRESHOLD else "control"
    written = {}
    grey_level = pscore.region_means(image, model.grid_atlas, model.sizes)[0]
    class_summary = class_domain_check(bundle, image, grey_level, age, sex)
    normative_summary = None
    if bundle.normative is not None:
        normative_summary, normative_written = write_normative_deviation(item, target, template, model, image, grey_level, scores, age, sex)
        written.update(normative_written)
    relevance_summary = None
    if model.relevance is not None:
        relevance_summary, relevance_written = write_relevance_scores(item, target, template, model, scored, mask)
        written.update(relevance_written)
    written.update(session_files.write_session(
        target, item.entities, template, scores,
        voxel_map=pscore.voxel_scores(scores.cube, mask[None])[0],
        region_map=pscore.paint_regions(scores.region_norm[0], model.grid_atlas)[0],
        ad_probability=ad_probability, predicted_class=predicted, weights=model.weights, selected=model.selected,
        lambda_=model.reference.lambda_, model_card=model.card, t1w_relpath=item.relpath, normative=normative_summary,
        class_domain=class_summary,
    ))  # fmt: skip
    paths.update({k: Path(v).relative_to(target) for k, v in written.items()})
    result = SessionResult(item, paths, float(scores.whole[0]), ad_probability, predicted,
                           model.labels[scores.degenerative[0]].tolist(), relevance_summary, qc=gate["Measures"],
                           normative=normative_summary, **records.Summary.class_fields(class_summary))  # fmt: skip
    return result, scores


def class_domain_check(bundle, image, grey_level, age, sex):
    """The summary's "ClassDomain": how far the scan lies from the heads the class was set on (far, its
    class is not reliable)."""
    from . import normative
    from .derivatives import records

    far_from_class = None if bundle.class_domain is None else normative.deviation(
        bundle.class_domain, image, {"grey_level": grey_level}, age, normative.sex_code(sex))  # fmt: skip
    return records.class_domain_summary(far_from_class, bundle.metadata.get("class_domain"))


def write_normative_deviation(item, output_dir, template, model, image, grey_level, scores, age, sex):
    """The T1w's deviation from the model's normative reference (SPEC 10) and its derivatives; (the summary's
    "Normative" record, {key: path written})."""
    from . import normative
    from .derivatives import records, session_files

    bundle = model.bundle
    region_values = {"grey_level": grey_level, "pscore": scores.region_norm[0]}
    deviation = normative.deviation(bundle.normative, image, region_values, age, normative.sex_code(sex))
    normative_summary = records.normative_summary(deviation, bundle.metadata["normative"], model.labels, age, sex)
    written = session_files.write_normative(output_dir, item.entities, template, deviation, normative_summary, model.card, item.relpath)
    return normative_summary, written


def write_relevance_scores(item, output_dir, template, model, scored, mask):
    """The relevance-weighted scores of the T1w and their derivatives; (the SessionResult's relevance record
    (whole-brain score, lambda, degenerative regions), {key: path written})."""
    from . import pscore
    from .derivatives import session_files
    from .model.relevance import relevance_on_grid

    scores, lambda_ = scored.scores, model.relevance_reference.lambda_
    grid_relevance = relevance_on_grid(model.relevance_base, scored.cubes, model.relevance_cubes, model.relevance)
    relevance_map = pscore.relevance_voxel_scores(scores.cube, grid_relevance, mask[None])[0]
    region = pscore.region_means(relevance_map, model.grid_atlas, model.sizes)
    weighted = pscore.score_regions(scores.p_ad, scores.cube, scores.brain_voxels, region, model.relevance_reference)
    written = session_files.write_relevance(
        output_dir, item.entities, template, weighted, voxel_map=relevance_map,
        region_map=pscore.paint_regions(weighted.region_norm[0], model.grid_atlas)[0], lambda_=lambda_,
        method=model.relevance["description"], model_card=model.card, t1w_relpath=item.relpath,
    )  # fmt: skip
    return {"whole": float(weighted.whole[0]), "lambda": lambda_, "degenerative": model.labels[weighted.degenerative[0]].tolist()}, written
