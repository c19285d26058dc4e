"""Training the ensemble on a labelled BIDS dataset into a model bundle (``bids_pscore-train``).

BIDS inputs -> preprocessing workflow (cached) -> cube cache -> training by subject splits ->
reference statistics on the validation split (SPEC 7) -> normative reference of healthy images
(SPEC 10) -> bundle (SPEC sections 6 and 7).
"""

import hashlib
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import bids, tabular
from .atlas import ATLAS_NAME, CITATION, N_REGIONS
from .cohort import load_grid_images, passing_quality_gate, preprocessed_t1w, recorded_params
from .config import write_config
from .derivatives import layout, sidecars
from .errors import TrainingError, UsageError
from .execution import make_run_folders
from .progress import RESULT

log = logging.getLogger(__name__)


class Scratch(NamedTuple):
    """A training run's folders in the work folder."""

    dataset: Path  # nipype's preprocessing cache and the preprocessed images of one dataset, reused by its reruns
    run: Path  # this run's alone
    cube_cache: Path  # a memory map that another run writing the same file would truncate under this one


def dataset_work_dir(work_dir, bids_dir):
    """The work folder of one dataset: two datasets that both have sub-01 would otherwise share
    nipype nodes and preprocessed files; keyed by its absolute path, so a rerun finds its cache."""
    key = hashlib.sha256(str(Path(bids_dir).resolve()).encode()).hexdigest()[:12]
    return Path(work_dir) / f"train-{key}"


def training_scratch(work_dir, bids_dir, run_id):
    """The folders of the training run ``run_id`` (``config.run_id``) on ``bids_dir``."""
    dataset = dataset_work_dir(work_dir, bids_dir)
    run = dataset / f"run-{run_id}"
    return Scratch(dataset, run, run / "cube_cache.npy")


def label_of(t1w, labels):
    """The label of a T1w: its session's, else its subject's; None if unlabelled."""
    sub, ses = t1w.entities["sub"], t1w.entities.get("ses")
    return labels.get((sub, ses), labels.get((sub, None)))


def select_inputs(layout, labels, sessions, participant_labels):
    """The labelled T1w of the labelled subjects (all sessions, or the first of each subject)."""
    subjects = {sub for sub, _ in labels}
    if participant_labels:
        subjects &= {bids.clean_label(p, "sub") for p in participant_labels}
    if not subjects:
        raise UsageError("no labelled subject is left to train on; check --label-column, --positive, --negative and --participant-label")
    without_t1w = sorted(subjects - set(layout.get_subjects()))
    if without_t1w:  # labelled in participants.tsv, but no images: left out, not fatal
        log.warning("%d labelled subject(s) have no T1w and are left out: %s", len(without_t1w), ", ".join("sub-" + s for s in without_t1w))
        subjects -= set(without_t1w)
    if not subjects:
        raise UsageError("no labelled subject has a T1w; check participants.tsv against the sub-* folders")
    t1w = [t for t in bids.find_t1w(layout, sorted(subjects)) if label_of(t, labels) is not None]
    if sessions == "first":
        first = {}
        # the lowest session label first, ses-2 before ses-10
        for item in sorted(t1w, key=lambda t: (bids.natural_key(t.entities.get("ses", "")), bids.natural_key(t.relpath))):
            first.setdefault(item.entities["sub"], item)
        t1w = sorted(first.values(), key=lambda t: t.relpath)
    return t1w


def check_both_classes(parts, y, positive, negative):
    """The split was checked before preprocessing; failures since may have emptied a part of it, or
    of one class (``parts``: split name -> row numbers; ``y``: 1 for ``positive``)."""
    empty = [name for name, rows in parts.items() if len(rows) == 0]
    if empty:
        raise TrainingError(f"after the failures above, the {' and '.join(empty)} split(s) hold no image: fix those T1w (see the summary) "
                            "or add subjects, and train again")  # fmt: skip
    short = [name for name, rows in parts.items() if len(set(y[rows].tolist())) < 2]
    if short:
        raise TrainingError(f"after the failures above, the {' and '.join(short)} split(s) no longer hold both {positive} and "
                            f"{negative} images: fix those T1w (see the summary) and train again")  # fmt: skip


