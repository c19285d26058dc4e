"""Participant and group orchestration: BIDS inputs -> preprocessing workflow -> outputs."""

import contextlib
import gc
import getpass
import logging
import math
import multiprocessing
import multiprocessing.forkserver
import os
import re
import signal
import tempfile
import time
from dataclasses import dataclass, replace
from importlib.resources import files
from pathlib import Path

from . import bids
from .errors import EXIT_OK, EXIT_SESSION_FAILED, ModelError, NoT1wError, OutputNotWritableError, UsageError
from .fileio import write_json, write_text

log = logging.getLogger("bids_pscore")
DEMO_MODEL = Path(str(files("bids_pscore") / "data" / "demo_model"))


def make_run_folders(output_dir, work_dir, bids_dir):
    """Refuse an output or work folder that would write into the raw dataset or mix nipype's cache
    into the derivatives, then make both and check they can be written. A refused run leaves no
    folder behind. Returns the resolved (output_dir, work_dir)."""
    output_dir, work_dir, bids_dir = Path(output_dir).resolve(), Path(work_dir).resolve(), Path(bids_dir).resolve()
    if output_dir == bids_dir or (bids_dir in output_dir.parents and (bids_dir / "derivatives") not in output_dir.parents):
        raise UsageError(
            f"{output_dir}: is inside the BIDS folder, which is never written to; "
            f"use {bids_dir / 'derivatives' / 'bids_pscore'} or a folder outside it"
        )
    if work_dir == bids_dir or bids_dir in work_dir.parents:
        raise UsageError(f"{work_dir}: the work folder must not be inside the BIDS folder; pass -w elsewhere")
    if work_dir == output_dir or output_dir in work_dir.parents:
        raise UsageError(f"{work_dir}: the work folder must not be inside the output folder (nipype's cache would sit among "
                         "the derivatives, which the BIDS validator then refuses); pass -w elsewhere")  # fmt: skip
    made = []
    for folder, what, fix in ((output_dir, "the output folder", "give a folder you can write to"),
                              (work_dir, "the work folder", "pass -w elsewhere")):  # fmt: skip
        missing = [f for f in (folder, *folder.parents) if not f.exists()]
        try:
            folder.mkdir(parents=True, exist_ok=True)
            made.extend(reversed(missing))
            with tempfile.NamedTemporaryFile(dir=folder):
                pass
        except OSError as exc:
            for created in reversed(made):  # deepest first; each is empty, as this run made it
                with contextlib.suppress(OSError):
                    created.rmdir()
            raise OutputNotWritableError(f"{folder}: {what} cannot be written ({exc.strerror}); {fix}") from None
    return output_dir, work_dir


def write_dataset_files(output_dir, bids_dir):
    write_json(output_dir / "dataset_description.json", bids.dataset_description(bids_dir, bids.container_record(os.environ)))
    write_text(output_dir / ".bidsignore", "\n".join(bids.BIDSIGNORE) + "\n")
    write_text(output_dir / "README.md", bids.output_readme(bids_dir))


def configure_nipype(crash_dir, verbosity, stop_on_first_crash=False):
    from nipype import config, logging as nipype_logging

    from .preprocess import NIPYPE_LOG_LEVEL_VARIABLE

    level = "INFO" if verbosity >= 2 else "WARNING"
    os.environ[NIPYPE_LOG_LEVEL_VARIABLE] = level
    config.update_config({
        "execution": {
            "crashdump_dir": str(crash_dir),
            "crashfile_format": "txt",
            "stop_on_first_crash": str(bool(stop_on_first_crash)).lower(),
            "remove_unnecessary_outputs": "false",
            "check_version": "false",
            # nipype's default of 2 s between polls adds seconds to every step of a short job
            "poll_sleep_duration": "0.2",
        },
        "logging": {"workflow_level": level, "interface_level": level, "utils_level": level},
    })  # fmt: skip
    nipype_logging.update_logging(config)
    # nipype logs each failure with its whole traceback; our summary names it in one line
    if verbosity < 2:
        logging.getLogger("nipype.workflow").setLevel(logging.CRITICAL)


# a batch job runs a Python that loads nipype and the step's libraries: never ask for less
MIN_JOB_MEM_GB = 1.0


