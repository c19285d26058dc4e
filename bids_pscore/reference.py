"""A model's normative reference (SPEC 10) from healthy images: preprocessed grid images ->
features -> statistics and calibration (``bids_pscore.normative``) -> the bundle's record.

Built by ``bids_pscore-train`` from the training data's controls or a separate healthy dataset,
or added to a trained bundle by ``bids_pscore-normative`` (``add_to_bundle``).
"""

import logging
import time
from pathlib import Path

import numpy as np

from . import bids, normative, pscore, tabular
from .atlas import atlas_on_grid
from .derivatives import layout

log = logging.getLogger(__name__)

FLAGS_PER_HEALTHY_IMAGE = 1.0  # SPEC 10: a healthy image gets on average at most one flagged region
N_FOLDS = 10
# fewer subjects give no usable spread (a fold of 2-5 heads fits age and sex exactly) and a threshold
# out of any range; even 20 put it at z -4.7 to -5.7 on the demo cohort (docs/normative.md)
MIN_REFERENCE_SUBJECTS = 20


def features(images, template, ensemble=None, reference=None):
    """The features of each (image, brain mask) on the grid: the grey level at the template's brain
    voxels, and per region its mean grey level and, given the ensemble and its SPEC 5 reference,
    the normalised region P-score and the meta-classifier's logit. Returns (voxel mask, voxel values
    (n, V), {feature: (n, 246)}, logits (n,) or None without the ensemble)."""
    from .inference import score_image
    from .preprocess.steps import template_on_grid

    voxel_mask = np.asarray(template_on_grid(template)[1].dataobj) > 0
    grid_atlas = atlas_on_grid()
    sizes = pscore.region_sizes(grid_atlas)
    voxels, regions, logits = [], {"grey_level": []}, []
    if ensemble is not None:
        regions["pscore"] = []
    for image, mask in images:
        voxels.append(np.asarray(image, np.float32)[voxel_mask])
        regions["grey_level"].append(pscore.region_means(image, grid_atlas, sizes)[0])
        if ensemble is not None:
            scored = score_image(ensemble, reference, image, mask, grid_atlas, sizes)
            regions["pscore"].append(scored.scores.region_norm[0])
            logits.append(scored.image_logit)
    return voxel_mask, np.stack(voxels), {name: np.stack(values) for name, values in regions.items()}, np.array(logits) if logits else None


