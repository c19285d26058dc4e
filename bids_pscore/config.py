"""The configuration of a run: built and checked once from the command line (``bids_pscore.cli``),
then handed down unchanged, and written to ``logs/run-<id>/config.json`` with the software
versions, so that a run can be read back later. MultiProc's workers read the file too: its path
is in the environment variable ``CONFIG_VARIABLE``."""

import dataclasses
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .fileio import write_json

CONFIG_VARIABLE = "BIDS_PSCORE_RUN_CONFIG"
# --skull-strip-t1w, as fMRIPrep names it, the default first: "force" runs deepbet on every input
# (a brain another tool cut scores as its mask makes it: docs/validation.md), "auto" takes an input
# whose non-zero region is brain-sized as already skull-stripped, "skip" trusts that every input is
# a brain already
SKULL_STRIP_MODES = ("force", "auto", "skip")


def new_run_id():
    """When the run started, and a few random characters so that two jobs started in the same
    second keep their logs apart (as fMRIPrep names its runs)."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}_{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class Execution:
    """How the preprocessing workflow runs; shared by the app and ``bids_pscore-train``."""

    work_dir: Path
    n_cpus: int
    # deepbet's threads per step; None: ``threads_per_step`` decides once the T1w are known
    omp_nthreads: int | None
    mem_gb: float | None
    plugin: str
    plugin_args: dict | None
    stop_on_first_crash: bool
    clean_workdir: bool
    # -1 quiet, 0 default, 1 the app's details, 2 nipype's own messages too
    verbosity: int
    # None: the model's (app) or the preprocessing's standard seed (training)
    random_seed: int | None
    # --skull-strip-t1w, one of SKULL_STRIP_MODES
    skull_strip_t1w: str = SKULL_STRIP_MODES[0]


# deepbet's network gains little from more threads than this
MAX_DEFAULT_THREADS = 8


def threads_per_step(execution, n_t1w):
    """deepbet's threads for a run of ``n_t1w`` T1w: --omp-nthreads when given; else, with MultiProc,
    the CPUs each T1w has when all run side by side, and all CPUs with the other plugins (one step at a
    time, or a cluster job of its own); at most MAX_DEFAULT_THREADS. On 2 CPUs six sessions on one
    thread each ran their workflow in 93 s rather than 104 s on two (a step on two threads waits for
    both CPUs), with the same masks and outputs to the byte."""
    if execution.omp_nthreads is not None:
        return execution.omp_nthreads
    if execution.plugin == "MultiProc":
        return max(1, min(execution.n_cpus // max(n_t1w, 1), MAX_DEFAULT_THREADS))
    return min(execution.n_cpus, MAX_DEFAULT_THREADS)


@dataclass(frozen=True)
class Selection:
    """Which T1w of the BIDS dataset a run takes."""

    participant_label: tuple[str, ...] = ()
    session_label: tuple[str, ...] = ()
    bids_filters: dict = dataclasses.field(default_factory=dict)
    bids_database_dir: Path | None = None
    skip_bids_validation: bool = False


@dataclass(frozen=True)
class GroupOptions:
    label_column: str | None = None
    positive: str | None = None
    negative: str | None = None
    normalisation: str = "reference"
    min_support: float = 0.3
    max_set_size: int = 3
    flags: str | None = None  # "normative" or "patent"; None: normative when every session has them


@dataclass(frozen=True)
class AppConfig:
    """``bids_pscore bids_dir output_dir {participant,group}``."""

    bids_dir: Path
    output_dir: Path
    analysis_level: str
    selection: Selection
    model: Path | None
    qc_thresholds: dict
    group: GroupOptions
    reports_only: bool
    execution: Execution
    command_line: str
    run_id: str


@dataclass(frozen=True)
class TrainRunConfig:
    """``bids_pscore-train bids_dir model_dir``; ``training`` is a ``model.training.TrainConfig``."""

    bids_dir: Path
    model_dir: Path
    label_column: str
    positive: str
    negative: str
    sessions: str
    participant_label: tuple[str, ...]
    val_fraction: float
    test_fraction: float
    training: object
    name: str | None
    description: str | None
    warning: str | None
    preprocessed: Path | None
    cat12_prefix: str | None
    qc_thresholds: dict  # the quality gate's bounds, as the participant level's --qc-thresholds
    skip_bids_validation: bool
    execution: Execution
    command_line: str
    run_id: str
    normative: Path | None = None  # healthy images for the normative reference (default: the training data's controls)


@dataclass(frozen=True)
class NormativeRunConfig:
    """``bids_pscore-normative model_dir healthy_dir out_dir``."""

    model_dir: Path
    healthy_dir: Path
    out_dir: Path
    participant_label: tuple[str, ...]
    qc_thresholds: dict  # the quality gate's bounds for the healthy images, as the participant level's --qc-thresholds
    skip_bids_validation: bool
    execution: Execution
    command_line: str
    run_id: str
    calibrate_class: bool = False
    class_domain: bool = False  # these heads become the class domain (so do they with calibrate_class)


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):  # absolute: the record is read without knowing where the run started
        return str(value.absolute())
    return value


def to_dict(config):
    """The configuration as JSON values (absolute paths as strings, tuples as lists)."""
    return _plain(config)


def write_config(config, log_dir):
    """Write ``config.json`` with the versions of the software into ``log_dir`` and tell the
    workers that nipype will start where it is. Returns its path."""
    from .derivatives.sidecars import software_versions

    path = Path(log_dir) / "config.json"
    write_json(path, {"config": to_dict(config), "software": software_versions()})
    os.environ[CONFIG_VARIABLE] = str(path)
    return path


def read_worker_verbosity(environ):
    """The verbosity of the run a worker process belongs to, or None outside a run. The default's
    if the file cannot be read (e.g. the worker outlived the tests' temporary folder)."""
    path = environ.get(CONFIG_VARIABLE)
    if not path:
        return None
    try:
        return int(json.loads(Path(path).read_text())["config"]["execution"]["verbosity"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0