def build_cube_cache(images, n_images, cache_path):
    """Cubes of every image in a float16 memory map, the brain-voxel counts for scoring, and the
    brain masks (bit-packed, 0.3 MB an image) for the relevance-weighted maps."""
    from . import pscore
    from .atlas import atlas_on_grid
    from .grid import N_CUBES, cut_cubes

    cubes = np.lib.format.open_memmap(cache_path, mode="w+", dtype=np.float16, shape=(n_images, N_CUBES, 25, 25, 25))
    brain = np.zeros((n_images, N_CUBES), np.int64)
    overlap = np.zeros((n_images, N_REGIONS, N_CUBES), np.int32)
    masks = []
    grid_atlas = atlas_on_grid()
    for i, (image, mask) in enumerate(images):
        cubes[i] = cut_cubes(image).astype(np.float16)
        (brain[i],), (overlap[i],) = pscore.brain_overlap(mask, grid_atlas)
        masks.append(np.packbits(mask))
    cubes.flush()
    return cubes, brain, overlap, np.stack(masks), pscore.region_sizes(grid_atlas)


def relevance_reference(ensemble, cubes, masks, p_cube, is_ad, predicted_ad, record):
    """The reference statistics of the relevance-weighted region scores (docs/relevance.md) over
    the given images (the validation split), whose cubes, packed masks and cube scores are given."""
    from . import pscore
    from .atlas import atlas_on_grid
    from .grid import GRID_SHAPE
    from .model.relevance import relevance_on_grid, selected_base

    grid_atlas = atlas_on_grid()
    sizes = pscore.region_sizes(grid_atlas)
    base, chosen = selected_base(ensemble), ensemble.selected.cpu().numpy()
    region = np.zeros((len(masks), N_REGIONS))
    for i in range(len(masks)):
        mask = np.unpackbits(masks[i], count=int(np.prod(GRID_SHAPE))).reshape(GRID_SHAPE).astype(bool)
        relevance = relevance_on_grid(base, np.asarray(cubes[i : i + 1], np.float32), chosen, record)
        region[i] = pscore.region_means(pscore.relevance_voxel_scores(p_cube[i : i + 1], relevance, mask[None]), grid_atlas, sizes)[0]
        if (i + 1) % 25 == 0:
            log.info("relevance of the reference images: %d of %d", i + 1, len(masks))
    return pscore.reference_statistics(region, is_ad, predicted_ad)


def fit_model(cubes, y, parts, brain, overlap, masks, sizes, training):
    """The ensemble (SPEC 4 and 7) and the reference statistics of SPEC 5 and of the relevance map,
    computed on the validation split: images the base classifiers did not train on, on which
    their probabilities are not overconfident (SPEC 7). The test split is only scored, once.

    ``parts``: split name -> row numbers of the cube cache ``cubes``; ``y`` 1 for AD. Returns
    (ensemble, training history, metrics, pscore.Reference, the relevance record).
    """
    from . import pscore
    from .model.relevance import RELEVANCE
    from .model.splits import SPLITS
    from .model.training import Rows, fit_ensemble, predict_ensemble

    ensemble, history, metrics = fit_ensemble(*((Rows(cubes, parts[k]), y[parts[k]]) for k in SPLITS), training)
    val = parts["validation"]
    p_cube, p_image = predict_ensemble(ensemble, Rows(cubes, val), training.batch_size, training.device)
    weights, selected = ensemble.weights_per_cube()
    val_cube_scores = pscore.cube_scores(p_cube, weights, selected)
    region = pscore.region_scores(val_cube_scores, brain[val], overlap[val], sizes)
    predicted_ad = p_image >= pscore.AD_THRESHOLD
    try:
        reference = pscore.reference_statistics(region, y[val] == 1, predicted_ad)
    except ValueError as exc:
        raise TrainingError(f"{exc} (validation split); the ensemble learned too little: train longer (--epochs, --patience), on more "
                            "images, or with a larger --val-fraction") from None  # fmt: skip
    relevance = dict(RELEVANCE)
    relevance["reference"] = relevance_reference(ensemble, Rows(cubes, val), masks[val], val_cube_scores, y[val] == 1, predicted_ad,
                                                 relevance).to_dict()  # fmt: skip
    return ensemble, history, metrics, reference, relevance


