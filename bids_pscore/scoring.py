"""Scoring the preprocessed T1w of a participant-level run (SPEC sections 4, 5, 8 and 10): the quality
gate's record, the ensemble, P-scores, the class domain, the normative deviations, the relevance-weighted
scores and the derivatives of each T1w (``score_t1w``), and the reuse of a T1w scored earlier from the
same inputs (``scoring_fingerprint``, ``reusable_result``)."""

import contextlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .cohort import RESCORE_FIX, gate_failures, gate_record, gated_out, grid_image
from .derivatives import layout
from .errors import OutputNotWritableError, PscoreError, in_one_line
from .fileio import write_json, write_text
from .results import SessionResult, log_result, read_session_result, scored_by

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


def quality_gate(item, output_dir, template, qc_bounds):
    """The quality gate's record of one preprocessed T1w, written beside its outputs."""
    record = gate_record(item, output_dir, template, qc_bounds)
    write_json(output_dir / layout.output_path(item.entities, "qc"), {**record, "Sources": [layout.raw_uri(item.relpath)]})
    return record


def scoring_failure(item, exc, log_dir):
    """The Outcome of a T1w whose scoring or writing failed: the error in one line with what to do,
    its traceback in a crash file of the run's log folder."""
    from .progress import Outcome

    if isinstance(exc, PscoreError):  # its message names the file and says the fix (e.g. a damaged image, a full disk)
        message = str(exc)
    else:
        message = f"{item.path}: {in_one_line(exc)}; {RESCORE_FIX}"
    crash = write_crash(Path(log_dir) / f"crash-scoring-{item.ident}.txt", exc)
    return Outcome(item.label, "failed", failed_step="scoring", message=message, log=str(crash or ""))


def scoring_fingerprint(item, output_dir, template, metadata, qc_bounds, covariates):
    """sha256 of everything that decides a T1w's scores: its preprocessed images that the gate and
    the scoring read (their bytes), the model and its normative reference, the gate's bounds, its
    age and sex, and this bids_pscore's version (a development build's changes with every commit)."""
    import hashlib
    import json

    from . import __version__
    from .model.bundle import sha256

    images = layout.session_outputs(item.entities, template, layout.PREPROCESSING)
    decided_by = {
        "t1w": item.relpath,
        "template": template,
        "images": {key: sha256(output_dir / images[key]) for key in ("t1w_grid", "mask_grid", "mask_native")},
        "model": metadata["metadata_sha256"],
        "normative": (metadata.get("normative") or {}).get("sha256"),
        "qc_thresholds": qc_bounds,
        "covariates": covariates,
        "bids_pscore": __version__,
    }
    return hashlib.sha256(json.dumps(decided_by, sort_keys=True, default=str).encode()).hexdigest()


def reusable_result(item, output_dir, template, bundle, fingerprint, record):
    """The SessionResult of a T1w scored earlier from the same inputs (``fingerprint`` is the one in
    its ``record`` in the work folder) whose outputs are all on disk, its summary the one that
    scoring wrote (not another run's with another work folder), or None: then it is scored anew."""
    import json

    from .model.bundle import sha256

    steps = (layout.PSCORE, *((layout.RELEVANCE,) if bundle.metadata.get("relevance") else ()), *((layout.NORMATIVE,) if bundle.normative else ()))
    outputs = layout.with_sidecars(layout.session_outputs(item.entities, template, *steps)) + [layout.output_path(item.entities, "qc")]
    try:
        recorded = json.loads(record.read_text())
        if recorded["fingerprint"] != fingerprint or not all((output_dir / p).is_file() for p in outputs):
            return None
        if recorded["summary_sha256"] != sha256(output_dir / layout.output_path(item.entities, "summary", template)):
            return None
        result = read_session_result(output_dir, item, template)
    except (OSError, ValueError, KeyError, TypeError):  # no record yet, or one or an output damaged: score it anew
        return None
    if result is None or not scored_by(result, bundle.metadata):
        return None
    return replace(result, reused=True)


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


def scoring_model(bundle):
    """The ScoringModel of ``bundle``; says which of the relevance-weighted and normative outputs it cannot make."""
    from . import pscore
    from .atlas import atlas_on_grid, region_table

    weights, selected = bundle.ensemble.weights_per_cube()
    reference = pscore.Reference.from_dict(bundle.metadata["reference"])
    relevance = bundle.metadata.get("relevance")
    prepared_relevance = {}
    if relevance is None:
        log.info(
            "note: this model has no relevance reference statistics; the relevance-weighted outputs are skipped "
            "(bids_pscore-train of this version writes them)"
        )
    else:
        from .model.relevance import selected_base

        prepared_relevance = {
            "relevance_base": selected_base(bundle.ensemble),
            "relevance_cubes": bundle.ensemble.selected.cpu().numpy(),
            "relevance_reference": pscore.Reference.from_dict(relevance["reference"]),
        }
    if bundle.normative is None:
        log.info("note: this model has no normative reference, so no region is compared with healthy people; bids_pscore-normative adds one")
    card = model_card(bundle)
    grid_atlas = atlas_on_grid()
    return ScoringModel(bundle, card, weights, selected, reference, grid_atlas, pscore.region_sizes(grid_atlas),
                        region_table()["label"].to_numpy(), relevance, **prepared_relevance)  # fmt: skip


