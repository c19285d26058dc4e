"""The normative reference of SPEC section 10, as pure numpy functions without I/O.

A person's feature is compared with what healthy people of the same age and sex show:

    expected(i)  = X(i) @ coef            X(i) = [1, (age - age_centre) / 10, sex]
    z(i)         = orientation * (feature(i) - expected(i)) / spread

per voxel (a deviation map) and per region, where coef and spread come from the reference's
healthy images (a Huber-weighted linear fit and the median absolute deviation of its residuals,
so that one odd reference head moves neither). ``orientation`` makes negative mean "less tissue
than expected" for every feature.

The grey level's z is then taken relative to the image's overall level, the median z of its
regions (of its voxels for the deviation map): on real heads of one scanner most false flags
came from heads whose whole brain lay 1.5 spreads darker than its peers (contrast, not
tissue), and this took them from 2.8 to 0.5 per unseen head (docs/normative.md). Disease of
fewer than half the regions leaves the median where it was; a brain that is darker everywhere
is what the distance (median |z|, before this step) reports. A region is flagged atrophic when
its relative z is below a threshold calibrated on reference images held out from the statistics
(cross-fitting by subject), so that a healthy image gets on average at most the asked number of
flagged regions.
"""

from dataclasses import dataclass

import numpy as np

AGE_SCALE = 10.0  # years per unit of the age column, so that coefficients read per decade
SEX_CODES = {"F": 0.5, "FEMALE": 0.5, "M": -0.5, "MALE": -0.5}  # centred: unknown sex is 0, between the two
HUBER_K = 1.345  # 95% efficiency under normal residuals
MAD_TO_SD = 1.4826
RESCALED_ITERATIONS = 3  # the outliers' pull on the ordinary fit's scale is gone by then
# no spread below this share of the median spread: a voxel that the intensity normalisation clips to 1
# in every reference image has a spread of 1e-15, and a z of 1e5 for a person 0.01 below it
SPREAD_FLOOR = 0.1


def sex_code(value):
    """+0.5 female, -0.5 male, NaN unknown (BIDS participants.tsv writes F/M, female/male, n/a)."""
    return SEX_CODES.get(str(value).strip().upper(), np.nan)


@dataclass(frozen=True)
class Covariates:
    """Which covariates the reference adjusts for, and the age its intercept stands for."""

    age: bool
    sex: bool
    age_centre: float = 0.0

    @classmethod
    def of_reference(cls, ages, sexes):
        """Adjust for age (sex) when every reference image has one and they vary (``fitted_images``
        leaves out those without)."""
        ages, sexes = np.asarray(ages, np.float64), np.asarray(sexes, np.float64)
        use_age = bool(np.isfinite(ages).all() and np.ptp(ages) > 0)
        use_sex = bool(np.isfinite(sexes).all() and len(np.unique(sexes)) == 2)
        return cls(use_age, use_sex, float(np.median(ages)) if use_age else 0.0)

    def design(self, ages, sexes):
        """X (n, p). An unknown age or sex takes the reference's centre (0): the person is then
        compared with the reference's median age, or with both sexes alike."""
        ages, sexes = np.asarray(ages, np.float64), np.asarray(sexes, np.float64)
        columns = [np.ones(len(ages))]
        if self.age:
            columns.append(np.nan_to_num((ages - self.age_centre) / AGE_SCALE, nan=0.0))
        if self.sex:
            columns.append(np.nan_to_num(sexes, nan=0.0))
        return np.stack(columns, axis=1)

    def to_dict(self):
        return {"age": self.age, "sex": self.sex, "age_centre": self.age_centre, "age_scale": AGE_SCALE, "sex_codes": {"F": 0.5, "M": -0.5}}

    @classmethod
    def from_dict(cls, values):
        return cls(bool(values["age"]), bool(values["sex"]), float(values["age_centre"]))


def fitted_images(ages, sexes, subjects, min_subjects):
    """Which images a reference is fitted on (bool mask): a covariate that at least
    ``min_subjects`` subjects have, and that varies among them, is adjusted for and the images
    without it are left out; otherwise no image is left out for it. One unknown age would else turn
    the age adjustment off for the whole reference (it did, for 4 of 125 IXI heads)."""
    subjects = np.asarray(subjects)
    keep = np.ones(len(subjects), bool)
    for values in (np.asarray(ages, np.float64), np.asarray(sexes, np.float64)):
        known = keep & np.isfinite(values)
        if len(np.unique(subjects[known])) >= min_subjects and np.ptp(values[known]) > 0:
            keep = known
    return keep


@dataclass(frozen=True)
class Statistics:
    """coef (p, m) and spread (m,) of m features (voxels or regions)."""

    coef: np.ndarray
    spread: np.ndarray