def training_reference(config, t1w_inputs, y, parts, split, source_dir, params, work_dir, log_dir, ensemble, reference):
    """The normative reference (SPEC 10) and its description: from ``config.normative``, a separate
    healthy dataset, when given; else from the controls of the training and validation splits
    (the test split stays untouched). Returns None when there are too few controls."""
    from . import reference as reference_module

    if config.normative is not None:
        healthy, healthy_source, raw = reference_module.healthy_inputs(
            config.normative,
            params,
            dataset_work_dir(work_dir, config.normative),
            config.execution,
            log_dir,
            config.qc_thresholds,
            validate=not config.skip_bids_validation,
        )
        ages, sexes = tabular.ages_and_sexes(raw, healthy)
        images = load_grid_images(healthy, healthy_source, params)
        subjects = [t.entities["sub"] for t in healthy]
        in_sample = reference_module.in_sample_pscores(subjects, split)
        return reference_module.build(images, ages, sexes, subjects, params.template, "a separate healthy dataset (--normative)", raw,
                                      None if in_sample else ensemble, reference)  # fmt: skip
    rows = np.sort(np.concatenate([parts["train"], parts["validation"]]))
    controls = [t1w_inputs[i] for i in rows if y[i] == 0]
    n_subjects = len({t.entities["sub"] for t in controls})
    if n_subjects < reference_module.MIN_REFERENCE_SUBJECTS:
        log.warning("%d control subject(s) in the training and validation splits, fewer than the %d a normative reference needs: the model "
                    "gets none (bids_pscore-normative adds one later, from healthy scans of your site)",
                    n_subjects, reference_module.MIN_REFERENCE_SUBJECTS)  # fmt: skip
        return None
    ages, sexes = tabular.ages_and_sexes(config.bids_dir, controls)
    images = load_grid_images(controls, source_dir, params, config.cat12_prefix)
    # the networks trained on these images: their P-scores are in-sample, so only the grey level serves
    built = reference_module.build(images, ages, sexes, [t.entities["sub"] for t in controls], params.template,
                                   "the controls of the training data (train and validation splits)",
                                   config.bids_dir)  # fmt: skip
    unseen = [t1w_inputs[i] for i in parts["test"] if y[i] == 0]
    if unseen:
        ages, sexes = tabular.ages_and_sexes(config.bids_dir, unseen)
        flags = reference_module.count_flags(built[0], load_grid_images(unseen, source_dir, params, config.cat12_prefix), ages, sexes)
        built[1]["unseen_controls"] = {"images": len(unseen), "split": "test", "false_flags_per_healthy_image": float(flags.mean()),
                                       "share_of_healthy_images_with_a_flag": float((flags > 0).mean())}  # fmt: skip
        log.info("normative flags on the %d test-split controls, never in the reference: %.2f per image", len(unseen), flags.mean())
    return built


