"""Every preprocessing parameter that changes what the network sees, in one object.

A model bundle stores ``PreprocParams.to_dict()`` and inference rebuilds the object with
``from_dict``, so an image is always preprocessed the way the model's training images were
(SPEC section 2). There is no second default anywhere else.
"""

from dataclasses import asdict, dataclass, fields

from ..errors import UsageError


@dataclass(frozen=True)
class PreprocParams:
    # nilearn's MNI152 2009a nonlinear symmetric brain template, the registration target
    template: str = "MNI152NLin2009aSym"
    # N4 works on a grid coarsened to about this spacing: 6 mm gave the same field as 4 mm
    # (r = 0.999) in a third of the time on a 1 mm head, 8 mm the same as 6 mm (r = 0.994-0.996
    # on a 1 mm and a 2 mm head with a bias) in half the time (benchmarks/preprocess.py)
    n4_shrink_mm: float = 8.0
    n4_iterations: tuple = (50, 50, 30)
    # N4 fits its field on the head: voxels above this fraction of the way from the 1st to the 99th
    # intensity percentile; a scan's noisy background can fill most of the volume, and fitting it
    # tripled N4's time
    n4_mask_fraction: float = 0.1
    # an input whose non-zero voxels fill less than this is taken as already skull-stripped
    stripped_max_volume_ml: float = 2500.0
    # deepbet's network sees the head's bounding box resampled to this many voxels a side (its own
    # run() uses 256): 192 halves its time at the same mask (steps.brain_mask)
    skullstrip_network_size: int = 192
    # ANTs rigid and affine stages run on a copy of the grid at this spacing, SyN on the grid.
    # Iterations per level, coarsest first, each level at half the spacing of the one before and
    # ending at the stage's grid; levels of 0 iterations at the end are not run (steps.register).
    # The linear stages run at their coarsest level only (8 mm): on 22 real heads of three sites
    # the registration took 10.2 s rather than 13.8 with (200, 100, 0) each, at the same template
    # correlation (0.652 and 0.651) and brain-mask Dice 0.993 between the two, SyN placing what the
    # 4 mm level did; SyN's finer level costs 0.5-0.7 s an iteration on the grid's 3 mm level, and
    # 5 rather than 10 there (7.3 s) lost alignment (0.642), as 10 rather than 20 had lost region
    # signal (benchmark normative AUC 0.814 -> 0.807)
    registration_mm: float = 2.0
    rigid_iterations: tuple = (200, 0, 0)
    affine_iterations: tuple = (200, 0, 0)
    syn_iterations: tuple = (40, 10, 0)
    interpolation: str = "linear"
    fwhm_mm: float = 8.0
    # how the smoothed brain is put on [0, 1] (SPEC 2.7). "percentile", the patent's, divides by
    # that percentile of the brain, a scale that carries the scanner's contrast: every healthy head
    # of another site was called AD (white/grey ratio 1.56 there, 1.27 on the training scanner).
    # "tissue" maps the brain linearly so that its median in the template's grey matter
    # (probability above tissue_probabilities[0]) and in its white matter (above [1]) land at
    # tissue_levels: those of the IXI heads under the percentile's scale, so that a network trained
    # on either sees the same range. With the demo network unchanged it took that site from 38 of
    # 38 called AD to 0 at the same validation AUC (0.974; docs/validation.md)
    intensity_standardisation: str = "tissue"
    norm_percentile: float = 99.0
    tissue_levels: tuple = (0.758, 0.941)
    tissue_probabilities: tuple = (0.7, 0.9)
    # ANTs samples its similarity metric at random: on one thread the same seed gives the same
    # registration, so training and inference share this one through the bundle. ANTs takes 0 for
    # "seed from the clock" (two runs with seed 0 differed by up to 0.9 mm), so 0 is refused
    registration_seed: int = 20250812

    def __post_init__(self):
        if not 0.0 <= self.n4_mask_fraction < 1.0:
            raise UsageError(f"n4_mask_fraction (the N4 mask fraction) must be in [0, 1), got {self.n4_mask_fraction}")
        if self.fwhm_mm < 0:
            raise UsageError(f"fwhm_mm (the smoothing) must be >= 0 mm, got {self.fwhm_mm}")
        if not 50.0 <= self.norm_percentile <= 100.0:
            raise UsageError(f"norm_percentile (the intensity normalisation) must be in [50, 100], got {self.norm_percentile}")
        if self.intensity_standardisation not in ("percentile", "tissue"):
            raise UsageError(f"intensity_standardisation {self.intensity_standardisation!r} is unknown (percentile or tissue)")
        if not 0.0 < self.tissue_levels[0] < self.tissue_levels[1] <= 1.0:
            raise UsageError(f"tissue_levels (grey, white) must rise within (0, 1], got {list(self.tissue_levels)}")
        if not all(0.0 <= p < 1.0 for p in self.tissue_probabilities):
            raise UsageError(f"tissue_probabilities (grey, white) must be in [0, 1), got {list(self.tissue_probabilities)}")
        if self.registration_seed < 1:
            raise UsageError(f"registration_seed must be at least 1 (ANTs seeds 0 from the clock), got {self.registration_seed}")
        if self.skullstrip_network_size % 32 or not 128 <= self.skullstrip_network_size <= 256:
            raise UsageError(f"skullstrip_network_size must be a multiple of 32 from 128 to 256, got {self.skullstrip_network_size}")
        if self.interpolation not in ("linear", "bSpline", "lanczosWindowedSinc"):
            raise UsageError(f"interpolation {self.interpolation!r} is unknown (linear, bSpline or lanczosWindowedSinc)")

    def to_dict(self):
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values):
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise UsageError(f"unknown preprocessing parameters {sorted(unknown)}; known: {sorted(known)}")
        # a bundle written before the standardisation could be chosen divided by the percentile
        values = {"intensity_standardisation": "percentile", **values}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    @property
    def standardisation_text(self):
        """How the smoothed brain was put on [0, 1], for the methods text and the sidecars."""
        if self.intensity_standardisation == "percentile":
            return f"divided by the {self.norm_percentile:g}th percentile of brain intensities, clipped to [0, 1]"
        grey, white = self.tissue_probabilities
        return (f"mapped linearly so that its median in the template's grey matter (probability above {grey:g}) and white matter "
                f"(above {white:g}) were {self.tissue_levels[0]:g} and {self.tissue_levels[1]:g}, clipped to [0, 1]")  # fmt: skip