def build(images, ages, sexes, subjects, template, source, dataset_dir, ensemble=None, reference=None, calibrate_class=False):
    """The reference and the description the bundle keeps of it (who, how many, ages, licence,
    calibration).

    ``source`` says how the images were chosen (e.g. "controls of the training data"); the
    description names their dataset (``dataset_dir``) and its licence, never a path. With
    ``calibrate_class`` (and the ensemble), the description also holds the class offset that makes
    these healthy images be called control as often as ``normative.CLASS_SPECIFICITY`` says.
    """
    from .errors import UsageError

    if len(set(subjects)) < MIN_REFERENCE_SUBJECTS:
        raise UsageError(f"{dataset_dir}: {len(set(subjects))} healthy subject(s) passed preprocessing and the quality gate; a normative "
                         f"reference needs at least {MIN_REFERENCE_SUBJECTS} (tens: the more, the closer its threshold to what a healthy "
                         "head shows)")  # fmt: skip
    ages, codes, subjects = np.asarray(ages, np.float64), np.array([normative.sex_code(s) for s in sexes]), np.asarray(subjects)
    fitted = normative.fitted_images(ages, codes, subjects, MIN_REFERENCE_SUBJECTS)
    left_out = sorted(set(subjects[~fitted]))
    if left_out:
        log.warning("left out of the reference %d image(s) without an age or sex in participants.tsv (the others have them, and the "
                    "reference adjusts for them): %s", int((~fitted).sum()), ", ".join(left_out))  # fmt: skip
    ages, codes, subjects = ages[fitted], codes[fitted], subjects[fitted]
    images = (image for image, kept in zip(images, fitted) if kept)
    voxel_mask, voxels, regions, logits = features(images, template, ensemble, reference)
    built = normative.build(voxels, voxel_mask, regions, ages, codes, subjects, FLAGS_PER_HEALTHY_IMAGE, N_FOLDS)
    if not -np.inf < built.calibration.flag_z < 0:
        raise UsageError(f"{dataset_dir}: the calibrated threshold came out at z = {built.calibration.flag_z:.3g}, which no healthy "
                         "reference gives; check the images (their quality reports) and their ages")  # fmt: skip
    known = ages[np.isfinite(ages)]
    cal, ref = built.calibration, built.reference
    description = {
        "reference": {
            "source": source, "dataset": dataset_name(dataset_dir), **dataset_licence(dataset_dir),
            "images": int(len(subjects)), "subjects": int(len(set(subjects))),
            "age": {"known": int(known.size), **({"min": float(known.min()), "median": float(np.median(known)),
                                                  "max": float(known.max())} if known.size else {})},
            "sex": {"F": int((codes > 0).sum()), "M": int((codes < 0).sum()), "unknown": int(np.isnan(codes).sum())},
            **({"left_out_without_age_or_sex": left_out} if left_out else {}),
        },
        "feature_descriptions": {name: normative.FEATURES[name]["description"] for name in regions},
        "statistics": "per voxel (the template's brain mask on the grid) and per region: Huber-weighted least squares "
                      f"(k = {normative.HUBER_K}) on {covariate_text(ref.covariates)}, spread = MAD of the residuals x "
                      f"{normative.MAD_TO_SD}; z negative = less tissue than expected; the {normative.FLAG_FEATURE.replace('_', ' ')}'s z "
                      "(per region and per voxel) relative to the image's overall level, the median of its z",
        "rule": f"a region is atrophic when the z of its {normative.FLAG_FEATURE.replace('_', ' ')}, relative to the median z of the "
                f"image's regions, is below {cal.flag_z:.2f}",
        "calibration": {
            "method": f"cross-fitting by subject ({min(N_FOLDS, len(set(subjects)))} folds): each reference image's z against "
                      "statistics fitted without its subject; the threshold leaves the target number of flags per image",
            "target_flags_per_image": FLAGS_PER_HEALTHY_IMAGE, "images": cal.images,
            "false_flags_per_healthy_image": cal.flags_per_image, "share_of_healthy_images_with_a_flag": cal.share_with_any_flag,
        },
        "distance": {"measure": "median |z| of the regions' grey level", "threshold": ref.max_distance,
                     "set_on": "the largest of the held-out reference images"},
        **({"class_calibration": class_calibration(logits, subjects)} if calibrate_class else {}),
    }  # fmt: skip
    log.info(
        "normative reference: %d healthy image(s) of %d subject(s) (%s), %s; flags below z = %.2f (held out: %.2f false flags per "
        "healthy image, %.0f%% of them with any); distance threshold %.2f",
        len(subjects), len(set(subjects)), source, covariate_text(ref.covariates), cal.flag_z, cal.flags_per_image,
        100 * cal.share_with_any_flag, ref.max_distance,
    )  # fmt: skip
    return ref, description


def class_calibration(logits, subjects):
    """The record of a class offset set on healthy images' meta-classifier logits (SPEC 10's
    site reference, beyond SPEC 4: the decision moved, the weights unchanged)."""
    offset = normative.class_offset(logits)
    called = normative.heldout_called_control(logits, subjects, n_folds=N_FOLDS)
    log.info("class calibrated on these healthy images: logit offset %.2f (they were called AD %d of %d times); held out, %.0f%% of them "
             "are called control", offset, int((logits >= 0).sum()), len(logits), 100 * called)  # fmt: skip
    return {"logit_offset": offset, "specificity": normative.CLASS_SPECIFICITY, "images": int(len(logits)),
            "called_ad_before": int((logits >= 0).sum()), "heldout_called_control": called,
            "method": f"the offset added to the meta-classifier's logit is minus the {normative.CLASS_SPECIFICITY:g} quantile of these healthy "
                      f"images' logits; held out: the share called control by an offset set without their subject ({N_FOLDS} folds)"}  # fmt: skip


def count_flags(reference, images, ages, sexes):
    """Regions flagged in each (image, mask) against ``reference`` (grey level only); (n,)."""
    grid_atlas = atlas_on_grid()
    sizes = pscore.region_sizes(grid_atlas)
    counts = []
    for (image, _), age, sex in zip(images, ages, sexes):
        region = {"grey_level": pscore.region_means(image, grid_atlas, sizes)[0]}
        counts.append(int(normative.deviation(reference, image, region, age, normative.sex_code(sex)).atrophic.sum()))
    return np.array(counts)