def job_resources(wf, plugin, user_args):
    """Under SLURM, each step's job asks for the CPUs and memory the step declares (``n_procs``,
    ``mem_gb``), so that jobs share a node instead of each reserving a whole one. What the user's
    ``sbatch_args`` already ask for is left to them."""
    if plugin != "SLURM":
        return
    given = str((user_args or {}).get("sbatch_args", ""))
    for name in wf.list_node_names():
        node = wf.get_node(name)
        if node.run_without_submitting:
            continue
        wanted = []
        if not re.search(r"(^|\s)(-c|--cpus-per-task)\b", given):
            wanted.append(f"--cpus-per-task={node.n_procs}")
        if not re.search(r"(^|\s)--mem\b", given):
            wanted.append(f"--mem={math.ceil(max(node.mem_gb, MIN_JOB_MEM_GB) * 1024)}M")
        if wanted:
            node.plugin_args = {**node.plugin_args, "sbatch_args": " ".join(wanted), "overwrite": False}


def batch_environment(environ):
    """What nipype's batch plugins read from the environment and a container may lack: LOGNAME
    names every job (a KeyError without it)."""
    if "LOGNAME" not in environ:
        try:
            environ["LOGNAME"] = getpass.getuser()
        except (KeyError, OSError):  # an arbitrary uid in a container has no passwd entry
            environ["LOGNAME"] = "bids_pscore"


def plugin_settings(name, user_args, n_cpus, status_callback, mem_gb=None):
    args = dict(user_args or {})
    if name == "MultiProc":
        args.setdefault("n_procs", n_cpus)
        if mem_gb is not None:
            args.setdefault("memory_gb", mem_gb)
        # forked workers can deadlock in OpenMP/torch thread pools the parent already started
        args.setdefault("mp_context", "forkserver")
    args["status_callback"] = status_callback
    return args


def clean_work_dir(work_dir):
    """--clean-workdir: remove what earlier runs of any version cached in the work folder, and
    nothing else that may share it."""
    import shutil

    for entry in sorted(Path(work_dir).glob("bids_pscore_*_wf")):
        print(f"bids_pscore: --clean-workdir: removing {entry}", flush=True)
        shutil.rmtree(entry)


@contextlib.contextmanager
def stopped_by_ctrl_c(progress):
    """Ctrl-C stops the whole run. nipype takes a KeyboardInterrupt raised inside a step for that
    step's failure and goes on with the rest, so the interrupt is also remembered and raised again
    at the next step's start or end (``Progress``); MultiProc's workers are stopped, not waited for
    (a registration would finish first). Their unfinished steps rerun on the next call."""

    def on_interrupt(signum, frame):
        progress.interrupted = True
        raise KeyboardInterrupt

    # MultiProc's workers come from the forkserver and keep the Ctrl-C handling it started with:
    # started while Ctrl-C is ignored, they leave it to this process instead of each printing a
    # traceback of its own
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    except KeyboardInterrupt:
        # the pool, broken on purpose, would log a traceback for every step that was running
        logging.getLogger("concurrent.futures").disabled = True
        for worker in multiprocessing.active_children():
            worker.terminate()
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


