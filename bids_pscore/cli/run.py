"""The BIDS-App command line: bids_pscore bids_dir output_dir {participant,group}."""

import argparse
import os
import shlex
import sys
from pathlib import Path

from .. import __version__, qc
from ..bids import clean_label, load_filter_file
from ..config import AppConfig, GroupOptions, Selection, new_run_id
from ..errors import UnknownLevelError, UsageError
from . import configure_logging, run_command
from .execution import add_execution_options, execution_config

PROG = "bids_pscore"
LEVELS = ("participant", "group")

EXIT_CODES = """\
exit codes:
  0   every selected T1w was processed
  1   some T1w failed, or a report could not be drawn (the others finished; the last lines name each failure and its log)
  2   usage error (bad option or label, bad filter file, output inside the BIDS folder)
  16  bids_dir is not a raw BIDS dataset (none, or a derivative one), or the BIDS validator found errors in it
  17  unknown analysis level
  18  the participant/session labels or filters select nothing
  65  the model bundle (--model) cannot be used, or the group level found outputs of several models
  66  no raw T1w image found (group level: no participant-level outputs)
  73  the output or work folder cannot be written
  130 interrupted (Ctrl-C): run the same command again to go on from the finished steps
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
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
    parser.add_argument("analysis_level", metavar="{participant,group}", help="participant: one result per T1w; group: over all participant outputs")
    parser.add_argument("--version", action="version", version=f"bids_pscore {__version__}")
    add_selection_options(parser)
    add_model_options(parser)
    add_quality_gate_options(parser)
    add_group_options(parser)
    add_execution_options(
        parser,
        "seed of the registration's random sampling: same seed, same result (default: the model's, with which its training images were registered)",
    )
    add_other_options(parser)
    return parser


def add_selection_options(parser):
    """--participant-label, --session-label, --bids-filter-file, --bids-database-dir, --skip-bids-validation."""
    select = parser.add_argument_group("selecting data")
    select.add_argument(
        "--participant-label", "--participant_label", nargs="+", metavar="LABEL", help="subjects to process, with or without 'sub-' (default: all)"
    )
    select.add_argument(
        "--session-label", "--session_label", nargs="+", metavar="LABEL", help="sessions to process, with or without 'ses-' (default: all)"
    )
    select.add_argument("--bids-filter-file", type=Path, metavar="FILE", help='JSON selecting T1w by entity, e.g. {"t1w": {"acquisition": "mprage"}}')
    select.add_argument(
        "--bids-database-dir",
        type=Path,
        metavar="DIR",
        help="keep pybids' index of the dataset here and reuse it: index once, then let one-subject "
        "jobs on a cluster share it (run once on one subject first, so that the jobs do not all build it at once)",
    )
    select.add_argument(
        "--skip-bids-validation",
        "--skip_bids_validation",
        action="store_true",
        help="do not run the BIDS validator (bids-validator-deno, when installed) on the selected "
        "subjects, nor refuse a dataset it finds errors in; pybids still reads every valid name",
    )


def add_model_options(parser):
    """--model."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        type=Path,
        metavar="FOLDER",
        help="a model bundle written by bids_pscore-train (default: the demo model that ships with "
        "bids_pscore, trained on synthetic data and not for research or clinical use)",
    )


def add_quality_gate_options(parser):
    """--qc-thresholds: the quality gate's bounds."""
    gate = parser.add_argument_group("quality gate")
    gate.add_argument(
        "--qc-thresholds",
        metavar="JSON",
        help="loosen or tighten the image quality gate: JSON (inline or a file) of measure -> [low, high], "
        "null for no bound, over the defaults, e.g. '{\"template_correlation\": [0.6, null]}'; 'off' scores "
        "every image. A T1w outside a range is not scored (exit 1); its measures are in sub-*/**/*_qc.json",
    )


