"""The P-score of SPEC section 5, as pure numpy functions without I/O.

Every function takes a leading image axis, so one call scores one or many sessions. Shapes:
n images, 150 cubes, 246 regions, the grid (121, 145, 121).

    P_cube(i,c)   = w_c * p_ic for selected cubes, 0 for the others
    P_voxel(i,v)  = P_cube(i, c(v)) / M_ic on brain voxels, 0 elsewhere (and 0 where M_ic = 0)
    P_region(i,k) = sum_{v in R_k} P_voxel(i,v) / |R_k|
    Pn(i,k)       = clip((P_region(i,k) - min_k) / (max_k - min_k), 0, 1)
    P_whole(i)    = sum_k Pn(i,k)
    degenerative  = Pn(i,k) > lambda

Beside SPEC's even spread, the relevance-weighted voxel map (docs/relevance.md) spreads each
cube's score in proportion to a relevance r(i,v) >= 0 of its brain voxels; regions, normalisation
and flags then follow from that map as above, with reference statistics of their own:

    P_voxel_rel(i,v) = P_cube(i, c(v)) * r(i,v) / sum_{u in c, brain} r(i,u)
"""

from dataclasses import dataclass

import numpy as np

from .atlas import N_REGIONS
from .grid import GRID_SHAPE, N_CUBES, cube_index_map, paint_cubes

# SPEC 4: an image is predicted AD when the meta-classifier's probability reaches this
AD_THRESHOLD = 0.5


def cube_scores(p_ad, weights, selected):
    """P_cube = w_c * p_ic on the selected cubes, 0 on the others; (n, 150)."""
    p_ad = np.atleast_2d(np.asarray(p_ad, np.float64))
    keep = np.asarray(selected, bool)
    return np.where(keep, np.asarray(weights, np.float64) * p_ad, 0.0)


def region_sizes(atlas):
    """|R_k|: grid voxels of each region k = 1..246; (246,)."""
    return np.bincount(np.asarray(atlas).ravel(), minlength=N_REGIONS + 1)[1:]


def brain_voxels_per_cube(mask):
    """M_c: brain voxels of one grid mask in each cube; (150,)."""
    return np.bincount(cube_index_map()[np.asarray(mask, bool)], minlength=N_CUBES)


def brain_overlap(masks, atlas):
    """Voxel counts that turn cube scores into voxel and region scores.

    Returns M (n, 150), the brain voxels of each image in each cube, and N (n, 246, 150),
    the brain voxels of each image in region k and cube c. One bincount per image: no loop
    over regions or voxels.
    """
    masks = np.asarray(masks, bool).reshape(-1, *GRID_SHAPE)
    cubes = cube_index_map().ravel()
    labels = np.asarray(atlas).ravel().astype(np.int64)
    in_atlas = np.flatnonzero(labels)
    region_cube = (labels[in_atlas] - 1) * N_CUBES + cubes[in_atlas]
    m = np.empty((len(masks), N_CUBES), np.int64)
    n = np.empty((len(masks), N_REGIONS, N_CUBES), np.int32)
    for i, mask in enumerate(masks):
        m[i] = brain_voxels_per_cube(mask)
        mask = mask.ravel()
        n[i] = np.bincount(region_cube[mask[in_atlas]], minlength=N_REGIONS * N_CUBES).reshape(N_REGIONS, N_CUBES)
    return m, n


def per_voxel_of_cube(p_cube, brain_voxels):
    """P_cube / M_ic: the score each brain voxel of a cube carries; 0 where M_ic = 0."""
    m = np.asarray(brain_voxels, np.float64)
    return np.divide(p_cube, m, out=np.zeros(np.shape(p_cube)), where=m > 0)


def voxel_scores(p_cube, masks):
    """P_voxel on the grid; (n, 121, 145, 121) float32."""
    masks = np.asarray(masks, bool).reshape(-1, *GRID_SHAPE)
    m = np.stack([brain_voxels_per_cube(mask) for mask in masks])
    return np.where(masks, paint_cubes(per_voxel_of_cube(p_cube, m)), 0.0).astype(np.float32)


def relevance_voxel_scores(p_cube, relevance, masks):
    """P_cube spread over each cube's brain voxels in proportion to their relevance; (n, *grid) float32.

    ``relevance`` (n, *grid) >= 0. A cube whose brain voxels carry no relevance spreads its score
    evenly, as SPEC 5 does, so that every cube still sums to P_cube.
    """
    masks = np.asarray(masks, bool).reshape(-1, *GRID_SHAPE)
    relevance = np.asarray(relevance, np.float64).reshape(masks.shape)
    p_cube = np.atleast_2d(np.asarray(p_cube, np.float64))
    cubes = cube_index_map()
    out = np.zeros(masks.shape, np.float32)
    for i, mask in enumerate(masks):
        brain_relevance = np.where(mask, relevance[i], 0.0)
        totals = np.bincount(cubes.ravel(), weights=brain_relevance.ravel(), minlength=N_CUBES)
        even = per_voxel_of_cube(p_cube[i], brain_voxels_per_cube(mask))
        weighted = np.divide(p_cube[i], totals, out=np.zeros(N_CUBES), where=totals > 0)
        out[i] = np.where(mask, np.where(totals[cubes] > 0, weighted[cubes] * brain_relevance, even[cubes]), 0.0)
    return out


