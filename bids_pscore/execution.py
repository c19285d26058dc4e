"""Running the preprocessing workflow: the run's folders, nipype's settings and plugins, cluster
jobs' resources, and Ctrl-C. Shared by the participant level and bids_pscore-train."""

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
from pathlib import Path

from . import bids
from .config import threads_per_step
from .errors import OutputNotWritableError, UsageError

log = logging.getLogger(__name__)


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


def configure_nipype(crash_dir, verbosity, stop_on_first_crash=False):
    from nipype import config
    from nipype import logging as nipype_logging

    from .preprocess import nipype_log_level

    level = nipype_log_level(verbosity)
    config.update_config({
        "execution": {
            "crashdump_dir": str(crash_dir),
            "crashfile_format": "txt",
            "stop_on_first_crash": str(bool(stop_on_first_crash)).lower(),
            "remove_unnecessary_outputs": "false",
            "check_version": "false",
            # by content, not by modification time: a dataset copied to a cluster's scratch, or restored, keeps the
            # cached steps of its unchanged T1w (by time, every step ran again: 125 heads, 20 minutes)
            "hash_method": "content",
            # nipype's default of 2 s between polls adds seconds to every step of a short job; and each level of
            # a cached workflow waits one poll (a fully cached demo rerun: 23 polls, 3.8 s of sleep at 0.2 s)
            "poll_sleep_duration": "0.05",
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
        log.info("--clean-workdir: removing %s", entry)
        shutil.rmtree(entry)


# what MultiProc's workers import for their steps: the forkserver imports them once and each worker
# it forks starts with them, rather than each worker importing nipype, ANTs and torch at its first
# steps, on a session's critical path
WORKER_MODULES = ("bids_pscore.preprocess.interfaces", "bids_pscore.workflows.scoring", "ants", "deepbet")


def start_worker_server():
    """Start the forkserver that MultiProc's workers come from (once per process), which imports
    WORKER_MODULES on another CPU while this process builds the workflow.

    Started while Ctrl-C is ignored: the workers keep the handling that the forkserver started with,
    and so leave Ctrl-C to this process instead of each printing a traceback of its own."""
    multiprocessing.set_forkserver_preload(list(WORKER_MODULES))
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def stopped_by_ctrl_c(progress):
    """Ctrl-C stops the whole run. nipype takes a KeyboardInterrupt raised inside a step for that
    step's failure and goes on with the rest, so the interrupt is also remembered and raised again
    at the next step's start or end (``Progress``); MultiProc's workers are stopped, not waited for
    (a registration would finish first). Their unfinished steps rerun on the next call."""

    def on_interrupt(signum, frame):
        progress.interrupted = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
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


def preprocess(t1w_inputs, bids_dir, output_dir, work_dir, params, execution, log_dir, extend=None):
    """Run the preprocessing workflow over ``t1w_inputs`` into the derivatives folder ``output_dir``.

    ``execution`` is the run's ``config.Execution``; the registration seed is one of ``params``;
    crash files go to ``log_dir``; ``extend`` adds the nodes that follow each T1w's sink
    (``init_participant_wf``: the participant level's scoring). Returns the ``Progress`` that knows
    which T1w failed, and at which step.
    """
    from .derivatives.dataset_files import write_dataset_files
    from .preprocess import init_participant_wf
    from .preprocess.steps import write_template_files
    from .preprocess.workflow import workflow_name
    from .progress import Progress

    write_dataset_files(output_dir, bids_dir)
    configure_nipype(log_dir, execution.verbosity, execution.stop_on_first_crash)
    if execution.plugin == "MultiProc":
        start_worker_server()
    log.info("%d T1w to process in %s; outputs in %s; work in %s", len(t1w_inputs), bids_dir, output_dir, work_dir)
    progress = Progress({t.ident: t.label for t in t1w_inputs}, quiet=execution.verbosity < 0)
    readable = []
    for t1w in t1w_inputs:
        reason = bids.unreadable_reason(t1w)
        if reason:  # only this T1w fails; nipype would reject the whole graph
            progress.refuse(t1w.ident, "load", reason)
        else:
            readable.append(t1w)
    if readable and not (execution.stop_on_first_crash and len(readable) < len(t1w_inputs)):
        name = workflow_name(work_dir)
        if execution.clean_workdir:
            clean_work_dir(work_dir)
        same_code = sorted(p.name for p in Path(work_dir).glob(name.rsplit("_", 2)[0] + "_*_wf") if p.name != name)
        if same_code:
            log.info("note: %s holds this version's cache made while the work folder was reached by another path (moved, or mounted "
                     "elsewhere): %s; nipype's cached results name their files by that path, so the steps run again in %s "
                     "(--clean-workdir removes the old cache)", work_dir, ", ".join(same_code), name)  # fmt: skip
        template_files = write_template_files(work_dir / name / "templates", params.template, params.registration_mm)
        omp_nthreads = threads_per_step(execution, len(readable))
        log.debug("deepbet on %d thread(s) per T1w", omp_nthreads)
        wf = init_participant_wf(readable, output_dir, params, template_files, name, omp_nthreads, execution.skull_strip_t1w, extend)
        wf.base_dir = str(work_dir)
        batch_environment(os.environ)
        job_resources(wf, execution.plugin, execution.plugin_args)
        settings = plugin_settings(execution.plugin, execution.plugin_args, execution.n_cpus, progress, execution.mem_gb)
        log.debug("workflow %s: %d steps in %s, plugin %s with %s", name, len(wf.list_node_names()), work_dir / name,
                  execution.plugin, {k: v for k, v in settings.items() if k != "status_callback"})  # fmt: skip
        # nipype's MultiProc calls gc.collect() at every scheduling step; with torch loaded each call
        # scanned every object of the process (1.2 s a run): freeze what exists now so it skips them
        gc.freeze()
        try:
            with stopped_by_ctrl_c(progress):
                wf.run(plugin=execution.plugin, plugin_args=settings)
        except RuntimeError as exc:
            # a failing T1w stops only its own steps; what failed is told in the summary below
            log.debug("workflow finished with errors: %s", exc)
        finally:
            gc.unfreeze()
    progress.attach_crash_logs(log_dir)
    print(progress.summary(), flush=True)
    return progress


def run_after_sinks(t1w_inputs, work_dir, log_dir, extend, progress, plugin="Linear", plugin_args=None):
    """The nodes that ``extend`` adds after each T1w's sink (``preprocess``'s), for T1w whose preprocessed
    images are in the output folder already, in a workflow of their own: where the preprocessing is
    stood in for (the tests). The workflow has the participant workflow's name, so the nodes' cache
    is the one a whole run finds; crash files go to ``log_dir``, and ``progress`` gets them."""
    from nipype.pipeline import engine as pe

    from .preprocess.workflow import workflow_name

    configure_nipype(log_dir, 0)
    wf = pe.Workflow(name=workflow_name(work_dir), base_dir=str(work_dir))
    for t1w in t1w_inputs:
        extend(wf, t1w)
    try:
        wf.run(plugin=plugin, plugin_args={**(plugin_args or {}), "status_callback": progress})
    except RuntimeError as exc:  # a failing T1w stops only its own steps, as in ``preprocess``
        log.debug("workflow finished with errors: %s", exc)
    progress.attach_crash_logs(log_dir)
    return wf