def preprocess(t1w_inputs, bids_dir, output_dir, work_dir, params, opts):
    """Run the preprocessing workflow over ``t1w_inputs`` into the derivatives folder ``output_dir``.

    ``opts`` carries the execution options of the command line (plugin, CPUs, threads, work folder
    cleaning, verbosity); the registration seed is one of ``params``. Returns the ``Progress`` that knows which T1w failed.
    """
    from .preprocess import init_participant_wf
    from .preprocess.steps import write_template_files
    from .preprocess.workflow import workflow_name
    from .progress import Progress

    write_dataset_files(output_dir, bids_dir)
    crash_dir = output_dir / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    configure_nipype(crash_dir, opts.verbose, opts.stop_on_first_crash)
    print(f"bids_pscore: {len(t1w_inputs)} T1w to process in {bids_dir}; outputs in {output_dir}; work in {work_dir}", flush=True)
    progress = Progress({t.ident: t.label for t in t1w_inputs})
    readable = []
    for t1w in t1w_inputs:
        reason = bids.unreadable_reason(t1w)
        if reason:  # only this T1w fails; nipype would reject the whole graph
            progress.refuse(t1w.ident, "load", reason)
        else:
            readable.append(t1w)
    if readable and not (opts.stop_on_first_crash and len(readable) < len(t1w_inputs)):
        name = workflow_name()
        if opts.clean_workdir:
            clean_work_dir(work_dir)
        template_files = write_template_files(work_dir / name / "templates", params.template, params.registration_mm)
        wf = init_participant_wf(readable, output_dir, params, template_files, opts.omp_nthreads, name)
        wf.base_dir = str(work_dir)
        batch_environment(os.environ)
        job_resources(wf, opts.nipype_plugin, opts.nipype_plugin_args)
        # nipype's MultiProc calls gc.collect() at every scheduling step; with torch loaded each call
        # scanned every object of the process (1.2 s a run): freeze what exists now so it skips them
        gc.freeze()
        try:
            with stopped_by_ctrl_c(progress):
                wf.run(plugin=opts.nipype_plugin, plugin_args=plugin_settings(opts.nipype_plugin, opts.nipype_plugin_args, opts.n_cpus, progress, opts.mem_gb))
        except RuntimeError as exc:
            # a failing T1w stops only its own steps; what failed is told in the summary below
            log.debug("workflow finished with errors: %s", exc)
        finally:
            gc.unfreeze()
    progress.attach_crash_logs(crash_dir)
    print(progress.summary(), flush=True)
    return progress


def load_model(path=None):
    """The model bundle at ``path``, or the demo model that ships with the package."""
    from .model.bundle import BundleError, load_bundle

    try:
        return load_bundle(path or DEMO_MODEL)
    except BundleError as exc:
        raise ModelError(f"{exc} (--model)") from None


def model_card(bundle):
    """What the outputs and reports say about the model that made them."""
    meta = bundle.metadata
    return {"name": meta["name"], "version": meta["version"], "sha256": meta["weights"]["sha256"], "warning": meta.get("warning")}


@dataclass
class SessionResult:
    t1w: bids.T1wInput
    paths: dict  # every derivative of the session, relative to the output folder
    whole: float
    ad_probability: float
    predicted_class: str
    degenerative: list
    relevance: dict | None = None  # whole-brain score, lambda and degenerative regions of the relevance-weighted map
    model_sha256: str | None = None
    qc: dict | None = None  # the quality gate's measures


def quality_gate(item, output_dir, template, thresholds):
    """The quality gate's record of one preprocessed T1w (bids_pscore.qc), written beside its outputs."""
    import nibabel as nib
    import numpy as np

    from . import qc
    from .preprocess.steps import template_on_grid, tissue_on_grid

    paths = bids.preproc_paths(item.entities, template)
    brain = np.asarray(nib.load(output_dir / paths["t1w_grid"]).dataobj, np.float32)
    mask = np.asarray(nib.load(output_dir / paths["mask_grid"]).dataobj) > 0
    native = nib.load(output_dir / paths["mask_native"])
    volume_ml = np.count_nonzero(np.asarray(native.dataobj)) * float(np.prod(native.header.get_zooms()[:3])) / 1000
    reference, reference_mask = (np.asarray(i.dataobj) for i in template_on_grid(template))
    values = qc.measures(brain, mask, reference, reference_mask > 0, *tissue_on_grid(template), volume_ml)
    record = qc.record(values, thresholds)
    write_json(output_dir / bids.qc_path(item.entities), {**record, "Sources": [bids.raw_uri(item.relpath)]})
    return record