def _mad(residuals):
    centred = residuals - np.median(residuals, axis=0)
    return MAD_TO_SD * np.median(np.abs(centred), axis=0)


def fit(values, design, iterations=10):
    """Huber-weighted least squares of each column of ``values`` (n, m) on ``design`` (n, p) and
    the robust spread of its residuals.

    Iteratively reweighted, the residuals' scale (their MAD) re-estimated in the first
    iterations only and then held (a median per iteration is most of the time: the voxel
    reference has half a million columns), until no coefficient moves by more than 1e-4 of it.
    The spread is the MAD of the final residuals scaled to an SD, times sqrt(n / (n - p)) for the
    fitted coefficients, and at least SPREAD_FLOOR of the median spread over the columns, so that
    z stays finite where every reference image has the same value.
    """
    y = np.asarray(values, np.float64)
    x = np.asarray(design, np.float64)
    n, p = x.shape
    outer = (x[:, :, None] * x[:, None, :]).reshape(n, p * p)  # x_i x_j of each image, for X'WX as one product

    def weighted_fit(weights):
        xtwx = (outer.T @ weights).T.reshape(-1, p, p)
        xtwy = (x.T @ (weights * y)).T
        return np.ascontiguousarray(np.linalg.solve(xtwx + 1e-12 * np.eye(p), xtwy[..., None])[..., 0].T)

    coef = weighted_fit(np.ones_like(y))
    for iteration in range(iterations):
        residuals = y - x @ coef
        if iteration < RESCALED_ITERATIONS:
            scale = np.maximum(_mad(residuals), 1e-12)
        new = weighted_fit(np.minimum(1.0, HUBER_K * scale / np.maximum(np.abs(residuals), 1e-300)))
        moved = np.abs(new - coef).max(axis=0) / scale
        coef = new
        if moved.max() < 1e-4:
            break
    spread = _mad(y - x @ coef) * np.sqrt(n / max(n - p, 1))
    floor = SPREAD_FLOOR * float(np.median(spread))
    return Statistics(coef, np.maximum(spread, floor if floor > 0 else 1e-6))


def expected(design, stats):
    """The healthy value of each feature for each image's covariates; (n, m)."""
    return np.asarray(design, np.float64) @ stats.coef


def zscores(values, design, stats, orientation=1.0):
    """z = orientation * (value - expected) / spread; (n, m)."""
    return orientation * (np.asarray(values, np.float64) - expected(design, stats)) / stats.spread


def overall_level(z):
    """An image's overall z: the median over its regions (or voxels), last axis; keeps the axis."""
    return np.median(z, axis=-1, keepdims=True)


def relative(z):
    """z relative to the image's overall level (the flags' z; module docstring)."""
    return z - overall_level(z)


def subject_folds(subjects, n_folds):
    """Fold number of each image: all images of a subject in one fold, subjects dealt in turn
    (sorted, so the folds do not depend on the order of the images)."""
    subjects = np.asarray(subjects)
    names = np.unique(subjects)
    fold_of = {name: k % n_folds for k, name in enumerate(names)}
    return np.array([fold_of[s] for s in subjects])


def cross_fitted_z(values, design, subjects, n_folds=10, orientation=1.0):
    """z of every reference image against statistics fitted without its subject; (n, m).

    Held-out z is what an unseen healthy person gets; in-sample z is narrower (the image helped
    fit its own expectation), and a threshold set on it flags more in new people.
    """
    values, design = np.asarray(values, np.float64), np.asarray(design, np.float64)
    folds = subject_folds(subjects, min(n_folds, len(np.unique(subjects))))
    z = np.empty_like(values)
    for k in np.unique(folds):
        out = folds == k
        z[out] = zscores(values[out], design[out], fit(values[~out], design[~out]), orientation)
    return z


@dataclass(frozen=True)
class Calibration:
    flag_z: float  # a region is flagged below this z
    flags_per_image: float  # on the held-out images flag_z was set on
    share_with_any_flag: float
    images: int


def calibrate(heldout_z, flags_per_image=1.0):
    """The threshold on region z below which a region is flagged, set on held-out healthy images
    so that they get on average at most ``flags_per_image`` flagged regions.

    With k = floor(flags_per_image * n images), the threshold lies halfway between the k-th and
    the (k+1)-th lowest z of all their regions.
    """
    z = np.asarray(heldout_z, np.float64)
    ordered = np.sort(z.ravel())
    k = int(np.floor(flags_per_image * len(z)))
    flag_z = float(ordered[0] - 1.0) if k == 0 else float((ordered[k - 1] + ordered[min(k, ordered.size - 1)]) / 2.0)
    flagged = z < flag_z
    return Calibration(flag_z, float(flagged.sum() / len(z)), float(flagged.any(axis=1).mean()), int(len(z)))