def run(config):
    """Train on the T1w ``config`` (``config.TrainRunConfig``) selects and write the bundle; returns 0."""
    import pandas as pd

    from .fileio import write_tsv
    from .model.bundle import save_bundle

    refuse_existing_bundle(config.model_dir)
    layout = bids.load_layout(config.bids_dir, validate=not config.skip_bids_validation)
    labels, left_out, source = read_training_labels(config)
    t1w_inputs = select_inputs(layout, labels, config.sessions, config.participant_label)
    # the split is made, and checked, before any image is touched
    split = subject_split(t1w_inputs, labels, config)
    params = training_params(config, t1w_inputs)
    model_dir, work_dir = make_run_folders(config.model_dir, config.execution.work_dir, config.bids_dir)
    log_dir = work_dir / "logs" / f"run-{config.run_id}"
    log.info("this run's configuration and logs: %s", write_config(config, log_dir).parent)
    scratch = training_scratch(work_dir, config.bids_dir, config.run_id)
    scratch.run.mkdir(parents=True, exist_ok=True)
    source_dir = config.preprocessed or scratch.dataset / "preprocessed"
    t1w_inputs, failed, gated_out = gated_training_inputs(config, t1w_inputs, source_dir, scratch, params, log_dir)
    y = np.array([label_of(t, labels) for t in t1w_inputs])
    parts = split_rows(t1w_inputs, split, y, config.positive)
    check_both_classes(parts, y, config.positive, config.negative)
    images = load_grid_images(t1w_inputs, Path(source_dir), params, config.cat12_prefix)
    cubes, brain, overlap, masks, sizes = build_cube_cache(images, len(t1w_inputs), scratch.cube_cache)
    ensemble, history, metrics, reference, relevance = fit_model(cubes, y, parts, brain, overlap, masks, sizes, config.training)
    normative = training_reference(config, t1w_inputs, y, parts, split, Path(source_dir), params, work_dir, log_dir, ensemble, reference)
    trained = {"split": split, "images": {k: int(len(v)) for k, v in parts.items()}, "epochs_run": len(history), "metrics": metrics}
    metadata = bundle_metadata(config, model_dir, params, reference, relevance, {"source": source, "left_out": left_out}, trained)
    save_bundle(model_dir, ensemble, metadata, normative)
    write_tsv(model_dir / "training.tsv", pd.DataFrame(history))
    scratch.cube_cache.unlink()  # gigabytes, and no later run reads another run's cache
    log_trained(model_dir, metrics, reference, relevance, failed, gated_out)
    return 0


def refuse_existing_bundle(model_dir):
    """Training never overwrites a model bundle."""
    if any((Path(model_dir) / name).exists() for name in ("model.json", "weights.safetensors")):
        raise UsageError(f"{model_dir}: already holds a model bundle, and training never overwrites one: "
                         "give a new folder, or move this one away first")  # fmt: skip


def read_training_labels(config):
    """({(sub, ses): 1 or 0}, the values left out, where the labels came from), said in a line."""
    labels, left_out, source = tabular.read_labels(config.bids_dir, config.label_column, config.positive, config.negative)
    log.info(
        "labels from %s: %d %s, %d %s; left out (other values): %s",
        source,
        sum(labels.values()),
        config.positive,
        len(labels) - sum(labels.values()),
        config.negative,
        left_out or "none",
    )
    return labels, left_out, source


def subject_split(t1w_inputs, labels, config):
    """{subject: split name}, stratified by class; a subject with any AD session is stratified as AD."""
    from .model.splits import split_subjects

    names, by_subject = {1: config.positive, 0: config.negative}, {}
    for t in t1w_inputs:
        by_subject[t.entities["sub"]] = max(by_subject.get(t.entities["sub"], 0), label_of(t, labels))
    return split_subjects({s: names[y] for s, y in by_subject.items()}, config.val_fraction, config.test_fraction, config.training.seed)


def training_params(config, t1w_inputs):
    """The preprocessing of the training images: --random-seed's registration, or with --preprocessed those
    the images were made with (every image checked before any folder is made, so a missing one leaves nothing behind)."""
    from .model.preprocessing import PreprocParams

    seed = config.execution.random_seed
    params = PreprocParams() if seed is None else PreprocParams(registration_seed=seed)
    if config.preprocessed is None or config.cat12_prefix:
        return params
    missing = [str(Path(config.preprocessed) / layout.output_path(t.entities, key, params.template)) for t in t1w_inputs
               for key in ("t1w_grid", "mask_grid", "mask_native")
               if not (Path(config.preprocessed) / layout.output_path(t.entities, key, params.template)).is_file()]  # fmt: skip
    if missing:
        raise UsageError(f"{config.preprocessed}: {len(missing)} preprocessed image(s) missing, e.g. {missing[0]}; run the participant "
                         "level for those T1w, or leave their subjects out with --participant-label")  # fmt: skip
    return recorded_params(t1w_inputs, Path(config.preprocessed), params.template)