def score_sessions(t1w_inputs, output_dir, bundle, template, qc_thresholds):
    """Quality gate, ensemble, P-scores and derivatives of every preprocessed T1w (SPEC sections
    4, 5 and 8). Returns the scored sessions and, for each T1w the gate stopped, its Outcome."""
    import nibabel as nib
    import numpy as np
    import torch

    from . import derivatives, pscore
    from .atlas import atlas_on_grid, region_table
    from .grid import cut_cubes
    from .progress import Outcome

    weights, selected = bundle.ensemble.weights_per_cube()
    reference = pscore.Reference.from_dict(bundle.metadata["reference"])
    relevance = bundle.metadata.get("relevance")
    if relevance is None:
        print("bids_pscore: note: this model has no relevance reference statistics; the relevance-weighted outputs "
              "are skipped (bids_pscore-train of this version writes them)", flush=True)  # fmt: skip
    else:
        from .model.relevance import relevance_on_grid, selected_base

        relevance_base, relevance_cubes = selected_base(bundle.ensemble), bundle.ensemble.selected.cpu().numpy()
        relevance_reference = pscore.Reference.from_dict(relevance["reference"])
    card = model_card(bundle)
    grid_atlas = atlas_on_grid()
    sizes = pscore.region_sizes(grid_atlas)
    labels = region_table()["label"].to_numpy()
    derivatives.write_atlas(output_dir, template, grid_atlas)
    results, stopped = [], {}
    for item in t1w_inputs:
        gate = quality_gate(item, output_dir, template, qc_thresholds)
        if not gate["Passed"]:
            # garbage in must not come out as a score: the session's scores are not made, and
            # those of an earlier run go (the image itself, the mask and the QC record stay)
            derivatives.remove_outputs(output_dir, item.entities, template, preprocessing=False)
            message = "; ".join(gate["Failures"]) + " (--qc-thresholds loosens the gate)"
            stopped[item.label] = Outcome(item.label, "failed", failed_step="quality gate", message=message,
                                          log=str(bids.qc_path(item.entities)))  # fmt: skip
            print(f"  {item.label}: NOT SCORED, failed the quality gate: {message}", flush=True)
            continue
        paths = bids.preproc_paths(item.entities, template)
        image = np.asarray(nib.load(output_dir / paths["t1w_grid"]).dataobj, np.float32)
        mask = np.asarray(nib.load(output_dir / paths["mask_grid"]).dataobj) > 0
        cubes = cut_cubes(image)[None]
        with torch.no_grad():
            out = bundle.ensemble(torch.from_numpy(cubes))
        p_ad, ad_probability = out["p_cube"].numpy(), float(out["p_image"][0])
        brain, overlap = pscore.brain_overlap(mask, grid_atlas)
        scores = pscore.score(p_ad, weights, selected, brain, overlap, sizes, reference)
        predicted = "AD" if ad_probability >= 0.5 else "control"
        written = derivatives.write_session(
            output_dir, item.entities, template, scores,
            voxel_map=pscore.voxel_scores(scores.cube, mask[None])[0],
            region_map=pscore.paint_regions(scores.region_norm[0], grid_atlas)[0],
            ad_probability=ad_probability, predicted_class=predicted, weights=weights, selected=selected,
            threshold=reference.threshold, model_card=card, t1w_relpath=item.relpath,
        )  # fmt: skip
        relevance_summary = None
        if relevance is not None:
            grid_relevance = relevance_on_grid(relevance_base, cubes, relevance_cubes, relevance)
            relevance_map = pscore.relevance_voxel_scores(scores.cube, grid_relevance, mask[None])[0]
            region = pscore.region_means(relevance_map, grid_atlas, sizes)
            weighted = pscore.score_regions(p_ad, scores.cube, brain, region, relevance_reference)
            written.update(derivatives.write_relevance(
                output_dir, item.entities, template, weighted, voxel_map=relevance_map,
                region_map=pscore.paint_regions(weighted.region_norm[0], grid_atlas)[0], threshold=relevance_reference.threshold,
                method=relevance["description"], model_card=card, t1w_relpath=item.relpath,
            ))  # fmt: skip
            relevance_summary = {"whole": float(weighted.whole[0]), "lambda": relevance_reference.threshold,
                                 "degenerative": labels[weighted.degenerative[0]].tolist()}  # fmt: skip
        paths.update({k: Path(v).relative_to(output_dir) for k, v in written.items()})
        results.append(SessionResult(item, paths, float(scores.whole[0]), ad_probability, predicted,
                                     labels[scores.degenerative[0]].tolist(), relevance_summary, qc=gate["Measures"]))  # fmt: skip
        print(f"  {item.label}: whole-brain P-score {scores.whole[0]:.1f} of 246, AD probability "
              f"{ad_probability:.2f} ({predicted}), {int(scores.degenerative[0].sum())} degenerative region(s)", flush=True)
    return results, stopped


def run_info(opts, started):
    """What every report says of the run that made it."""
    return {"command line": opts.command_line, "started": started,
            "bids_pscore version": bids.software_versions()["bids_pscore"]}  # fmt: skip


