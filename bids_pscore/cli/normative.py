"""bids_pscore-normative: add a normative reference of healthy images to a trained model bundle."""

import argparse
import shlex
import sys
from pathlib import Path

from .. import __version__, qc
from ..config import NormativeRunConfig, new_run_id
from . import configure_logging, run_command
from .execution import add_execution_options, execution_config

PROG = "bids_pscore-normative"
EPILOG = """\
exit codes: 0 done; 2 usage (e.g. a non-empty output folder, too few healthy subjects); 16 not BIDS;
65 the model cannot be used; 66 no T1w; 73 a folder cannot be written; 130 interrupted (Ctrl-C).
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Write a copy of a trained model bundle with a normative reference (SPEC 10) built from healthy T1w "
        "preprocessed like the model's inputs: per voxel and region, the grey level's (and the region P-score's) "
        "expected value for age and sex and its spread, and the flag threshold calibrated on the healthy images held out. "
        "The weights are not changed; the new bundle's model.json gets a new checksum and says what was added.",
        epilog=EPILOG,
    )
    parser.add_argument("model_dir", type=Path, help="the trained model bundle (not changed)")
    parser.add_argument("healthy_dir", type=Path, help="healthy T1w: a BIDS dataset, or a bids_pscore output folder preprocessed with this model")
    parser.add_argument("out_dir", type=Path, help="where the new bundle is written (a new folder)")
    parser.add_argument("--participant-label", nargs="+", metavar="LABEL", help="only these healthy subjects")
    parser.add_argument("--calibrate-class", action="store_true",
                        help="also move the AD/control decision to the 0.97 quantile of these healthy heads' logits (for another "
                             "scanner, where the model may call every head AD: held out, 95%% of a site's controls were then called control; "
                             "docs/normative.md); needs controls the model was not fitted on. These heads then become the class "
                             "domain, against which each scan's class is marked reliable or not (without the option, a model's first "
                             "reference becomes it and a later one keeps it)")  # fmt: skip
    parser.add_argument("--class-domain", action="store_true",
                        help="these healthy heads are of the scanner the model's class was set on (e.g. real heads of its training "
                             "scanner): make them its class domain, the class itself unchanged (the demo model's recipe does this: "
                             "the domain training writes, of its training images' controls, marked a third of the atrophied heads "
                             "of its own scanner)")  # fmt: skip
    parser.add_argument("--qc-thresholds", metavar="JSON",
                        help="the image quality gate's bounds, as for bids_pscore participant: JSON (inline or a file) of measure -> "
                             "[low, high] over the defaults, or 'off'. A healthy T1w outside a range is left out of the reference, "
                             "with a line saying why")  # fmt: skip
    parser.add_argument("--skip-bids-validation", action="store_true")
    add_execution_options(parser, "seed of the registration (default: the model's)")
    parser.add_argument("--version", action="version", version=f"bids_pscore {__version__}")
    return parser


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    opts = build_parser().parse_args(argv)
    return NormativeRunConfig(
        model_dir=opts.model_dir, healthy_dir=opts.healthy_dir, out_dir=opts.out_dir,
        participant_label=tuple(opts.participant_label or ()), qc_thresholds=qc.parse_bounds(opts.qc_thresholds),
        skip_bids_validation=opts.skip_bids_validation,
        calibrate_class=opts.calibrate_class, class_domain=opts.class_domain,
        execution=execution_config(opts), command_line=shlex.join([PROG, *map(str, argv)]), run_id=new_run_id(),
    )  # fmt: skip


def run(config):
    from ..reference import add_to_bundle

    configure_logging(PROG, config.execution.verbosity)
    return add_to_bundle(config)


def main(argv=None):
    return run_command(PROG, lambda: run(parse_args(argv)), interrupted="finished preprocessing steps are kept in the work folder")


if __name__ == "__main__":
    sys.exit(main())
