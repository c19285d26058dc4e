"""bids_pscore-train: train the ensemble on a labelled BIDS dataset and write a model bundle."""

import argparse
import shlex
import sys
from pathlib import Path

from .. import __version__, qc
from ..config import TrainRunConfig, new_run_id
from ..errors import UsageError
from . import configure_logging, run_command
from .execution import add_execution_options, execution_config

PROG = "bids_pscore-train"
EPILOG = """\
exit codes: 0 done; 1 training gave no usable model; 2 usage or labels that cannot be split;
16 not BIDS; 18 nothing selected; 66 no T1w; 73 a folder cannot be written; 130 interrupted (Ctrl-C).
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Train the P-score ensemble (150 cube classifiers and a meta-classifier) on a labelled BIDS dataset.",
        epilog=EPILOG,
    )
    parser.add_argument("bids_dir", type=Path)
    parser.add_argument("model_dir", type=Path, help="where the model bundle is written (a new folder)")
    parser.add_argument("--label-column", required=True, help="column of participants.tsv with the labels")
    parser.add_argument("--positive", required=True, help="value meaning AD (e.g. AD)")
    parser.add_argument("--negative", required=True, help="value meaning control (e.g. CN)")
    parser.add_argument("--sessions", choices=("all", "first"), default="all", help="every session of a subject, or its first")
    parser.add_argument("--participant-label", nargs="+", metavar="LABEL", help="restrict to these subjects")
    parser.add_argument("--n-selected", type=int, default=35, help="cubes the meta-classifier uses (default 35)")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patience", type=int, default=5, help="epochs without a better validation loss before a cube stops")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-shift", type=int, default=2, help="augmentation: move each training image by up to this many voxels (0: off)")
    parser.add_argument("--no-flip", dest="flip", action="store_false", help="do not mirror training images left-right at random")
    parser.add_argument(
        "--no-scanner-augmentation",
        dest="scanner_augmentation",
        action="store_false",
        help="do not randomise each training image's contrast (a monotone intensity curve and a gamma) and bias field, "
        "as other scanners would give it",
    )
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay of the base classifiers")
    parser.add_argument(
        "--meta-weight-prior",
        type=float,
        default=100.0,
        help="L2 pull of each cube weight w_c towards 1/N (0: free weights, which can turn negative)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the split and of the networks' initialisation (the registration's is the preprocessing's)"
    )
    parser.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ...")
    parser.add_argument("--name", help="model name (default: the model folder's name)")
    parser.add_argument("--description", help="one line on what the model is, stored in its card")
    parser.add_argument(
        "--warning", help="shown on the command line and in every report of every run with this model (e.g. that it was trained on synthetic data)"
    )
    parser.add_argument(
        "--preprocessed", type=Path, help="reuse grid images from this folder: bids_pscore participant outputs, or CAT12's with --cat12-prefix"
    )
    parser.add_argument(
        "--cat12-prefix",
        metavar="PREFIX",
        help="CAT12 output prefix to read under --preprocessed (e.g. smwp1 or wm): <PREFIX><T1w name>.nii; "
        "CAT12 must have written it on the 1.5 mm grid (vox=1.5, bb=16)",
    )
    parser.add_argument(
        "--normative",
        type=Path,
        metavar="BIDS_OR_OUTPUT_DIR",
        help="healthy T1w for the model's normative reference (SPEC 10): a BIDS dataset, or a bids_pscore output folder "
        "preprocessed with the same parameters (default: the controls of the training and validation splits)",
    )
    parser.add_argument(
        "--qc-thresholds",
        metavar="JSON",
        help="the image quality gate's bounds, as for bids_pscore participant: JSON (inline or a file) of measure -> [low, high] "
        "over the defaults, or 'off'. A T1w outside a range is left out of training and of the references, with a line saying why",
    )
    parser.add_argument("--skip-bids-validation", action="store_true")
    add_execution_options(
        parser,
        "seed of the registration's random sampling, stored in the bundle so that inference registers "
        "alike (default: the preprocessing's standard seed)",
    )
    parser.add_argument("--version", action="version", version=f"bids_pscore {__version__}")
    return parser


def parse_args(argv=None):
    """The checked ``TrainRunConfig`` of a command line."""
    from ..model.training import TrainConfig

    argv = sys.argv[1:] if argv is None else list(argv)
    opts = build_parser().parse_args(argv)
    if opts.cat12_prefix and not opts.preprocessed:
        raise UsageError("--cat12-prefix needs --preprocessed, the folder of CAT12's outputs")
    if opts.preprocessed is not None and opts.random_seed is not None:
        raise UsageError("--random-seed: the images under --preprocessed are registered already; their seed is read from their sidecars")
    training = TrainConfig(opts.epochs, opts.batch_size, opts.patience, opts.learning_rate, opts.n_selected, opts.seed, opts.device,
                           opts.max_shift, opts.flip, opts.weight_decay, opts.meta_weight_prior, opts.scanner_augmentation)  # fmt: skip
    return TrainRunConfig(
        bids_dir=opts.bids_dir, model_dir=opts.model_dir, label_column=opts.label_column, positive=opts.positive,
        negative=opts.negative, sessions=opts.sessions, participant_label=tuple(opts.participant_label or ()),
        val_fraction=opts.val_fraction, test_fraction=opts.test_fraction, training=training, name=opts.name,
        description=opts.description, warning=opts.warning, preprocessed=opts.preprocessed, cat12_prefix=opts.cat12_prefix,
        qc_thresholds=qc.parse_bounds(opts.qc_thresholds), skip_bids_validation=opts.skip_bids_validation,
        execution=execution_config(opts), command_line=shlex.join([PROG, *map(str, argv)]), run_id=new_run_id(), normative=opts.normative,
    )  # fmt: skip


def run(config):
    from ..model.splits import SplitError
    from ..train import run as train

    configure_logging(PROG, config.execution.verbosity)
    try:
        return train(config)
    except SplitError as exc:  # labels that cannot be split are a usage error
        raise UsageError(str(exc)) from None


def main(argv=None):
    return run_command(
        PROG, lambda: run(parse_args(argv)), interrupted="finished preprocessing steps are kept in the work folder, no model was written"
    )


if __name__ == "__main__":
    sys.exit(main())