def covariate_text(covariates):
    names = [n for n, used in (("age", covariates.age), ("sex", covariates.sex)) if used]
    return " and ".join(names) if names else "no covariate (age or sex unknown or constant in the reference)"


def dataset_name(bids_dir):
    """The dataset's Name from its dataset_description.json, else its folder's name: never a path."""
    return str(bids.dataset_description(bids_dir).get("Name") or Path(bids_dir).resolve().name)


def dataset_licence(bids_dir):
    """License and HowToAcknowledge of the dataset's dataset_description.json, those it has: a
    reference derives from its images and carries their terms."""
    description = bids.dataset_description(bids_dir)
    return {key.lower(): str(description[key]) for key in ("License", "HowToAcknowledge") if description.get(key)}


def is_bids_pscore_output(folder):
    """Whether ``folder`` is an output folder of bids_pscore's participant level."""
    description = bids.dataset_description(folder)
    generated = description.get("GeneratedBy") or []
    return description.get("DatasetType") == "derivative" and any(isinstance(g, dict) and g.get("Name") == "bids_pscore" for g in generated)


def healthy_inputs(healthy_dir, params, work_dir, execution, log_dir, bounds, participant_label=None, validate=True):
    """The T1w of a healthy dataset, preprocessed as ``params`` say, that passed the quality gate
    under ``bounds`` (the run's --qc-thresholds, as for the images the reference is compared with).

    ``healthy_dir`` is a BIDS dataset (preprocessed here, into ``work_dir/normative``) or an output
    folder of bids_pscore's participant level (its images are used as they are, when they were
    made with ``params``). Returns (T1w, folder of their grid images, the raw dataset).
    """
    from .cohort import passing_quality_gate, preprocessed_t1w, recorded_params
    from .errors import UsageError

    healthy_dir = Path(healthy_dir)
    if is_bids_pscore_output(healthy_dir):
        raw = Path((bids.dataset_description(healthy_dir).get("DatasetLinks") or {}).get("raw", ""))
        if not (raw / "dataset_description.json").is_file():
            raise UsageError(f"{healthy_dir}: its raw dataset ({raw}) is not there; the ages and the T1w list come from it: "
                             "pass the raw BIDS dataset instead")  # fmt: skip
        t1w = bids.find_t1w(bids.load_layout(raw, validate=validate), participant_label)
        t1w = [t for t in t1w if (healthy_dir / layout.output_path(t.entities, "t1w_grid", params.template)).is_file()]
        if not t1w:
            raise UsageError(f"{healthy_dir}: holds no preprocessed T1w of {raw}; run the participant level first")
        if recorded_params(t1w, healthy_dir, params.template) != params:
            raise UsageError(f"{healthy_dir}: its images were preprocessed with other parameters than the model's; pass the raw dataset")
        source_dir = healthy_dir
    else:
        raw = healthy_dir
        source_dir = Path(work_dir) / "normative"
        t1w, _ = preprocessed_t1w(bids.find_t1w(bids.load_layout(raw, validate=validate), participant_label), raw, source_dir, work_dir,
                                  params, execution, log_dir, "the reference")  # fmt: skip
    return passing_quality_gate(t1w, source_dir, params.template, bounds, "the reference"), source_dir, raw


def labels_in_split(subjects, split, parts):
    """The subjects whose labels lie in these ``parts`` of the model's ``split`` (subject -> split name), sorted."""
    return sorted(set(subjects) & {s for s, part in split.items() if part in parts})


def in_sample_pscores(subjects, split):
    """Whether images of these subjects may have trained the model's networks (their labels are in
    the train part of ``split``): then their P-scores are in-sample and the P-score feature is left out."""
    overlap = labels_in_split(subjects, split, ("train",))
    if overlap:
        log.info("%d healthy subject label(s) are in the model's training split (%s%s): if they are the same people their P-scores "
                 "are in-sample, so the reference holds the grey level only", len(overlap), ", ".join(overlap[:5]),
                 ", ..." if len(overlap) > 5 else "")  # fmt: skip
    return bool(overlap)