def gated_training_inputs(config, t1w_inputs, source_dir, scratch, params, log_dir):
    """(the T1w that were preprocessed, unless --preprocessed, and passed the quality gate, {label: Outcome} of
    those whose preprocessing failed, how many the gate left out)."""
    failed = {}
    if config.preprocessed is None:
        t1w_inputs, failed = preprocessed_t1w(t1w_inputs, config.bids_dir, source_dir, scratch.dataset, params, config.execution, log_dir,
                                              "training")  # fmt: skip
        if failed and config.execution.stop_on_first_crash:
            raise TrainingError(
                f"preprocessing stopped at the first failure (--stop-on-first-crash): {', '.join(sorted(failed))}; "
                "nothing was trained (see the summary above)"
            )
    if config.cat12_prefix:
        log.info("CAT12's images are not checked by the quality gate: its measures need bids_pscore's brain masks")
        return t1w_inputs, failed, 0
    # as at the participant level: what the gate refuses is never scored, so it must not train a model nor set its references
    passed = passing_quality_gate(t1w_inputs, Path(source_dir), params.template, config.qc_thresholds, "training")
    return passed, failed, len(t1w_inputs) - len(passed)


def split_rows(t1w_inputs, split, y, positive):
    """{split name: rows of ``t1w_inputs``}, each said in a line."""
    from .model.splits import SPLITS

    parts = {name: np.array([i for i, t in enumerate(t1w_inputs) if split[t.entities["sub"]] == name], dtype=int) for name in SPLITS}
    for name, rows in parts.items():
        log.info(
            "%s: %d images of %d subjects (%d %s)",
            name,
            len(rows),
            len({t1w_inputs[i].entities["sub"] for i in rows}),
            y[rows].sum(),
            positive,
        )
    return parts


def bundle_metadata(config, model_dir, params, reference, relevance, labels, trained):
    """model.json's record of the trained model: ``labels`` ({source, left_out}) where the labels came from,
    ``trained`` ({split, images, epochs_run, metrics}) what the training made."""
    from . import reference as reference_module

    return {
        "name": config.name or model_dir.name,
        "version": "1",
        "description": config.description or f"P-score ensemble trained with bids_pscore-train on {config.bids_dir.resolve().name}",
        **({"warning": config.warning} if config.warning else {}),
        "preprocessing": params.to_dict(),
        "reference": reference.to_dict(),
        "relevance": relevance,
        "atlas": {"name": ATLAS_NAME, "regions": N_REGIONS, "citation": CITATION},
        "labels": {
            "column": config.label_column,
            "source": labels["source"],
            "positive": config.positive,
            "negative": config.negative,
            "left_out": labels["left_out"],
        },
        "training": {
            "dataset": reference_module.dataset_name(config.bids_dir),
            "sessions": config.sessions,
            "preprocessed_by": f"CAT12 ({config.cat12_prefix} images)" if config.cat12_prefix else "bids_pscore",
            "split": trained["split"],
            "images": trained["images"],
            "config": vars(config.training),
            "epochs_run": trained["epochs_run"],
            "metrics": trained["metrics"],
            # SPEC 7: which images served each step
            "fitted_on": {
                "base_classifiers": "train",
                "cube_selection": "validation",
                "meta_classifier": "validation",
                "reference_statistics": "validation",
                "test_metrics": "test",
            },
            "seeds": {"training": config.training.seed, "registration": params.registration_seed},
        },  # fmt: skip
        "software": sidecars.software_versions(),
    }


def log_trained(model_dir, metrics, reference, relevance, failed, gated_out):
    """The RESULT line of a training (and the warning of a lambda too low to be trusted)."""
    from .model.bundle import lambda_warning

    log.log(
        RESULT,
        f"model bundle written to {model_dir}: test AUC {metrics['test']['auc']:.3f}, "
        f"balanced accuracy {metrics['test']['balanced_accuracy']:.3f}, lambda {reference.lambda_:.3f} "
        f"(relevance-weighted: {relevance['reference']['lambda']:.3f})"
        + (f"; {len(failed)} T1w skipped (unreadable or preprocessing failed, see above)" if failed else "")
        + (f"; {gated_out} T1w skipped (failed the quality gate, see above)" if gated_out else ""),
    )
    warning = lambda_warning(reference.lambda_)
    if warning:
        log.warning("%s", warning)
