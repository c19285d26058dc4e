"""bids_pscore-synth: a BIDS dataset of T1w heads with simulated atrophy and its ground truth."""

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from ..errors import UsageError
from ..synth import DATASET_NAME, GROUNDTRUTH
from ..synth.demo import DEMO_SESSIONS, write_demo
from ..synth.templateheads import write_dataset
from . import configure_logging, run_command

PROG = "bids_pscore-synth"
# named, not __name__: run as `python -m bids_pscore.cli.synth` it is __main__, outside the package's configured logger
log = logging.getLogger("bids_pscore.cli.synth")


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a BIDS dataset of T1w heads, AD subjects with regional atrophy that grows over sessions, "
        "and its ground truth under derivatives/groundtruth. Three kinds: with no option, the quick start's demo: two real "
        "IXI heads that ship with the package (CC BY-SA 3.0), sub-01 with simulated AD (typical subtype, stage 3 at the "
        "first session), sub-02 healthy, two sessions each; with --n-subjects, heads made from the MNI152 template (for "
        "tests); with --base, the real healthy heads of another BIDS dataset with simulated atrophy and ageing. A session on a "
        "real head is its base scan, with its grid and voxels, changed only where tissue moved (--simulate-scanner scans it anew).",
        epilog="examples: %(prog)s demo/bids (the demo); %(prog)s out --n-subjects 4 --n-sessions 2 (template heads); "
        "%(prog)s out --base ixi_bids -w cache --n-procs 2 (a cohort on real heads)",
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument(
        "--base",
        type=Path,
        metavar="BIDS_DIR",
        help="a BIDS dataset of healthy T1w heads with age (and sex) in participants.tsv: each of its "
        "subjects becomes a cohort subject with its own anatomy, age and sex (see docs/disease_model.md)",
    )
    parser.add_argument("--participant-label", nargs="+", metavar="LABEL", help="with --base: only these base subjects")
    parser.add_argument("--n-subjects", type=int, help="heads made from the MNI152 template, this many (not with --base)")
    parser.add_argument("--n-sessions", type=int, help="sessions per subject (default: 2 for the demo, else 1)")
    parser.add_argument("--seed", type=int, default=0, help="anatomy, groups and disease course (the demo: region jitter and visit dates)")
    parser.add_argument(
        "--acquisition-seed",
        type=int,
        help="with --n-subjects or --simulate-scanner: pose, voxel grid, bias field and noise (default: --seed); "
        "another value re-scans the same brains",
    )
    parser.add_argument(
        "--simulate-scanner",
        action="store_true",
        help="with --base: scan each session anew through the generator's scanner "
        "model (pose, voxel grid, bias field, noise), e.g. to augment training, rather than keep the base scan's grid and voxels",
    )
    parser.add_argument("--ad-fraction", type=float, help="with --n-subjects or --base: share of AD subjects (default 0.5)")
    parser.add_argument(
        "-w",
        "--work-dir",
        type=Path,
        help="with --base: keeps each base head's registration and atlas, so that a re-scan or a second cohort reuses them",
    )
    parser.add_argument("--n-procs", type=int, default=1, help="with --base: subjects made side by side (default 1)")
    return parser


def run(argv=None):
    parser = build_parser()
    opts = parser.parse_args(argv)
    demo = opts.base is None and opts.n_subjects is None
    if opts.base is not None and opts.n_subjects is not None:
        parser.error("--n-subjects makes template heads and --base takes real ones: give one of them")
    if demo and (opts.ad_fraction is not None or opts.participant_label or opts.work_dir or opts.n_procs != 1):
        parser.error("the demo's subjects are fixed: --ad-fraction, --participant-label, -w and --n-procs need --n-subjects or --base")
    if opts.base is None and (opts.participant_label or opts.work_dir or opts.n_procs != 1 or opts.simulate_scanner):
        parser.error("--participant-label, -w, --n-procs and --simulate-scanner need --base")
    if opts.acquisition_seed is not None and opts.n_subjects is None and not opts.simulate_scanner:
        parser.error("--acquisition-seed needs --n-subjects or --simulate-scanner: a session on a real head keeps its base scan")
    opts.n_sessions = opts.n_sessions or (DEMO_SESSIONS if demo else 1)
    opts.ad_fraction = 0.5 if opts.ad_fraction is None else opts.ad_fraction
    if (opts.n_subjects or 1) < 1 or opts.n_sessions < 1 or opts.n_procs < 1 or not 0 <= opts.ad_fraction <= 1:
        parser.error("--n-subjects, --n-sessions and --n-procs must be at least 1 and --ad-fraction between 0 and 1")
    description = opts.out_dir / "dataset_description.json"
    ours = description.is_file() and json.loads(description.read_text()).get("Name", "").startswith(DATASET_NAME)
    if opts.out_dir.exists() and any(opts.out_dir.iterdir()) and not ours:
        raise UsageError(f"{opts.out_dir} holds other files; give a new or empty folder")
    configure_logging(PROG, 0)
    if demo:
        write_demo(opts.out_dir, opts.n_sessions, opts.seed)
        n_subjects = len(pd.read_csv(opts.out_dir / "participants.tsv", sep="\t"))
    elif opts.base is None:
        write_dataset(opts.out_dir, opts.n_subjects, opts.n_sessions, opts.seed, opts.acquisition_seed, opts.ad_fraction)
        n_subjects = opts.n_subjects
    else:
        from ..synth.realheads import write_cohort

        labels = [label.removeprefix("sub-") for label in opts.participant_label or []] or None
        write_cohort(opts.out_dir, opts.base, opts.n_sessions, opts.seed, opts.acquisition_seed, opts.ad_fraction,
                     labels, opts.work_dir, opts.n_procs, opts.simulate_scanner)  # fmt: skip
        n_subjects = len(pd.read_csv(opts.out_dir / "participants.tsv", sep="\t"))
    log.info("wrote %d subject(s) x %d session(s) to %s (truth in %s)", n_subjects, opts.n_sessions, opts.out_dir, opts.out_dir / GROUNDTRUTH)
    return 0


def main(argv=None):
    return run_command(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
