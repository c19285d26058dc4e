"""The participant level: BIDS inputs -> preprocessing workflow -> quality gate -> model -> P-scores
-> derivatives -> reports."""

import logging
import time
from pathlib import Path

from . import bids
from .cohort import load_model, preprocessing_params, went_through
from .config import write_config
from .errors import EXIT_OK, EXIT_SESSION_FAILED, ModelError, NoT1wError, in_one_line
from .execution import make_run_folders, preprocess
from .fileio import remove_stale_temporaries, write_tsv
from .progress import RESULT
from .results import earlier_results, read_session_result, scored_by
from .scoring import model_card, model_notes, scored_in_workflow, write_crash

log = logging.getLogger(__name__)


def run_info(config, started):
    """What every report says of the run that drew it (each session names the run that scored it)."""
    from .derivatives.sidecars import software_versions

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


def run_participant(config):
    """Preprocess, score and report every selected T1w; return the exit code (0 all done, 1 some failed).
    What the run prints is kept in its log folder as well."""
    from .progress import ConsoleCopy

    with ConsoleCopy() as console:
        return participant_run(config, console)


def participant_run(config, console):
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    import pandas as pd

    from . import tabular
    from .atlas import atlas_on_grid
    from .citation import write_citation
    from .derivatives import dataset_files, session_files
    from .derivatives import layout as derivatives_layout
    from .model.bundle import model_warnings
    from .preprocess.workflow import workflow_name
    from .workflows import SCORING_NODES, ScoringSettings

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
    ages, sexes = tabular.ages_and_sexes(config.bids_dir, t1w_inputs)
    scoring = ScoringSettings.of(output_dir, params.template, bundle, config.qc_thresholds,
                                 {t.ident: (age, sex) for t, age, sex in zip(t1w_inputs, ages, sexes)},
                                 (config.execution.plugin_args or {}).get("n_procs", config.execution.n_cpus),
                                 (config.execution.plugin_args or {}).get("memory_gb", config.execution.mem_gb))  # fmt: skip
    # preprocessing, quality gate, scoring and figures of every T1w: one workflow
    progress = preprocess(t1w_inputs, config.bids_dir, output_dir, work_dir, params, config.execution, log_dir, scoring.attach)
    done, failed = went_through(t1w_inputs, progress, "scoring", SCORING_NODES)
    for t1w in t1w_inputs:  # a T1w that failed now, not one that --stop-on-first-crash left unrun
        if t1w.label in failed and failed[t1w.label].status == "failed" and session_files.remove_outputs(output_dir, t1w.entities, params.template):
            log.info("%s: the outputs of an earlier run were removed, since this run failed for it", t1w.label)
    if failed and config.execution.stop_on_first_crash:
        # the scoring of each T1w follows its own preprocessing: those whose scores were copied out before the stop are scored
        scored = [t.label for t in done if SCORING_NODES[-1] in progress.outcomes[t.ident].steps
                  and (output_dir / derivatives_layout.output_path(t.entities, "summary", params.template)).is_file()]  # fmt: skip
        log.info("stopped at the first failure (--stop-on-first-crash); %s; no report was drawn",
                 f"scored before it: {len(scored)} T1w ({', '.join(scored)}), their outputs in {output_dir}" if scored
                 else "nothing was scored")  # fmt: skip
        return EXIT_SESSION_FAILED
    if done:
        log.info("P-scores of %d T1w", len(done))
    model_notes(bundle)
    dataset_files.write_atlas(output_dir, params.template, atlas_on_grid())
    # beside this version's cache of the workflow: --clean-workdir and a new version start without it
    record_dir = work_dir / workflow_name(work_dir) / "scored"
    results, stopped = scored_in_workflow(done, progress.outcomes, output_dir, params.template)
    failed.update(stopped)
    # which T1w this run scored (not those it reused), for the reports to name the run behind each session (not in
    # the outputs: they stay the same bytes run after run)
    write_tsv(log_dir / "scored.tsv", pd.DataFrame({"t1w": [r.t1w.relpath for r in results if not r.reused]}))
    # every T1w of the run's subjects, whatever --session-label or --bids-filter-file selected
    subject_t1w = bids.find_t1w(layout, sorted({t.entities["sub"] for t in t1w_inputs}))
    log.info("drawing the reports of %d subject(s) (figures take a few seconds each)", len({t.entities["sub"] for t in t1w_inputs}))
    reports, unwritten = write_run_reports(output_dir, t1w_inputs, subject_t1w, results, failed, bundle.metadata, params.template,
                                           run_info(config, started), config.bids_dir, record_dir)  # fmt: skip
    report_failures(output_dir, unwritten, log_dir)
    citation = write_citation(output_dir, params, bundle.metadata, config.execution.skull_strip_t1w)
    log.log(RESULT, "reports: %s; methods and citations: %s", ", ".join(str(output_dir / r) for r in reports), citation)
    # imported here, as in write_run_reports: the reports' module loads matplotlib, which the run needs no sooner
    from .report.participant import truth_check

    for sentence in truth_check(results, config.bids_dir):  # none unless bids_pscore-synth made the dataset
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


def write_run_reports(output_dir, t1w_inputs, subject_t1w, results, failed, metadata, template, info, bids_dir=None, record_dir=None):
    """The reports of a run's subjects, each with every session scored in the output folder: this run's
    ``results`` and those of ``subject_t1w`` that earlier runs scored with this model (a run of one
    session must not drop the others from the subject's report). ``bids_dir``: the dataset, whose truth
    the reports show when bids_pscore-synth made it. ``record_dir`` (in the workflow's folder)
    keeps which model the model's figure was drawn for."""
    from .report.participant import write_subject_reports

    earlier = earlier_results(output_dir, [t for t in subject_t1w if t not in t1w_inputs], template, metadata)
    every = sorted(results + earlier, key=lambda r: r.t1w.relpath)
    return write_subject_reports(output_dir, t1w_inputs + [r.t1w for r in earlier], every, failed, metadata, template, info, bids_dir,
                                 None if record_dir is None else Path(record_dir) / "model_figure.json")  # fmt: skip


def skull_strip_done(output_dir, results):
    """The --skull-strip-t1w mode whose methods text says what the sessions' sidecars record: "skip" where
    every input kept its own brain, "force" where deepbet stripped every one, "auto" where both happened;
    None where a sidecar cannot be read. --reports-only describes the outputs, which a run with another
    mode than its command line's may have made."""
    import json

    from .derivatives import layout

    kept = set()
    for result in results:
        try:
            kept.add(json.loads(layout.sidecar_path(Path(output_dir) / result.paths["t1w_grid"]).read_text())["InputSkullStripped"])
        except (OSError, ValueError, KeyError):
            return None
    return "skip" if kept == {True} else "force" if kept == {False} else "auto"


def rebuild_reports(t1w_inputs, config):
    """--reports-only: the reports and the methods text drawn again from the outputs on disk; the
    derivatives are read, never written. Sessions without outputs are named as not scored."""
    from .citation import write_citation
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
                                               run_info(config, time.strftime("%Y-%m-%d %H:%M:%S %z")), config.bids_dir)  # fmt: skip
    report_failures(output_dir, unwritten)
    citation = write_citation(output_dir, params, bundle.metadata, skull_strip_done(output_dir, results) or config.execution.skull_strip_t1w)
    log.log(
        RESULT,
        "reports drawn again from %d scored T1w: %s; methods and citations: %s",
        len(results),
        ", ".join(str(output_dir / r) for r in reports),
        citation,
    )
    return EXIT_SESSION_FAILED if unwritten else EXIT_OK