def region_means(voxel_maps, atlas, sizes):
    """sum over R_k of a voxel map divided by |R_k|: SPEC 5's region level of any voxel map; (n, 246)."""
    labels = np.asarray(atlas).ravel()
    maps = np.asarray(voxel_maps, np.float64).reshape(-1, labels.size)
    sums = np.stack([np.bincount(labels, weights=m, minlength=N_REGIONS + 1)[1:] for m in maps])
    sizes = np.asarray(sizes, np.float64)
    return np.divide(sums, sizes, out=np.zeros(sums.shape), where=sizes > 0)


def region_scores(p_cube, brain_voxels, region_cube_voxels, sizes):
    """P_region(i,k) = sum over the brain voxels of R_k of P_voxel, divided by |R_k|; (n, 246)."""
    per_voxel = per_voxel_of_cube(p_cube, brain_voxels)
    sums = np.einsum("ikc,ic->ik", region_cube_voxels, per_voxel)
    sizes = np.asarray(sizes, np.float64)
    return np.divide(sums, sizes, out=np.zeros(sums.shape), where=sizes > 0)


def paint_regions(region_values, atlas):
    """Region values painted over their regions on the grid, 0 outside the atlas; (n, *grid)."""
    values = np.atleast_2d(np.asarray(region_values, np.float32))
    padded = np.concatenate([np.zeros((len(values), 1), np.float32), values], axis=1)
    return padded[:, np.asarray(atlas)]


def normalise_regions(p_region, region_min, region_max):
    """Min-max normalisation by reference statistics, clipped to [0, 1].

    A region whose reference range is empty (max_k = min_k) gets 0: it never varied.
    """
    span = np.asarray(region_max, np.float64) - np.asarray(region_min, np.float64)
    centred = np.asarray(p_region, np.float64) - region_min
    scaled = np.divide(centred, span, out=np.zeros(np.shape(centred)), where=span > 0)
    return np.clip(scaled, 0.0, 1.0)


def whole_brain(p_region_norm):
    """P_whole = sum of the normalised region scores; (n,), between 0 and 246."""
    return np.asarray(p_region_norm).sum(axis=-1)


def degenerative(p_region_norm, lambda_):
    """Regions whose normalised score exceeds lambda; (n, 246) bool."""
    return np.asarray(p_region_norm) > lambda_


@dataclass(frozen=True)
class Reference:
    """Statistics of the model's reference images (its validation split, SPEC 7), kept in the bundle."""

    region_min: np.ndarray
    region_max: np.ndarray
    lambda_: float

    def to_dict(self):
        return {"region_min": self.region_min.tolist(), "region_max": self.region_max.tolist(), "lambda": float(self.lambda_)}

    @classmethod
    def from_dict(cls, values):
        return cls(np.asarray(values["region_min"], np.float64), np.asarray(values["region_max"], np.float64), float(values["lambda"]))


def reference_statistics(p_region, is_ad, predicted_ad):
    """Per-region min and max over the reference images, and lambda.

    lambda = mean + 2 std (population std, ddof = 0) of the normalised region scores over all
    regions of the AD images that the ensemble classified as AD.
    """
    p_region = np.atleast_2d(np.asarray(p_region, np.float64))
    region_min, region_max = p_region.min(axis=0), p_region.max(axis=0)
    correct_ad = np.asarray(is_ad, bool) & np.asarray(predicted_ad, bool)
    if not correct_ad.any():
        raise ValueError("no AD image of the reference cohort was classified as AD: lambda is undefined")
    pn = normalise_regions(p_region[correct_ad], region_min, region_max)
    return Reference(region_min, region_max, float(pn.mean() + 2.0 * pn.std()))


@dataclass(frozen=True)
class Scores:
    """The P-score of n images at every level but the voxel maps (see ``voxel_scores``)."""

    p_ad: np.ndarray  # (n, 150) base classifiers' AD probabilities
    cube: np.ndarray  # (n, 150)
    brain_voxels: np.ndarray  # (n, 150) M_ic
    region: np.ndarray  # (n, 246) raw
    region_norm: np.ndarray  # (n, 246)
    whole: np.ndarray  # (n,)
    degenerative: np.ndarray  # (n, 246) bool


def score(p_ad, weights, selected, brain_voxels, region_cube_voxels, sizes, reference):
    """Every level from the base classifiers' AD probabilities and the overlap counts."""
    p_cube = cube_scores(p_ad, weights, selected)
    region = region_scores(p_cube, brain_voxels, region_cube_voxels, sizes)
    return score_regions(p_ad, p_cube, brain_voxels, region, reference)


def score_regions(p_ad, p_cube, brain_voxels, region, reference):
    """Normalisation, whole brain and flags of raw region scores (from either voxel map)."""
    norm = normalise_regions(region, reference.region_min, reference.region_max)
    return Scores(
        p_ad=np.atleast_2d(np.asarray(p_ad, np.float64)),
        cube=p_cube,
        brain_voxels=np.asarray(brain_voxels),
        region=region,
        region_norm=norm,
        whole=whole_brain(norm),
        degenerative=degenerative(norm, reference.lambda_),
    )
