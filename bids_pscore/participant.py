"""The participant level: BIDS inputs -> preprocessing workflow -> quality gate -> model -> P-scores
-> derivatives -> reports."""

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path

from . import bids
from .atlas import N_REGIONS
from .cohort import RESCORE_FIX, gate_failures, gate_record, gated_out, grid_image, preprocessed_t1w
from .config import write_config
from .errors import EXIT_OK, EXIT_SESSION_FAILED, ModelError, NoT1wError, OutputNotWritableError, PscoreError, in_one_line
from .execution import make_run_folders
from .fileio import remove_stale_temporaries, write_json, write_text, write_tsv
from .progress import RESULT

log = logging.getLogger(__name__)
DEMO_MODEL = Path(str(files("bids_pscore") / "data" / "demo_model"))


def load_model(path=None, normative=True):
    """The model bundle at ``path``, or the demo model that ships with the package (``normative``:
    with its normative reference)."""
    from .model.bundle import BundleError, load_bundle

    try:
        return load_bundle(path or DEMO_MODEL, normative)
    except BundleError as exc:
        raise ModelError(f"{exc} (--model)") from None


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


@dataclass
class SessionResult:
    t1w: bids.T1wInput
    paths: dict  # every derivative of the session ({key of bids.SESSION_OUTPUTS: path}), relative to the output folder
    whole: float
    ad_probability: float
    predicted_class: str
    degenerative: list
    relevance: dict | None = None  # whole-brain score, lambda and degenerative regions of the relevance-weighted map
    model_checksum: str | None = None  # model.json's metadata_sha256: the weights, the reference, its rule and class offset
    qc: dict | None = None  # the quality gate's measures
    normative: dict | None = None  # the summary's "Normative" record (SPEC 10), None without a reference
    class_reliable: bool | None = None  # the summary's "ClassReliable": None where the model has no class domain
    class_domain: dict | None = None  # the summary's "ClassDomain" (distance to the heads the class was set on)
    reused: bool = False  # this run found it scored from the same inputs and kept its outputs (its figures too, where they exist)


def write_crash(path, exc):
    """The traceback of ``exc`` in a crash file; returns its path, or None when the disk refuses it too
    (the disk that refused an output may refuse the log)."""
    import traceback

    try:
        write_text(path, "".join(traceback.format_exception(exc)))
    except (OSError, OutputNotWritableError):
        return None
    return path


def quality_gate(item, output_dir, template, thresholds):
    """The quality gate's record of one preprocessed T1w, written beside its outputs."""
    record = gate_record(item, output_dir, template, thresholds)
    write_json(output_dir / bids.output_path(item.entities, "qc"), {**record, "Sources": [bids.raw_uri(item.relpath)]})
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


