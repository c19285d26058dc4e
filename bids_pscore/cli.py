"""The BIDS-App command line: bids_pscore bids_dir output_dir {participant,group}."""

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from . import __version__, qc
from .bids import clean_label
from .errors import EXIT_INTERRUPTED, PscoreError, UnknownLevelError, UsageError

LEVELS = ("participant", "group")
# nipype's Graph plugins (SLURMGraph, SGEGraph, PBSGraph) are not offered: they submit the jobs and
# return at once, so the run would end before any T1w was preprocessed and nothing could be scored
PLUGINS = ("Linear", "MultiProc", "SLURM", "SGE", "PBS", "LSF", "Condor", "OAR", "IPython")

EXIT_CODES = """\
exit codes:
  0   every selected T1w was processed
  1   some T1w failed (the others finished; the summary names each failure and its log)
  2   usage error (bad option or label, bad filter file, output inside the BIDS folder)
  16  bids_dir is not a BIDS dataset, or the BIDS validator found errors in it
  17  unknown analysis level
  18  the participant/session labels or filters select nothing
  65  the model bundle (--model) cannot be used, or the group level found outputs of several models
  66  no T1w image found (group level: no participant-level outputs)
  73  the output or work folder cannot be written
  130 interrupted (Ctrl-C): run the same command again to go on from the finished steps
"""


def _cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _plugin_args(text):
    """A JSON object, given inline or as a path to a .json file."""
    source = Path(text).read_text() if Path(text).is_file() else text
    try:
        value = json.loads(source)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a JSON object nor a JSON file") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} must be a JSON object, e.g. '{{\"sbatch_args\": \"-p short\"}}'")
    return value


def add_execution_options(parser):
    """Options of how the preprocessing runs, shared by bids_pscore and bids_pscore-train."""
    perf = parser.add_argument_group("performance and execution")
    perf.add_argument("--n-cpus", "--nprocs", type=int, default=_cpus(), metavar="N",
                      help="CPUs the MultiProc plugin may use (default: all available)")
    perf.add_argument("--omp-nthreads", type=int, default=None, metavar="N",
                      help="threads per step for deepbet's network (default: min(n-cpus, 8)); ANTs runs "
                      "single-threaded so that a seed gives identical results")
    perf.add_argument("--mem", "--mem-gb", type=float, default=None, metavar="GB", dest="mem_gb",
                      help="memory the MultiProc plugin may use at once (default: 90%% of the machine's); each step "
                      "asks for what it was measured to need, so steps run side by side only when they fit")
    perf.add_argument("-w", "--work-dir", type=Path, default=Path("work"),
                      help="nipype's cache; a rerun with the same folder reuses finished steps, in a folder named by "
                      "the version and a fingerprint of the preprocessing code, so new code never reuses old results (default: ./work)")
    perf.add_argument("--clean-workdir", action="store_true",
                      help="first remove what earlier runs of any version cached in the work folder (not while other "
                      "jobs share it)")
    perf.add_argument("--nipype-plugin", default="MultiProc", choices=PLUGINS,
                      help="how nipype runs the steps: Linear, MultiProc (default), or one job per step on a cluster "
                      "(SLURM, SGE, ...; under SLURM each job asks for the CPUs and memory its step needs)")
    perf.add_argument("--nipype-plugin-args", type=_plugin_args, metavar="JSON",
                      help='plugin arguments as JSON or a JSON file, e.g. \'{"sbatch_args": "-p short -t 1:00:00"}\'')
    perf.add_argument("--stop-on-first-crash", action="store_true",
                      help="stop the whole run at the first step that fails (default: the other T1w go on)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more messages (-vv: nipype's too)")
    return perf


def check_execution_options(opts):
    """Validate the CPU options and fill in the default thread count."""
    if opts.n_cpus < 1:
        raise UsageError(f"--n-cpus must be at least 1, got {opts.n_cpus}")
    if opts.mem_gb is not None and opts.mem_gb <= 0:
        raise UsageError(f"--mem must be a positive number of GB, got {opts.mem_gb}")
    if opts.omp_nthreads is None:
        opts.omp_nthreads = min(opts.n_cpus, 8)
    if opts.omp_nthreads < 1:
        raise UsageError(f"--omp-nthreads must be at least 1, got {opts.omp_nthreads}")
    return opts