def add_group_options(parser):
    """The group level's options: labels, normalisation, flags, and the sets of co-degenerating regions."""
    group = parser.add_argument_group(
        "group level",
        # the formatter keeps descriptions as written: the lines are broken here
        "group/ holds the analysis of every scored T1w in output_dir. --participant-label or --session-label\n"
        "that leave some out analyse a subset, written beside it to group_sub-<labels>[_ses-<labels>]/.",
    )
    group.add_argument(
        "--label-column",
        metavar="COLUMN",
        help="column of participants.tsv (or sessions.tsv) with diagnoses: adds frequencies among "
        "sessions labelled AD and a comparison of the groups (needs --positive and --negative)",
    )
    group.add_argument("--positive", metavar="VALUE", help="value of --label-column meaning AD (e.g. AD)")
    group.add_argument("--negative", metavar="VALUE", help="value of --label-column meaning control (e.g. CN)")
    group.add_argument(
        "--normalisation",
        choices=("reference", "cohort"),
        default="reference",
        help="region scores normalised by the model's reference cohort (default; as at participant "
        "level) or by the minimum and maximum over the analysed sessions",
    )
    group.add_argument(
        "--flags",
        choices=("normative", "patent"),
        default=None,
        help="which regional flags the frequencies, sets, trajectories and onset order count: 'normative', regions "
        "below the model's healthy reference (SPEC 10; the default when every session has them), or 'patent', "
        "normalised P-scores above lambda (SPEC 5)",
    )
    group.add_argument(
        "--min-support",
        type=float,
        default=0.3,
        metavar="FRACTION",
        help="smallest share of sessions predicted AD in which a set of regions must be degenerative together to be listed (default 0.3)",
    )
    group.add_argument("--max-set-size", type=int, default=3, metavar="N", help="largest set of co-degenerating regions to look for (default 3)")


def add_other_options(parser):
    """--reports-only."""
    other = parser.add_argument_group("other")
    other.add_argument(
        "--reports-only",
        action="store_true",
        help="only draw the reports and the methods text again from the outputs already in output_dir "
        "(nothing is preprocessed or scored; the derivatives are not touched)",
    )


def parse_args(argv=None):
    """The checked ``AppConfig`` of a command line (``sys.argv[1:]`` by default)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = build_parser().parse_args(argv)
    if opts.analysis_level not in LEVELS:
        raise UnknownLevelError(f"unknown analysis level {opts.analysis_level!r}; choose one of: {', '.join(LEVELS)}")
    if opts.label_column and not (opts.positive and opts.negative):
        raise UsageError("--label-column needs --positive and --negative (e.g. --positive AD --negative CN)")
    if not 0 < opts.min_support <= 1 or opts.max_set_size < 2:
        raise UsageError("--min-support must be in (0, 1] and --max-set-size at least 2")
    selection = Selection(
        participant_label=tuple(sorted({clean_label(x, "sub") for x in opts.participant_label or ()})),
        session_label=tuple(sorted({clean_label(x, "ses") for x in opts.session_label or ()})),
        bids_filters=load_filter_file(opts.bids_filter_file), bids_database_dir=opts.bids_database_dir,
        skip_bids_validation=opts.skip_bids_validation,
    )  # fmt: skip
    group = GroupOptions(opts.label_column, opts.positive, opts.negative, opts.normalisation, opts.min_support, opts.max_set_size,
                         opts.flags)  # fmt: skip
    return AppConfig(
        bids_dir=opts.bids_dir, output_dir=opts.output_dir, analysis_level=opts.analysis_level, selection=selection,
        model=opts.model, qc_thresholds=qc.parse_bounds(opts.qc_thresholds), group=group,
        reports_only=opts.reports_only, execution=execution_config(opts),
        # shown in the reports, so that a reader knows how the outputs were made
        command_line=shlex.join([PROG, *map(str, argv)]), run_id=new_run_id(),
    )  # fmt: skip


def let_waiting_threads_sleep(environ):
    """OpenMP threads (torch's, here and in the preprocessing workers) spin while they wait for each other by
    default: on busy cores each of a session's hundreds of small convolutions waited for a thread the system
    had not scheduled (a session's scores 4.2 s, 0.9 s with waiting threads asleep; same threads, same bytes).
    OpenMP reads this once, when torch loads: call it before. A user's own setting stands."""
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run(config):
    configure_logging(PROG, config.execution.verbosity)
    if config.analysis_level == "participant":
        let_waiting_threads_sleep(os.environ)
        from ..participant import run_participant

        return run_participant(config)
    from ..group import run_group

    return run_group(config)


def main(argv=None):
    return run_command(PROG, lambda: run(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