def check_inputs(layout, t1w_inputs, skip_validation):
    """Before anything is written: the BIDS validator on the selected subjects (refuses a dataset
    with errors), then every T1w-like file that will not be processed, and why."""
    root = Path(layout.root)
    if not skip_validation:
        command = bids.validator_command()
        if command is None:
            print("bids_pscore: note: the BIDS validator is not installed, so only pybids checked the dataset "
                  "(pip install 'bids_pscore[validator]'; the container has it)", flush=True)  # fmt: skip
        else:
            issues = bids.run_validator(root, {t.entities["sub"] for t in t1w_inputs}, command)
            error = bids.validation_errors(root, issues)
            if error:
                raise error
            warnings = sum(i["severity"] == "warning" for i in issues)
            print(f"bids_pscore: BIDS validator: no error, {warnings} warning(s) in the selected subjects", flush=True)
    unused = bids.unused_t1w(root, {t.relpath for t in t1w_inputs}, bids.indexed_t1w(layout))
    not_selected = [path for path, reason in unused if reason.startswith("not selected")]
    if not_selected:
        print(f"bids_pscore: {len(not_selected)} other T1w not selected by --participant-label, --session-label or --bids-filter-file", flush=True)
    misnamed = [(path, reason) for path, reason in unused if not reason.startswith("not selected")]
    if misnamed:
        print(f"bids_pscore: WARNING: {len(misnamed)} T1w-like file(s) will not be processed:", flush=True)
        for path, reason in misnamed:
            print(f"  {path}: {reason}", flush=True)


def preprocessing_params(metadata, random_seed=None):
    """The model's preprocessing, with ``--random-seed`` (when given) as the registration seed."""
    from .preprocess import PreprocParams

    params = PreprocParams.from_dict(metadata["preprocessing"])
    if random_seed is not None and random_seed != params.registration_seed:
        print(f"bids_pscore: WARNING: --random-seed {random_seed} registers differently from this model's training images "
              f"(seed {params.registration_seed}); leave it out to preprocess as they were", flush=True)  # fmt: skip
        params = replace(params, registration_seed=random_seed)
    return params


def run_participant(opts):
    """Preprocess, score and report every selected T1w; return the exit code (0 all done, 1 some failed)."""
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    from . import derivatives
    from .model.bundle import model_warnings
    from .report import write_citation, write_subject_reports

    layout = bids.load_layout(opts.bids_dir, validate=not opts.skip_bids_validation, database_dir=opts.bids_database_dir)
    t1w_inputs = bids.find_t1w(layout, opts.participant_label, opts.session_label, bids.load_filter_file(opts.bids_filter_file))
    if opts.reports_only:
        return rebuild_reports(t1w_inputs, opts)
    check_inputs(layout, t1w_inputs, opts.skip_bids_validation)
    bundle = load_model(opts.model)
    output_dir, work_dir = make_run_folders(opts.output_dir, opts.work_dir, opts.bids_dir)
    card = model_card(bundle)
    print(f"bids_pscore: model {card['name']} version {card['version']} from {bundle.folder}", flush=True)
    for warning in model_warnings(bundle.metadata):
        print(f"bids_pscore: WARNING: {warning}", flush=True)
    params = preprocessing_params(bundle.metadata, opts.random_seed)
    progress = preprocess(t1w_inputs, opts.bids_dir, output_dir, work_dir, params, opts)
    failed = {o.label: o for o in progress.failed}
    for t1w in t1w_inputs:  # a T1w that failed now, not one that --stop-on-first-crash left unrun
        if t1w.label in failed and failed[t1w.label].status == "failed" and derivatives.remove_outputs(output_dir, t1w.entities, params.template):
            print(f"bids_pscore: {t1w.label}: the outputs of an earlier run were removed, since this run failed for it", flush=True)
    if failed and opts.stop_on_first_crash:
        print("bids_pscore: stopped at the first failure (--stop-on-first-crash); nothing was scored", flush=True)
        return EXIT_SESSION_FAILED
    done = [t for t in t1w_inputs if t.label not in failed]
    if done:
        print(f"bids_pscore: P-scores of {len(done)} T1w", flush=True)
    results, stopped = score_sessions(done, output_dir, bundle, params.template, opts.qc_thresholds)
    failed.update(stopped)
    reports = write_subject_reports(output_dir, t1w_inputs, results, failed, bundle.metadata, params.template, run_info(opts, started))
    citation = write_citation(output_dir, params, bundle.metadata)
    print(f"bids_pscore: reports: {', '.join(str(output_dir / r) for r in reports)}; methods and citations: {citation}", flush=True)
    return EXIT_SESSION_FAILED if failed else EXIT_OK