def score_sessions(t1w_inputs, output_dir, bundle, template, qc_bounds, log_dir, covariates=None, record_dir=None):
    """Quality gate, ensemble, P-scores, normative deviations and derivatives of every preprocessed
    T1w (SPEC sections 4, 5, 8 and 10). ``covariates`` maps a T1w's ident to its (age, sex).
    ``record_dir`` (in the work folder) keeps what each T1w was scored from (scoring_fingerprint):
    a T1w whose fingerprint and outputs are unchanged is read back, not scored again; without it
    every T1w is scored. Returns the scored sessions and, for each T1w the gate stopped or whose
    scoring failed (only that T1w fails; its crash file goes to ``log_dir``), its Outcome."""
    from .derivatives import dataset_files, session_files

    model = scoring_model(bundle)
    dataset_files.write_atlas(output_dir, template, model.grid_atlas)
    results, stopped = [], {}
    for item in t1w_inputs:
        age, sex = (covariates or {}).get(item.ident, (float("nan"), "n/a"))
        record = fingerprint = None
        if record_dir is not None:
            record = Path(record_dir) / f"{item.ident}.json"
            try:
                fingerprint = scoring_fingerprint(item, output_dir, template, bundle.metadata, qc_bounds, [age, sex])
            except OSError:  # a preprocessed image is missing: the gate below says which
                fingerprint = None
            earlier = fingerprint and reusable_result(item, output_dir, template, bundle, fingerprint, record)
            if earlier:
                log.debug("%s: same preprocessed images, model, settings and version as %s records: its outputs are kept", item.label, record)
                results.append(earlier)
                log_result(earlier)
                continue
        try:
            if record_dir is not None:  # from here the outputs on disk are no longer those the record describes
                record.unlink(missing_ok=True)
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
        if record_dir is not None and fingerprint:
            write_scoring_record(record, fingerprint, result, output_dir)
        log.debug(
            "%s: %d of %d selected cubes hold brain; region scores normalised by the model's reference, lambda %.3f",
            item.label,
            (scores.brain_voxels[0][model.selected] > 0).sum(),
            model.selected.sum(),
            model.reference.lambda_,
        )
    return results, stopped


def gate_outcome(item, gate):
    """The Outcome of a T1w the quality gate stopped: the bounds it failed, and its record as the log."""
    from .progress import Outcome

    return Outcome(item.label, "failed", failed_step="quality gate", message=gate_failures(gate), log=str(layout.output_path(item.entities, "qc")))


def score_t1w(item, output_dir, template, model, gate, age, sex):
    """Ensemble, P-scores, class domain, normative deviations and relevance-weighted scores of one T1w that
    passed the quality gate (``gate``: its record), and their derivatives, the summary last; returns its
    SessionResult and its pscore scores."""
    from . import pscore
    from .derivatives import records, session_files
    from .inference import score_image

    bundle = model.bundle
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
        normative_summary, normative_written = write_normative_deviation(item, output_dir, template, model, image, grey_level, scores, age, sex)
        written.update(normative_written)
    relevance_summary = None
    if model.relevance is not None:
        relevance_summary, relevance_written = write_relevance_scores(item, output_dir, template, model, scored, mask)
        written.update(relevance_written)
    written.update(session_files.write_session(
        output_dir, item.entities, template, scores,
        voxel_map=pscore.voxel_scores(scores.cube, mask[None])[0],
        region_map=pscore.paint_regions(scores.region_norm[0], model.grid_atlas)[0],
        ad_probability=ad_probability, predicted_class=predicted, weights=model.weights, selected=model.selected,
        lambda_=model.reference.lambda_, model_card=model.card, t1w_relpath=item.relpath, normative=normative_summary,
        class_domain=class_summary,
    ))  # fmt: skip
    paths.update({k: Path(v).relative_to(output_dir) for k, v in written.items()})
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


def write_scoring_record(record, fingerprint, result, output_dir):
    """What a scored T1w was scored from, in the work folder, so that the next run with the same inputs reuses it."""
    from .model.bundle import sha256

    try:  # after the summary, the set's last file: a record names only a whole set
        write_json(record, {"fingerprint": fingerprint, "t1w": result.t1w.relpath, "summary_sha256": sha256(output_dir / result.paths["summary"])})
    except (OSError, OutputNotWritableError) as exc:  # the next run scores it again, that is all
        log.debug("%s: its scoring record %s cannot be written (%s)", result.t1w.label, record, exc)
