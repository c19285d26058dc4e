"""Participant and group orchestration: BIDS inputs -> preprocessing workflow -> outputs."""

import logging
import os
import tempfile
import time
from pathlib import Path

from . import bids
from .errors import EXIT_OK, EXIT_SESSION_FAILED, NoT1wError, OutputNotWritableError, UsageError
from .fileio import write_json, write_text

log = logging.getLogger("bids_pscore")


def check_output_dir(output_dir, bids_dir):
    """The output folder must be writable and must not write into the raw dataset."""
    output_dir, bids_dir = Path(output_dir).resolve(), Path(bids_dir).resolve()
    if output_dir == bids_dir or (bids_dir in output_dir.parents and (bids_dir / "derivatives") not in output_dir.parents):
        raise UsageError(
            f"{output_dir}: is inside the BIDS folder, which is never written to; "
            f"use {bids_dir / 'derivatives' / 'bids_pscore'} or a folder outside it"
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir):
            pass
    except OSError as exc:
        raise OutputNotWritableError(
            f"{output_dir}: cannot be written ({exc.strerror}); give a folder you can write to"
        ) from None
    return output_dir


def check_work_dir(work_dir, bids_dir):
    work_dir, bids_dir = Path(work_dir).resolve(), Path(bids_dir).resolve()
    if work_dir == bids_dir or bids_dir in work_dir.parents:
        raise UsageError(f"{work_dir}: the work folder must not be inside the BIDS folder; pass -w elsewhere")
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=work_dir):
            pass
    except OSError as exc:
        raise OutputNotWritableError(f"{work_dir}: the work folder cannot be written ({exc.strerror}); pass -w elsewhere") from None
    return work_dir


def write_dataset_files(output_dir, bids_dir):
    write_json(output_dir / "dataset_description.json", bids.dataset_description(bids_dir, os.environ.get("BIDS_PSCORE_CONTAINER")))
    write_text(output_dir / ".bidsignore", "\n".join(bids.BIDSIGNORE) + "\n")


def configure_nipype(crash_dir, verbosity):
    from nipype import config, logging as nipype_logging

    from .preprocess import NIPYPE_LOG_LEVEL_VARIABLE

    level = "INFO" if verbosity >= 2 else "WARNING"
    os.environ[NIPYPE_LOG_LEVEL_VARIABLE] = level
    config.update_config({
        "execution": {
            "crashdump_dir": str(crash_dir),
            "crashfile_format": "txt",
            "stop_on_first_crash": "false",
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


def plugin_settings(name, user_args, n_cpus, status_callback):
    args = dict(user_args or {})
    if name == "MultiProc":
        args.setdefault("n_procs", n_cpus)
        # forked workers can deadlock in OpenMP/torch thread pools the parent already started
        args.setdefault("mp_context", "forkserver")
    args["status_callback"] = status_callback
    return args


def preprocess(t1w_inputs, bids_dir, output_dir, work_dir, params, opts):
    """Run the preprocessing workflow over ``t1w_inputs`` into the derivatives folder ``output_dir``.

    ``opts`` carries the execution options of the command line (plugin, CPUs, threads, seed,
    verbosity). Returns the ``Progress`` that knows which T1w failed.
    """
    from .preprocess import init_participant_wf
    from .progress import Progress

    write_dataset_files(output_dir, bids_dir)
    crash_dir = output_dir / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}"
    configure_nipype(crash_dir, opts.verbose)
    print(f"bids_pscore: {len(t1w_inputs)} T1w to process in {bids_dir}; outputs in {output_dir}; work in {work_dir}", flush=True)
    progress = Progress({t.ident: t.label for t in t1w_inputs})
    wf = init_participant_wf(t1w_inputs, output_dir, params, opts.random_seed, opts.omp_nthreads)
    wf.base_dir = str(work_dir)
    try:
        wf.run(plugin=opts.nipype_plugin, plugin_args=plugin_settings(opts.nipype_plugin, opts.nipype_plugin_args, opts.n_cpus, progress))
    except RuntimeError as exc:
        # a failing T1w stops only its own steps; what failed is told in the summary below
        log.debug("workflow finished with errors: %s", exc)
    progress.attach_crash_logs(crash_dir)
    print(progress.summary(), flush=True)
    return progress


def run_participant(opts):
    """Preprocess every selected T1w; return the exit code (0 all done, 1 some failed)."""
    from .preprocess import PreprocParams

    layout = bids.load_layout(opts.bids_dir, validate=not opts.skip_bids_validation)
    t1w_inputs = bids.find_t1w(layout, opts.participant_label, opts.session_label, bids.load_filter_file(opts.bids_filter_file))
    output_dir = check_output_dir(opts.output_dir, opts.bids_dir)
    work_dir = check_work_dir(opts.work_dir, opts.bids_dir)
    progress = preprocess(t1w_inputs, opts.bids_dir, output_dir, work_dir, PreprocParams(), opts)
    return EXIT_SESSION_FAILED if progress.failed else EXIT_OK


def run_group(opts):
    """Group level: for now, check that participant outputs are there and say what exists."""
    output_dir = Path(opts.output_dir)
    found = sorted(output_dir.glob("sub-*/**/anat/*_desc-preproc_T1w.nii.gz"))
    if not (output_dir / "dataset_description.json").is_file() or not found:
        raise NoT1wError(f"{output_dir}: holds no participant-level outputs; run the participant level first")
    print(f"bids_pscore group: {len(found)} preprocessed T1w found in {output_dir}; "
          "cohort tables need P-scores, which the model adds", flush=True)
    return EXIT_OK