def read_session_result(output_dir, t1w, template):
    """A scored session's SessionResult read back from its outputs, or None if it has none."""
    import json

    paths = {**bids.preproc_paths(t1w.entities, template), **bids.pscore_paths(t1w.entities, template)}
    if not all((output_dir / p).is_file() for p in paths.values()):
        return None
    summary = json.loads((output_dir / paths["summary"]).read_text())
    relevance = None
    relevance_paths = bids.relevance_paths(t1w.entities, template)
    if all((output_dir / p).is_file() for p in relevance_paths.values()):
        paths.update(relevance_paths)
        weighted = json.loads((output_dir / relevance_paths["relevance_summary"]).read_text())
        relevance = {"whole": weighted["WholeBrainPScore"], "lambda": weighted["Lambda"], "degenerative": weighted["DegenerativeRegions"]}
    gate = output_dir / bids.qc_path(t1w.entities)
    measures = json.loads(gate.read_text())["Measures"] if gate.is_file() else None
    return SessionResult(t1w, paths, summary["WholeBrainPScore"], summary["ADProbability"], summary["PredictedClass"],
                         summary["DegenerativeRegions"], relevance, summary["Model"]["SHA256"], measures)  # fmt: skip


def rebuild_reports(t1w_inputs, opts):
    """--reports-only: the reports and the methods text drawn again from the outputs on disk; the
    derivatives are read, never written. Sessions without outputs are named as not scored."""
    from .progress import Outcome
    from .report import write_citation, write_subject_reports

    output_dir = Path(opts.output_dir)
    bundle = load_model(opts.model)
    params = preprocessing_params(bundle.metadata, opts.random_seed)
    results, failed = [], {}
    for t1w in t1w_inputs:
        result = read_session_result(output_dir, t1w, params.template)
        if result is None:
            failed[t1w.label] = Outcome(t1w.label, status="failed", failed_step="participant level", message="not scored yet: no outputs in the output folder")
        elif result.model_sha256 != bundle.metadata["weights"]["sha256"]:
            raise ModelError(f"{output_dir / result.paths['summary']}: was scored by another model than {bundle.folder}; "
                             "pass the model that made the outputs with --model")  # fmt: skip
        else:
            results.append(result)
    if not results:
        raise NoT1wError(f"{output_dir}: holds no outputs of the selected T1w; run the participant level first")
    reports = write_subject_reports(output_dir, t1w_inputs, results, failed, bundle.metadata, params.template,
                                    run_info(opts, time.strftime("%Y-%m-%d %H:%M:%S %z")))
    citation = write_citation(output_dir, params, bundle.metadata)
    print(f"bids_pscore: reports drawn again from {len(results)} scored T1w: {', '.join(str(output_dir / r) for r in reports)}; "
          f"methods and citations: {citation}", flush=True)  # fmt: skip
    return EXIT_OK