def build_parser():
    parser = argparse.ArgumentParser(
        prog="bids_pscore",
        description="P-score neurodegeneration biomarker from T1w MRI, as a BIDS-App. "
        "The participant level preprocesses each T1w (N4, skull stripping, registration to MNI, "
        "smoothing) onto the SPM12/CAT12 1.5 mm grid, runs the ensemble 3DCNN model, writes the "
        "P-scores at cube, voxel, region and whole-brain level as BIDS derivatives and an HTML report "
        "per subject. The group level pools them: cohort tables, how often each region degenerates "
        "and with which others, trajectories over time and the order in which regions become involved.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("bids_dir", type=Path, help="root of the BIDS dataset (read only; never written to)")
    parser.add_argument("output_dir", type=Path, help="output folder (e.g. bids_dir/derivatives/bids_pscore)")
    # not argparse choices: an unknown level has its own exit code (17); the usage still shows them
    parser.add_argument("analysis_level", metavar="{participant,group}",
                        help="participant: one result per T1w; group: over all participant outputs")
    parser.add_argument("--version", action="version", version=f"bids_pscore {__version__}")

    select = parser.add_argument_group("selecting data")
    select.add_argument("--participant-label", "--participant_label", nargs="+", metavar="LABEL",
                        help="subjects to process, with or without 'sub-' (default: all)")
    select.add_argument("--session-label", "--session_label", nargs="+", metavar="LABEL",
                        help="sessions to process, with or without 'ses-' (default: all)")
    select.add_argument("--bids-filter-file", type=Path, metavar="FILE",
                        help='JSON selecting T1w by entity, e.g. {"t1w": {"acquisition": "mprage"}}')
    select.add_argument("--bids-database-dir", type=Path, metavar="DIR",
                        help="keep pybids' index of the dataset here and reuse it: index once, then let one-subject "
                        "jobs on a cluster share it (run once on one subject first, so that the jobs do not all build it at once)")
    select.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true",
                        help="do not run the BIDS validator (bids-validator-deno, when installed) on the selected "
                        "subjects, nor refuse a dataset it finds errors in; pybids still reads every valid name")

    model = parser.add_argument_group("model")
    model.add_argument("--model", type=Path, metavar="FOLDER",
                       help="a model bundle written by bids_pscore-train (default: the demo model that ships with "
                       "bids_pscore, trained on synthetic data and not for research or clinical use)")

    gate = parser.add_argument_group("quality gate")
    gate.add_argument("--qc-thresholds", metavar="JSON",
                      help="loosen or tighten the image quality gate: JSON (inline or a file) of measure -> [low, high], "
                      "null for no bound, over the defaults, e.g. '{\"template_correlation\": [0.6, null]}'; 'off' scores "
                      "every image. A T1w outside a range is not scored (exit 1); its measures are in sub-*/**/*_qc.json")

    group = parser.add_argument_group("group level")
    group.add_argument("--label-column", metavar="COLUMN",
                       help="column of participants.tsv (or sessions.tsv) with diagnoses: adds frequencies among "
                       "sessions labelled AD and a comparison of the groups (needs --positive and --negative)")
    group.add_argument("--positive", metavar="VALUE", help="value of --label-column meaning AD (e.g. AD)")
    group.add_argument("--negative", metavar="VALUE", help="value of --label-column meaning control (e.g. CN)")
    group.add_argument("--normalisation", choices=("reference", "cohort"), default="reference",
                       help="region scores normalised by the model's reference cohort (default; as at participant "
                       "level) or by the minimum and maximum over the analysed sessions")
    group.add_argument("--min-support", type=float, default=0.3, metavar="FRACTION",
                       help="smallest share of sessions predicted AD in which a set of regions must be degenerative "
                       "together to be listed (default 0.3)")
    group.add_argument("--max-set-size", type=int, default=3, metavar="N",
                       help="largest set of co-degenerating regions to look for (default 3)")

    perf = add_execution_options(parser)
    perf.add_argument("--random-seed", type=int, metavar="N",
                      help="seed of the registration's random sampling: same seed, same result (default: the model's, "
                      "with which its training images were registered)")

    other = parser.add_argument_group("other")
    other.add_argument("--reports-only", action="store_true",
                       help="only draw the reports and the methods text again from the outputs already in output_dir "
                       "(nothing is preprocessed or scored; the derivatives are not touched)")
    return parser


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = build_parser().parse_args(argv)
    # shown in the reports, so that a reader knows how the outputs were made
    opts.command_line = shlex.join(["bids_pscore", *map(str, argv)])
    if opts.analysis_level not in LEVELS:
        raise UnknownLevelError(f"unknown analysis level {opts.analysis_level!r}; choose one of: {', '.join(LEVELS)}")
    if opts.participant_label:
        opts.participant_label = sorted({clean_label(x, "sub") for x in opts.participant_label})
    if opts.session_label:
        opts.session_label = sorted({clean_label(x, "ses") for x in opts.session_label})
    if opts.label_column and not (opts.positive and opts.negative):
        raise UsageError("--label-column needs --positive and --negative (e.g. --positive AD --negative CN)")
    if not 0 < opts.min_support <= 1 or opts.max_set_size < 2:
        raise UsageError("--min-support must be in (0, 1] and --max-set-size at least 2")
    opts.qc_thresholds = qc.parse_thresholds(opts.qc_thresholds)
    return check_execution_options(opts)


def main(argv=None):
    try:
        opts = parse_args(argv)
        from . import app

        run = app.run_participant if opts.analysis_level == "participant" else app.run_group
        return run(opts)
    except PscoreError as exc:
        print(f"bids_pscore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bids_pscore: interrupted (Ctrl-C); finished steps are kept in the work folder: run the same command "
              "again to go on from them", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