def atrophic(region_z, flag_z):
    """Regions flagged atrophic: z below the calibrated threshold; (n, 246) bool."""
    return np.asarray(region_z) < flag_z


def distance(region_z):
    """How far an image lies from the reference as a whole: the median of its regions' |z|.

    A scan from another scanner or protocol shifts most regions at once; disease of fewer than
    half the regions leaves the median where healthy images have it (about 0.67 for normal z).
    A distance above what the reference's own held-out images reach says that the image is unlike
    the reference and its flags are not reliable.
    """
    return np.median(np.abs(np.asarray(region_z, np.float64)), axis=-1)


# the quantile of a site's healthy images' logits that the class offset puts at the decision: held out, it
# left 0.95 of 38 controls of another scanner called control (0.92 from 20; 0.89 and 0.91 at 0.95), and 62%
# of their simulated AD twins still called AD (docs/normative.md)
CLASS_SPECIFICITY = 0.97


def class_offset(logits, specificity=CLASS_SPECIFICITY):
    """The offset added to the meta-classifier's logit so that ``specificity`` of these healthy
    images are called control (logit + offset < 0, i.e. AD probability < 0.5): minus the logits'
    ``specificity`` quantile. On another scanner every healthy head may be called AD; the offset
    moves the decision to where that site's controls lie, keeping how the model ranks heads."""
    return -float(np.quantile(np.asarray(logits, np.float64), specificity))


def heldout_called_control(logits, subjects, specificity=CLASS_SPECIFICITY, n_folds=10):
    """The share of healthy images called control by an offset set without their subject
    (cross-fitting by subject, as the flags' threshold): what the offset promises a new control."""
    logits = np.asarray(logits, np.float64)
    folds = subject_folds(subjects, min(n_folds, len(np.unique(subjects))))
    called = np.array([logits[i] + class_offset(logits[folds != folds[i]], specificity) < 0 for i in range(len(logits))])
    return float(called.mean())


# Each feature with the sign that makes a negative z mean "less tissue than expected".
FEATURES = {
    "grey_level": {
        "orientation": 1.0,
        "description": "the preprocessed grey level on the grid (what the networks see, SPEC 2), per voxel and as the region's mean: "
        "tissue lost to CSF is darker",
    },
    "pscore": {
        "orientation": -1.0,
        "description": "the normalised region P-score (SPEC 5): a higher score means more degeneration, so z is its negative deviation",
    },
}
FLAG_FEATURE = "grey_level"


@dataclass(frozen=True)
class NormativeReference:
    """What a bundle's normative reference holds: statistics per voxel (grey level, inside
    ``voxel_mask``) and per region (each feature), the covariates, and the calibrated thresholds."""

    covariates: Covariates
    voxel_mask: np.ndarray  # (121, 145, 121) bool
    voxel: Statistics  # grey level at the voxels of voxel_mask
    regions: dict  # feature -> Statistics over the 246 regions
    flag_z: float  # a region is atrophic when its FLAG_FEATURE z is below this
    max_distance: float  # an image farther than this from the reference has unreliable flags

    def arrays(self):
        """The statistics as named arrays (safetensors holds arrays only; the rest is JSON)."""
        out = {"voxel_mask": self.voxel_mask.astype(np.uint8), "voxel.coef": self.voxel.coef.astype(np.float32),
               "voxel.spread": self.voxel.spread.astype(np.float32)}  # fmt: skip
        for name, stats in self.regions.items():
            out[f"{name}.coef"], out[f"{name}.spread"] = stats.coef, stats.spread
        # safetensors writes an array's memory as it lies: C order, or the values come back shuffled
        return {key: np.ascontiguousarray(value) for key, value in out.items()}

    def record(self):
        return {"covariates": self.covariates.to_dict(), "features": sorted(self.regions), "flag_feature": FLAG_FEATURE,
                "threshold": self.flag_z, "distance_threshold": self.max_distance, "relative_to_overall_level": True}  # fmt: skip

    @classmethod
    def from_arrays(cls, arrays, record, grid_shape, n_regions):
        """The reference of a bundle, checked; raises ValueError saying what does not fit."""
        covariates = Covariates.from_dict(record["covariates"])
        p = 1 + covariates.age + covariates.sex
        mask = np.asarray(arrays["voxel_mask"]).astype(bool)
        if mask.shape != tuple(grid_shape):
            raise ValueError(f"voxel_mask has shape {mask.shape}, not the grid's {tuple(grid_shape)}")
        shapes = {"voxel.coef": (p, int(mask.sum())), "voxel.spread": (int(mask.sum()),)}
        for name in record["features"]:
            if name not in FEATURES:
                raise ValueError(f"unknown feature {name!r}")
            shapes.update({f"{name}.coef": (p, n_regions), f"{name}.spread": (n_regions,)})
        for key, shape in shapes.items():
            value = arrays.get(key)
            if value is None or value.shape != shape or not np.isfinite(value).all():
                raise ValueError(f"{key} is missing, not finite or not of shape {shape}")
            if key.endswith("spread") and not (value > 0).all():
                raise ValueError(f"{key} holds a spread that is not positive")
        if record["flag_feature"] not in record["features"]:
            raise ValueError(f"the flag feature {record['flag_feature']!r} has no statistics")
        voxel = Statistics(np.asarray(arrays["voxel.coef"], np.float64), np.asarray(arrays["voxel.spread"], np.float64))
        regions = {name: Statistics(np.asarray(arrays[f"{name}.coef"], np.float64), np.asarray(arrays[f"{name}.spread"], np.float64))
                   for name in record["features"]}  # fmt: skip
        return cls(covariates, mask, voxel, regions, float(record["threshold"]), float(record["distance_threshold"]))