def run_group(opts):
    """Group level (SPEC section 9) over the participant outputs in the output folder."""
    import numpy as np
    import pandas as pd

    from . import group
    from .atlas import region_table
    from .pscore import whole_brain
    from .report import write_group_report

    output_dir = Path(opts.output_dir)
    # reading refuses an empty folder or mixed models before anything is written
    sessions, raw, reference_norm, threshold, model, damaged = group.read_participant_outputs(
        output_dir, opts.participant_label, opts.session_label)
    for line in damaged:
        print(f"bids_pscore group: WARNING: left out {line}", flush=True)
    ordered = group.order_sessions(sessions, bids.acquisition_times(opts.bids_dir))
    if ordered["repeat"].any():
        print(f"bids_pscore group: {int(ordered['repeat'].sum())} T1w repeat a session already counted (e.g. run-2): "
              f"they are in the tables but not in trajectories or comparisons: {', '.join(ordered.loc[ordered['repeat'], 't1w'])}",
              flush=True)  # fmt: skip
    rows = ordered["row"].to_numpy()
    raw, reference_norm = raw[rows], reference_norm[rows]
    cohort_norm = group.cohort_normalise(raw)
    norm = reference_norm if opts.normalisation == "reference" else cohort_norm
    flags = norm > threshold
    regions = region_table()
    labels = np.asarray(regions["label"])

    participants_tsv = Path(opts.bids_dir) / "participants.tsv"
    if participants_tsv.is_file():
        try:
            extra = pd.read_csv(participants_tsv, sep="\t", dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            extra = pd.DataFrame()
        if "participant_id" in extra.columns:
            extra = extra.drop(columns=[c for c in extra.columns if c in ordered.columns and c != "participant_id"])
            ordered = ordered.merge(extra.drop_duplicates("participant_id"), on="participant_id", how="left")
        else:
            print(f"bids_pscore group: WARNING: {participants_tsv}: no participant_id column (or not a TSV table), so its "
                  "columns are not added to the tables; fix it as BIDS describes", flush=True)  # fmt: skip
    labelled_ad = is_labelled = None
    if opts.label_column:
        label_of, _, _ = bids.read_labels(opts.bids_dir, opts.label_column, opts.positive, opts.negative)
        values = [label_of.get((sub, ses), label_of.get((sub, None))) for sub, ses in zip(ordered["sub"], ordered["ses"])]
        is_labelled = np.array([v is not None for v in values])
        labelled_ad = np.array([v == 1 for v in values])
        ordered["diagnosis"] = [{1: opts.positive, 0: opts.negative}.get(v, "n/a") for v in values]
    predicted_ad = ordered["predicted_class"].to_numpy() == "AD"

    ordered["whole_brain_pscore_reference"] = whole_brain(reference_norm)
    ordered["whole_brain_pscore_cohort"] = whole_brain(cohort_norm)
    ordered["normalisation"] = opts.normalisation
    ordered["n_degenerative"] = flags.sum(axis=1)
    ordered["degenerative_regions"] = [" ".join(labels[f]) for f in flags]
    traj = group.trajectories(ordered, norm, flags, regions)
    tables = {
        "sessions": ordered.drop(columns=["sub", "ses", "row", "lambda"]),
        "regions": pd.DataFrame({
            "participant_id": np.repeat(ordered["participant_id"].to_numpy(), len(labels)),
            "session_id": np.repeat(ordered["session_id"].to_numpy(), len(labels)),
            "t1w": np.repeat(ordered["t1w"].to_numpy(), len(labels)),
            "index": np.tile(regions["index"].to_numpy(), len(ordered)), "label": np.tile(labels, len(ordered)),
            "p_region": raw.ravel(), "p_region_norm_reference": reference_norm.ravel(),
            "p_region_norm_cohort": cohort_norm.ravel(), "degenerative": flags.ravel(),
        }),  # fmt: skip
        "frequency": group.degeneration_frequency(flags, regions, predicted_ad, labelled_ad),
        "sets": group.frequent_sets(flags[predicted_ad], labels, opts.min_support, opts.max_set_size),
        "trajectories": traj,
        "onset": group.onset_order(traj, regions),
    }
    if opts.label_column:
        first = (ordered["session_index"].to_numpy() == 0) & ~ordered["repeat"].to_numpy()
        use = first & is_labelled
        if labelled_ad[use].any() and (~labelled_ad[use]).any():
            tables["comparison"] = group.compare_groups(norm[use], labelled_ad[use], regions)
        else:
            print(f"bids_pscore group: no comparison: the first sessions do not hold both {opts.positive} and {opts.negative}", flush=True)
    from .derivatives import write_group_tables

    written = write_group_tables(output_dir, tables, opts.normalisation, threshold, model)
    write_group_report(output_dir, tables, norm, threshold, model, opts)
    print(f"bids_pscore group: {len(ordered)} sessions of {ordered['participant_id'].nunique()} subjects "
          f"({int(predicted_ad.sum())} predicted AD); tables and report in {written}", flush=True)
    return EXIT_SESSION_FAILED if damaged else EXIT_OK
