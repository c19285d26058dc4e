"""Options of how the preprocessing runs, shared by bids_pscore and bids_pscore-train."""

import argparse
import json
import os
from pathlib import Path

from ..config import MAX_DEFAULT_THREADS, SKULL_STRIP_MODES, Execution
from ..errors import UsageError

# nipype's Graph plugins (SLURMGraph, SGEGraph, PBSGraph) are not offered: they submit the jobs and
# return at once, so the run would end before any T1w was preprocessed and nothing could be scored
PLUGINS = ("Linear", "MultiProc", "SLURM", "SGE", "PBS", "LSF", "Condor", "OAR", "IPython")


def available_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def json_object(text):
    """A JSON object, given inline or as a path to a .json file."""
    source = Path(text).read_text() if Path(text).is_file() else text
    try:
        value = json.loads(source)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a JSON object nor a JSON file") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'{text!r} must be a JSON object, e.g. \'{{"sbatch_args": "-p short"}}\'')
    return value


def add_execution_options(parser, seed_help):
    """The performance and execution options; ``seed_help`` says what --random-seed defaults to."""
    perf = parser.add_argument_group("performance and execution")
    perf.add_argument(
        "--n-cpus", "--nprocs", type=int, default=available_cpus(), metavar="N", help="CPUs the MultiProc plugin may use (default: all available)"
    )
    perf.add_argument(
        "--omp-nthreads",
        type=int,
        default=None,
        metavar="N",
        help=f"threads per step for deepbet's network (default: the CPUs each T1w has when MultiProc runs them side by side, "
        f"all n-cpus otherwise, at most {MAX_DEFAULT_THREADS}); ANTs runs single-threaded so that a seed gives identical results",
    )
    perf.add_argument(
        "--mem",
        "--mem-gb",
        type=float,
        default=None,
        metavar="GB",
        dest="mem_gb",
        help="memory the MultiProc plugin may use at once (default: 90%% of the machine's); each step "
        "asks for what it was measured to need, so steps run side by side only when they fit",
    )
    perf.add_argument(
        "-w",
        "--work-dir",
        type=Path,
        default=Path("work"),
        help="nipype's cache; a rerun with the same folder reuses finished steps, in a folder named by "
        "the version and a fingerprint of the preprocessing code, so new code never reuses old results (default: ./work)",
    )
    perf.add_argument(
        "--clean-workdir",
        action="store_true",
        help="first remove what earlier runs of any version cached in the work folder (not while other jobs share it)",
    )
    perf.add_argument(
        "--nipype-plugin",
        default="MultiProc",
        choices=PLUGINS,
        help="how nipype runs the steps: Linear, MultiProc (default), or one job per step on a cluster "
        "(SLURM, SGE, ...; under SLURM each job asks for the CPUs and memory its step needs)",
    )
    perf.add_argument(
        "--nipype-plugin-args",
        type=json_object,
        metavar="JSON",
        help='plugin arguments as JSON or a JSON file, e.g. \'{"sbatch_args": "-p short -t 1:00:00"}\'',
    )
    perf.add_argument(
        "--stop-on-first-crash", action="store_true", help="stop the whole run at the first step that fails (default: the other T1w go on)"
    )
    perf.add_argument("--random-seed", type=int, metavar="N", help=seed_help)
    perf.add_argument(
        "--skull-strip-t1w",
        choices=SKULL_STRIP_MODES,
        default=SKULL_STRIP_MODES[0],
        help="force (default, as fMRIPrep's): deepbet on every input, also one already skull-stripped (another tool's brain mask "
        "moves the score: measured in docs/validation.md); auto: an input whose non-zero region is brain-sized (under 2.5 l) is "
        "taken as already skull-stripped and keeps its own brain, others are skull-stripped with deepbet; skip: every input is "
        "already a brain, its non-zero region is the mask",
    )
    messages = parser.add_mutually_exclusive_group()
    messages.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more messages: each step's folder, the workflow's settings, scoring details (-vv: nipype's too)",
    )
    messages.add_argument("-q", "--quiet", action="store_true", help="only warnings, errors, the summary table and the results (scores, reports)")
    return perf


def execution_config(opts):
    """The checked ``Execution`` of parsed options."""
    if opts.n_cpus < 1:
        raise UsageError(f"--n-cpus must be at least 1, got {opts.n_cpus}")
    if opts.mem_gb is not None and opts.mem_gb <= 0:
        raise UsageError(f"--mem must be a positive number of GB, got {opts.mem_gb}")
    if opts.random_seed is not None and opts.random_seed < 1:
        raise UsageError(f"--random-seed must be at least 1, got {opts.random_seed}: ANTs takes 0 for a seed from the clock")
    if opts.omp_nthreads is not None and opts.omp_nthreads < 1:
        raise UsageError(f"--omp-nthreads must be at least 1, got {opts.omp_nthreads}")
    return Execution(
        work_dir=opts.work_dir, n_cpus=opts.n_cpus, omp_nthreads=opts.omp_nthreads, mem_gb=opts.mem_gb,
        plugin=opts.nipype_plugin, plugin_args=opts.nipype_plugin_args, stop_on_first_crash=opts.stop_on_first_crash,
        clean_workdir=opts.clean_workdir, verbosity=-1 if opts.quiet else opts.verbose, random_seed=opts.random_seed,
        skull_strip_t1w=opts.skull_strip_t1w,
    )  # fmt: skip