def add_to_bundle(config):
    """``bids_pscore-normative``: a copy of a trained bundle with a normative reference built from
    healthy images (``config.NormativeRunConfig``); returns 0."""
    from .cohort import load_grid_images, load_model, preprocessing_params
    from .config import write_config
    from .errors import UsageError
    from .execution import make_run_folders
    from .model.bundle import add_normative

    out_dir = Path(config.out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageError(f"{out_dir}: is not empty; the new bundle needs a new folder (the model given is never changed)")
    bundle = load_model(config.model_dir, normative=False)  # the reference it may have is replaced
    calibrated_elsewhere = (bundle.metadata.get("class_domain") or {}).get("from_class_calibration")
    if config.class_domain and not config.calibrate_class and calibrated_elsewhere:
        raise UsageError(f"{config.model_dir}: its class was calibrated on other healthy heads, and --class-domain alone would leave "
                         "that calibration without the heads it was set on; calibrate on these with --calibrate-class instead")  # fmt: skip
    params = preprocessing_params(bundle.metadata)
    out_dir, work_dir = make_run_folders(out_dir, config.execution.work_dir, config.healthy_dir)
    log_dir = work_dir / "logs" / f"run-{config.run_id}"
    write_config(config, log_dir)
    t1w, source_dir, raw = healthy_inputs(config.healthy_dir, params, work_dir, config.execution, log_dir, config.qc_thresholds,
                                          config.participant_label, not config.skip_bids_validation)  # fmt: skip
    subjects = [t.entities["sub"] for t in t1w]
    split = bundle.metadata.get("training", {}).get("split", {})
    ensemble = None if in_sample_pscores(subjects, split) else bundle.ensemble
    # the meta-classifier was fitted on the validation split (SPEC 7): those logits are in-sample too
    fitted_on = labels_in_split(subjects, split, ("train", "validation"))
    if config.calibrate_class and fitted_on:
        raise UsageError(f"{config.healthy_dir}: --calibrate-class needs controls the model was not fitted on, but {len(fitted_on)} are in its "
                         f"training or validation split ({', '.join(fitted_on[:3])}{', ...' if len(fitted_on) > 3 else ''}), whose AD "
                         "probabilities are in-sample; give controls of another dataset, or leave --calibrate-class out")  # fmt: skip
    ages, sexes = tabular.ages_and_sexes(raw, t1w)
    images = load_grid_images(t1w, source_dir, params)
    reference, description = build(images, ages, sexes, subjects, params.template, "a separate healthy dataset (bids_pscore-normative)",
                                   raw, ensemble, pscore.Reference.from_dict(bundle.metadata["reference"]), config.calibrate_class)  # fmt: skip
    description["added"] = {"by": "bids_pscore-normative", "date": time.strftime("%Y-%m-%d")}
    new_domain = class_domain_change(bundle.metadata, description, config.calibrate_class, config.class_domain)
    add_normative(bundle.folder, out_dir, reference, description, new_domain)
    log.info("bundle with the normative reference written to %s (weights unchanged, new model.json checksum)", out_dir)
    return 0


def class_domain_change(metadata, description, calibrate_class, class_domain=False):
    """Whether the reference just built becomes the bundle's class domain (the heads of the scanner the
    class was set on), said in the log: with --calibrate-class the class is set on these heads, with
    --class-domain they are said to be of that scanner, and a model without a domain gets its first
    reference as one; otherwise the domain and the class offset it goes with are carried over unchanged."""
    domain = metadata.get("class_domain")
    if calibrate_class or class_domain or domain is None:
        log.info("class domain: these %d healthy images (%s), where %s; a scan far from them gets no reliable class",
                 description["reference"]["images"], description["reference"]["dataset"],
                 "the class was just calibrated" if calibrate_class else
                 "they are of the scanner the class was set on (--class-domain)" if class_domain else
                 "the model had none: this first reference of it is taken to be of its training scanner")  # fmt: skip
        return True
    # a new reference leaves the class as it was: its offset (a site's calibration) travels with the domain it was set on
    carried = (metadata.get("normative") or {}).get("class_calibration")
    if carried:
        description["class_calibration"] = carried
    log.info("class domain carried over unchanged: %s images of %s%s", domain["reference"].get("images"), domain["reference"].get("dataset"),
             ", the class calibrated on them (its offset kept)" if domain["from_class_calibration"] else "")  # fmt: skip
    return False