@dataclass(frozen=True)
class Built:
    """A reference and what its calibration measured on the held-out reference images."""

    reference: NormativeReference
    calibration: Calibration


def build(voxel_values, voxel_mask, region_values, ages, sexes, subjects, flags_per_image=1.0, n_folds=10):
    """The normative reference of n healthy images.

    ``voxel_values`` (n, V): grey level at the V voxels of ``voxel_mask``; ``region_values``:
    feature -> (n, 246), the flag feature among them; ``subjects`` (n,) keeps a subject's images
    in one fold of the cross-fitting that calibrates the threshold.
    """
    covariates = Covariates.of_reference(ages, sexes)
    design = covariates.design(ages, sexes)
    regions = {name: fit(values, design) for name, values in region_values.items()}
    heldout = cross_fitted_z(region_values[FLAG_FEATURE], design, subjects, n_folds, FEATURES[FLAG_FEATURE]["orientation"])
    calibration = calibrate(relative(heldout), flags_per_image)
    reference = NormativeReference(covariates, np.asarray(voxel_mask, bool), fit(voxel_values, design), regions,
                                   calibration.flag_z, float(distance(heldout).max()))  # fmt: skip
    return Built(reference, calibration)


@dataclass(frozen=True)
class Deviation:
    """One image against the reference."""

    voxel_z: np.ndarray  # on the grid, 0 outside the reference's voxel mask
    region_value: dict  # feature -> (246,)
    region_expected: dict  # feature -> (246,) the healthy value for the person's covariates (and overall level, for the flag feature)
    region_z: dict  # feature -> (246,); the flag feature's relative to the overall level
    atrophic: np.ndarray  # (246,) bool
    overall_level: float  # median region z of the flag feature before it was made relative
    distance: float
    reliable: bool  # within the reference's distance threshold
    age_adjusted: bool  # False when the reference adjusts for age but the person's age is unknown


def deviation(reference, image, region_values, age, sex):
    """z of one preprocessed image (on the grid) and of those of its region features that the
    reference has (``region_values``: feature -> (246,), the flag feature among them)."""
    design = reference.covariates.design([age], [sex])
    voxel_z = np.zeros(reference.voxel_mask.shape, np.float32)
    orientation = FEATURES[FLAG_FEATURE]["orientation"]
    if reference.voxel_mask.any():  # a class domain keeps regions only (model.bundle.write_class_domain)
        voxel_z[reference.voxel_mask] = relative(zscores(np.asarray(image)[reference.voxel_mask][None], design, reference.voxel, orientation))[0]
    values, expect, z = {}, {}, {}
    for name, stats in reference.regions.items():
        if name not in region_values:
            continue
        values[name] = np.asarray(region_values[name], np.float64)
        expect[name] = expected(design, stats)[0]
        z[name] = zscores(values[name][None], design, stats, FEATURES[name]["orientation"])[0]
    far = float(distance(z[FLAG_FEATURE]))
    level = float(overall_level(z[FLAG_FEATURE])[0])
    # z - level = orientation * (value - (expected + orientation * level * spread)) / spread: the table's columns keep z's formula
    z[FLAG_FEATURE] = z[FLAG_FEATURE] - level
    expect[FLAG_FEATURE] = expect[FLAG_FEATURE] + orientation * level * reference.regions[FLAG_FEATURE].spread
    return Deviation(voxel_z, values, expect, z, atrophic(z[FLAG_FEATURE], reference.flag_z), level, far,
                     far <= reference.max_distance, not reference.covariates.age or bool(np.isfinite(age)))  # fmt: skip