def scoring_fingerprint(item, output_dir, template, metadata, qc_thresholds, covariates):
    """sha256 of everything that decides a T1w's scores: its preprocessed images that the gate and
    the scoring read (their bytes), the model and its normative reference, the gate's bounds, its
    age and sex, and this bids_pscore's version (a development build's changes with every commit)."""
    import hashlib
    import json

    from . import __version__
    from .model.bundle import sha256

    images = bids.session_outputs(item.entities, template, bids.PREPROCESSING)
    decided_by = {
        "t1w": item.relpath,
        "template": template,
        "images": {key: sha256(output_dir / images[key]) for key in ("t1w_grid", "mask_grid", "mask_native")},
        "model": metadata["metadata_sha256"],
        "normative": (metadata.get("normative") or {}).get("sha256"),
        "qc_thresholds": qc_thresholds,
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

    steps = (bids.PSCORE, *((bids.RELEVANCE,) if bundle.metadata.get("relevance") else ()), *((bids.NORMATIVE,) if bundle.normative else ()))
    outputs = bids.with_sidecars(bids.session_outputs(item.entities, template, *steps)) + [bids.output_path(item.entities, "qc")]
    try:
        recorded = json.loads(record.read_text())
        if recorded["fingerprint"] != fingerprint or not all((output_dir / p).is_file() for p in outputs):
            return None
        if recorded["summary_sha256"] != sha256(output_dir / bids.output_path(item.entities, "summary", template)):
            return None
        result = read_session_result(output_dir, item, template)
    except (OSError, ValueError, KeyError, TypeError):  # no record yet, or one or an output damaged: score it anew
        return None
    if result is None or not scored_by(result, bundle.metadata):
        return None
    return replace(result, reused=True)


def log_result(result):
    """The RESULT line of a scored session (and the cautions of its class and its normative comparison)."""
    from .derivatives import class_mark

    mark = class_mark(result.class_domain)
    log.log(
        RESULT,
        "%s: whole-brain P-score %.1f of %d, AD probability %.2f (%s%s), %d degenerative region(s)%s%s",
        result.t1w.label,
        result.whole,
        N_REGIONS,
        result.ad_probability,
        result.predicted_class,
        f"; {mark}" if mark else "",
        len(result.degenerative),
        "" if result.normative is None else f"; {result.normative['NumberOfAtrophicRegions']} atrophic against healthy people (normative)",
        "; scores reused from the work folder (same inputs, model and settings)" if result.reused else "",
    )
    if mark:
        log.warning("%s: %s", result.t1w.label, result.class_domain["Caution"])
    if result.normative is not None and "Caution" in result.normative:
        log.warning("%s: %s", result.t1w.label, result.normative["Caution"])


def score_sessions(t1w_inputs, output_dir, bundle, template, qc_thresholds, log_dir, covariates=None, record_dir=None):
    """Quality gate, ensemble, P-scores, normative deviations and derivatives of every preprocessed
    T1w (SPEC sections 4, 5, 8 and 10). ``covariates`` maps a T1w's ident to its (age, sex).
    ``record_dir`` (in the work folder) keeps what each T1w was scored from (scoring_fingerprint):
    a T1w whose fingerprint and outputs are unchanged is read back, not scored again; without it
    every T1w is scored. Returns the scored sessions and, for each T1w the gate stopped or whose
    scoring failed (only that T1w fails; its crash file goes to ``log_dir``), its Outcome."""

    from . import derivatives, normative, pscore
    from .atlas import atlas_on_grid, region_table
    from .inference import score_image
    from .model.bundle import sha256
    from .progress import Outcome

    weights, selected = bundle.ensemble.weights_per_cube()
    reference = pscore.Reference.from_dict(bundle.metadata["reference"])
    relevance = bundle.metadata.get("relevance")
    if relevance is None:
        log.info(
            "note: this model has no relevance reference statistics; the relevance-weighted outputs are skipped "
            "(bids_pscore-train of this version writes them)"
        )
    else:
        from .model.relevance import relevance_on_grid, selected_base

        relevance_base, relevance_cubes = selected_base(bundle.ensemble), bundle.ensemble.selected.cpu().numpy()
        relevance_reference = pscore.Reference.from_dict(relevance["reference"])
    if bundle.normative is None:
        log.info("note: this model has no normative reference, so no region is compared with healthy people; bids_pscore-normative adds one")
    card = model_card(bundle)
    grid_atlas = atlas_on_grid()
    sizes = pscore.region_sizes(grid_atlas)
    labels = region_table()["label"].to_numpy()
    derivatives.write_atlas(output_dir, template, grid_atlas)
    results, stopped = [], {}
    for item in t1w_inputs:
        age, sex = (covariates or {}).get(item.ident, (float("nan"), "n/a"))
        if record_dir is not None:
            record = Path(record_dir) / f"{item.ident}.json"
            try:
                fingerprint = scoring_fingerprint(item, output_dir, template, bundle.metadata, qc_thresholds, [age, sex])
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
            derivatives.remove_outputs(output_dir, item.entities, template, preprocessing=False)
            gate = quality_gate(item, output_dir, template, qc_thresholds)
            if gated_out(item, gate, "scoring"):
                # garbage in must not come out as a score (the image itself, the mask and the QC record stay)
                stopped[item.label] = Outcome(item.label, "failed", failed_step="quality gate", message=gate_failures(gate),
                                              log=str(bids.output_path(item.entities, "qc")))  # fmt: skip
                continue
            paths = bids.session_outputs(item.entities, template, bids.PREPROCESSING, bids.QC)
            image, mask = grid_image(item, output_dir, template)
            scored = score_image(bundle.ensemble, reference, image, mask, grid_atlas, sizes, bundle.class_offset)
            scores, ad_probability = scored.scores, scored.ad_probability
            predicted = "AD" if ad_probability >= pscore.AD_THRESHOLD else "control"
            written = {}
            grey_level = pscore.region_means(image, grid_atlas, sizes)[0]
            # how far the scan lies from the heads the class was set on: far, its class is not reliable
            far_from_class = None if bundle.class_domain is None else normative.deviation(
                bundle.class_domain, image, {"grey_level": grey_level}, age, normative.sex_code(sex))  # fmt: skip
            class_summary = derivatives.class_domain_summary(far_from_class, bundle.metadata.get("class_domain"))
            if bundle.normative is not None:
                region_values = {"grey_level": grey_level, "pscore": scores.region_norm[0]}
                deviation = normative.deviation(bundle.normative, image, region_values, age, normative.sex_code(sex))
                normative_summary = derivatives.normative_summary(deviation, bundle.metadata["normative"], labels, age, sex)
                written.update(derivatives.write_normative(output_dir, item.entities, template, deviation, normative_summary, card,
                                                           item.relpath))  # fmt: skip
            else:
                deviation, normative_summary = None, None
            relevance_summary = None
            if relevance is not None:
                grid_relevance = relevance_on_grid(relevance_base, scored.cubes, relevance_cubes, relevance)
                relevance_map = pscore.relevance_voxel_scores(scores.cube, grid_relevance, mask[None])[0]
                region = pscore.region_means(relevance_map, grid_atlas, sizes)
                weighted = pscore.score_regions(scores.p_ad, scores.cube, scores.brain_voxels, region, relevance_reference)
                written.update(derivatives.write_relevance(
                    output_dir, item.entities, template, weighted, voxel_map=relevance_map,
                    region_map=pscore.paint_regions(weighted.region_norm[0], grid_atlas)[0], threshold=relevance_reference.threshold,
                    method=relevance["description"], model_card=card, t1w_relpath=item.relpath,
                ))  # fmt: skip
                relevance_summary = {"whole": float(weighted.whole[0]), "lambda": relevance_reference.threshold,
                                     "degenerative": labels[weighted.degenerative[0]].tolist()}  # fmt: skip
            written.update(derivatives.write_session(
                output_dir, item.entities, template, scores,
                voxel_map=pscore.voxel_scores(scores.cube, mask[None])[0],
                region_map=pscore.paint_regions(scores.region_norm[0], grid_atlas)[0],
                ad_probability=ad_probability, predicted_class=predicted, weights=weights, selected=selected,
                threshold=reference.threshold, model_card=card, t1w_relpath=item.relpath, normative=normative_summary,
                class_domain=class_summary,
            ))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - whatever fails in one session (an unreadable image, a full disk) fails that T1w only
            stopped[item.label] = scoring_failure(item, exc, log_dir)
            with contextlib.suppress(OSError):  # what this run wrote of the set; a failing disk may refuse even that
                derivatives.remove_outputs(output_dir, item.entities, template, preprocessing=False)
            log.warning("%s: NOT SCORED, scoring failed: %s", item.label, stopped[item.label].message)
            continue
        paths.update({k: Path(v).relative_to(output_dir) for k, v in written.items()})
        results.append(SessionResult(item, paths, float(scores.whole[0]), ad_probability, predicted,
                                     labels[scores.degenerative[0]].tolist(), relevance_summary, qc=gate["Measures"],
                                     normative=normative_summary, **derivatives.Summary.class_fields(class_summary)))  # fmt: skip
        log_result(results[-1])
        if record_dir is not None and fingerprint:
            try:  # after the summary, the set's last file: a record names only a whole set
                write_json(record, {"fingerprint": fingerprint, "t1w": item.relpath, "summary_sha256": sha256(output_dir / paths["summary"])})
            except (OSError, OutputNotWritableError) as exc:  # the next run scores it again, that is all
                log.debug("%s: its scoring record %s cannot be written (%s)", item.label, record, exc)
        log.debug(
            "%s: %d of %d selected cubes hold brain; region scores normalised by the model's reference, lambda %.3f",
            item.label,
            (scores.brain_voxels[0][selected] > 0).sum(),
            selected.sum(),
            reference.threshold,
        )
    return results, stopped


def run_info(config, started):
    """What every report says of the run that drew it (each session names the run that scored it)."""
    from .derivatives import software_versions

    if config.reports_only:
        run = f"{config.run_id}: --reports-only drew the reports again from the outputs on disk and keeps no log folder"
    else:
        run = f"{config.run_id} (its configuration and logs: logs/run-{config.run_id}/)"
    return {"command line": config.command_line, "started": started, "run": run, "bids_pscore version": software_versions()["bids_pscore"]}


def check_inputs(layout, t1w_inputs, skip_validation):
    """Before anything is written: the BIDS validator on the selected subjects (refuses a dataset
    with errors), then every T1w-like file that will not be processed, and why."""
    root = Path(layout.root)
    if not skip_validation:
        command = bids.validator_command()
        if command is None:
            log.info(
                "note: the BIDS validator is not installed, so only pybids checked the dataset "
                "(pip install 'bids_pscore[validator]'; the container has it)"
            )
        else:
            issues = bids.run_validator(root, {t.entities["sub"] for t in t1w_inputs}, command)
            error = bids.validation_errors(root, issues)
            if error:
                raise error
            warnings = sum(i["severity"] == "warning" for i in issues)
            log.info("BIDS validator: no error, %d warning(s) in the selected subjects", warnings)
    unused = bids.unused_t1w(root, {t.relpath for t in t1w_inputs}, bids.indexed_t1w(layout))
    not_selected = [path for path, reason in unused if reason.startswith("not selected")]
    if not_selected:
        log.info("%d other T1w not selected by --participant-label, --session-label or --bids-filter-file", len(not_selected))
    misnamed = [(path, reason) for path, reason in unused if not reason.startswith("not selected")]
    if misnamed:
        log.warning("%d T1w-like file(s) will not be processed:\n%s", len(misnamed), "\n".join(f"  {path}: {reason}" for path, reason in misnamed))


def preprocessing_params(metadata, random_seed=None):
    """The model's preprocessing, with ``--random-seed`` (when given) as the registration seed."""
    from .model.preprocessing import PreprocParams

    params = PreprocParams.from_dict(metadata["preprocessing"])
    if random_seed is not None and random_seed != params.registration_seed:
        log.warning(
            "--random-seed %d registers differently from this model's training images (seed %d); leave it out to preprocess as they were",
            random_seed,
            params.registration_seed,
        )
        params = replace(params, registration_seed=random_seed)
    return params


def run_participant(config):
    """Preprocess, score and report every selected T1w; return the exit code (0 all done, 1 some failed).
    What the run prints is kept in its log folder as well."""
    from .progress import ConsoleCopy

    with ConsoleCopy() as console:
        return participant_run(config, console)


def participant_run(config, console):
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    import pandas as pd

    from . import derivatives
    from .citation import write_citation
    from .groundtruth import checked_sessions, read_truth, subject_sentences
    from .model.bundle import model_warnings

    selection = config.selection
    layout = bids.load_layout(config.bids_dir, validate=not selection.skip_bids_validation, database_dir=selection.bids_database_dir)
    t1w_inputs = bids.find_t1w(layout, selection.participant_label, selection.session_label, selection.bids_filters)
    if config.reports_only:
        return rebuild_reports(t1w_inputs, config)
    check_inputs(layout, t1w_inputs, selection.skip_bids_validation)
    bundle = load_model(config.model)
    output_dir, work_dir = make_run_folders(config.output_dir, config.execution.work_dir, config.bids_dir)
    remove_stale_temporaries(output_dir)
    log_dir = output_dir / "logs" / f"run-{config.run_id}"
    log.info("this run's configuration and logs: %s", write_config(config, log_dir).parent)
    console.keep_in(log_dir / "console.log")
    card = model_card(bundle)
    log.info("model %s version %s from %s", card["name"], card["version"], bundle.folder)
    for warning in model_warnings(bundle.metadata):
        log.warning("%s", warning)
    params = preprocessing_params(bundle.metadata, config.execution.random_seed)
    done, failed = preprocessed_t1w(t1w_inputs, config.bids_dir, output_dir, work_dir, params, config.execution, log_dir, "scoring")
    for t1w in t1w_inputs:  # a T1w that failed now, not one that --stop-on-first-crash left unrun
        if t1w.label in failed and failed[t1w.label].status == "failed" and derivatives.remove_outputs(output_dir, t1w.entities, params.template):
            log.info("%s: the outputs of an earlier run were removed, since this run failed for it", t1w.label)
    if failed and config.execution.stop_on_first_crash:
        log.info("stopped at the first failure (--stop-on-first-crash); nothing was scored")
        return EXIT_SESSION_FAILED
    if done:
        log.info("P-scores of %d T1w", len(done))
    ages, sexes = bids.ages_and_sexes(config.bids_dir, done)
    covariates = {t.ident: (age, sex) for t, age, sex in zip(done, ages, sexes)}
    from .preprocess.workflow import workflow_name

    # beside this version's cache of the workflow: --clean-workdir and a new version start without it
    record_dir = work_dir / workflow_name(work_dir) / "scored"
    results, stopped = score_sessions(done, output_dir, bundle, params.template, config.qc_thresholds, log_dir, covariates, record_dir)
    failed.update(stopped)
    # which T1w this run scored (not those it reused), for the reports to name the run behind each session (not in
    # the outputs: they stay the same bytes run after run)
    write_tsv(log_dir / "scored.tsv", pd.DataFrame({"t1w": [r.t1w.relpath for r in results if not r.reused]}))
    # every T1w of the run's subjects, whatever --session-label or --bids-filter-file selected
    subject_t1w = bids.find_t1w(layout, sorted({t.entities["sub"] for t in t1w_inputs}))
    log.info("drawing the reports of %d subject(s) (figures take a few seconds each)", len({t.entities["sub"] for t in t1w_inputs}))
    truth = read_truth(config.bids_dir)
    reports, unwritten = write_run_reports(output_dir, t1w_inputs, subject_t1w, results, failed, bundle.metadata, params.template,
                                           run_info(config, started), truth, record_dir)  # fmt: skip
    report_failures(output_dir, unwritten, log_dir)
    citation = write_citation(output_dir, params, bundle.metadata)
    log.log(RESULT, "reports: %s; methods and citations: %s", ", ".join(str(output_dir / r) for r in reports), citation)
    if truth:
        from .atlas import region_table

        for sentence in subject_sentences(checked_sessions(results, truth, region_table()["label"].to_numpy())):
            log.log(RESULT, "%s", sentence)
    if failed:
        log.warning("%d of %d T1w not scored:\n%s", len(failed), len(t1w_inputs), "\n".join(
            f"  {o.label}: {o.failed_step or o.status}: {o.message}" + (f" [log: {o.log}]" if o.log else "") for o in failed.values()))  # fmt: skip
    return EXIT_SESSION_FAILED if failed or unwritten else EXIT_OK


def report_failures(output_dir, unwritten, log_dir=None):
    """Say which reports could not be drawn ({name: exception}), each in one line with the fix; their
    tracebacks go to crash files in ``log_dir`` (--reports-only keeps no log folder)."""
    for name, exc in unwritten.items():
        crash = None if log_dir is None else write_crash(Path(log_dir) / f"crash-report-{Path(name).stem}.txt", exc)
        log.warning("%s: report NOT drawn (%s); the scores are on disk: draw it again with --reports-only%s",
                    Path(output_dir) / name, in_one_line(exc), f" [log: {crash}]" if crash else "")  # fmt: skip


def read_session_result(output_dir, t1w, template):
    """A scored session's SessionResult read back from its outputs, or None if it has none."""
    import json

    from .derivatives import Summary

    paths = bids.session_outputs(t1w.entities, template, bids.PREPROCESSING, bids.PSCORE)
    if not all((output_dir / p).is_file() for p in paths.values()):
        return None
    summary = Summary.from_json(output_dir / paths["summary"])
    relevance = None
    relevance_paths = bids.session_outputs(t1w.entities, template, bids.RELEVANCE)
    if all((output_dir / p).is_file() for p in relevance_paths.values()):
        paths.update(relevance_paths)
        weighted = Summary.from_json(output_dir / relevance_paths["relevance_summary"], relevance=True)
        relevance = {"whole": weighted.whole, "lambda": weighted.threshold, "degenerative": weighted.degenerative}
    gate = bids.output_path(t1w.entities, "qc")
    measures = None
    if (output_dir / gate).is_file():
        paths["qc"] = gate
        measures = json.loads((output_dir / gate).read_text())["Measures"]
    normative_paths = bids.session_outputs(t1w.entities, template, bids.NORMATIVE)
    if summary.normative is not None and all((output_dir / p).is_file() for p in normative_paths.values()):
        paths.update(normative_paths)
    return SessionResult(t1w, paths, summary.whole, summary.ad_probability, summary.predicted_class, summary.degenerative, relevance,
                         summary.model_checksum, measures, summary.normative, summary.class_reliable, summary.class_domain)  # fmt: skip


def scored_by(result, metadata):
    """Whether a session read back from disk was scored by this model.json: these weights, this normative
    reference with its rule and threshold, this class offset (a reference rebuilt from the same controls
    can hold the same statistics under another rule)."""
    return result.model_checksum == metadata["metadata_sha256"]


def earlier_results(output_dir, t1w_inputs, template, metadata):
    """The sessions of ``t1w_inputs`` that earlier runs scored with this model, read back from the output
    folder; those scored by another model are left out, with a line naming them."""
    results = []
    for t1w in t1w_inputs:
        try:
            result = read_session_result(output_dir, t1w, template)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged by hand or by a killed older version
            log.warning(
                "%s: its outputs cannot be read back (%s: %s) and are left out of the report; score it again", t1w.label, type(exc).__name__, exc
            )
            continue
        if result is not None:
            results.append(result)
    ours, other = [], []
    for result in results:
        (ours if scored_by(result, metadata) else other).append(result)
    if other:
        log.warning("%d earlier session(s) scored by another model (or normative reference) are left out of the reports: %s; "
                    "score them again with this model", len(other), ", ".join(str(r.paths["summary"]) for r in other))  # fmt: skip
    return ours


def write_run_reports(output_dir, t1w_inputs, subject_t1w, results, failed, metadata, template, info, truth=None, record_dir=None):
    """The reports of a run's subjects, each with every session scored in the output folder: this run's
    ``results`` and those of ``subject_t1w`` that earlier runs scored with this model (a run of one
    session must not drop the others from the subject's report). ``record_dir`` (score_sessions')
    keeps which model the model's figure was drawn for."""
    from .report.participant import write_subject_reports

    earlier = earlier_results(output_dir, [t for t in subject_t1w if t not in t1w_inputs], template, metadata)
    every = sorted(results + earlier, key=lambda r: r.t1w.relpath)
    return write_subject_reports(output_dir, t1w_inputs + [r.t1w for r in earlier], every, failed, metadata, template, info, truth,
                                 None if record_dir is None else Path(record_dir) / "model_figure.json")  # fmt: skip


def rebuild_reports(t1w_inputs, config):
    """--reports-only: the reports and the methods text drawn again from the outputs on disk; the
    derivatives are read, never written. Sessions without outputs are named as not scored."""
    from .citation import write_citation
    from .groundtruth import read_truth
    from .progress import Outcome
    from .report.participant import write_subject_reports

    output_dir = Path(config.output_dir)
    bundle = load_model(config.model)
    params = preprocessing_params(bundle.metadata, config.execution.random_seed)
    results, failed = [], {}
    for t1w in t1w_inputs:
        result = read_session_result(output_dir, t1w, params.template)
        if result is None:
            failed[t1w.label] = Outcome(
                t1w.label, status="failed", failed_step="participant level", message="not scored yet: no outputs in the output folder"
            )
        elif not scored_by(result, bundle.metadata):
            raise ModelError(f"{output_dir / result.paths['summary']}: was scored by another model (or normative reference) than "
                             f"{bundle.folder}; pass the model that made the outputs with --model")  # fmt: skip
        else:
            results.append(result)
    if not results:
        raise NoT1wError(f"{output_dir}: holds no outputs of the selected T1w; run the participant level first")
    remove_stale_temporaries(output_dir)
    reports, unwritten = write_subject_reports(output_dir, t1w_inputs, results, failed, bundle.metadata, params.template,
                                               run_info(config, time.strftime("%Y-%m-%d %H:%M:%S %z")), read_truth(config.bids_dir))  # fmt: skip
    report_failures(output_dir, unwritten)
    citation = write_citation(output_dir, params, bundle.metadata)
    log.log(
        RESULT,
        "reports drawn again from %d scored T1w: %s; methods and citations: %s",
        len(results),
        ", ".join(str(output_dir / r) for r in reports),
        citation,
    )
    return EXIT_SESSION_FAILED if unwritten else EXIT_OK
