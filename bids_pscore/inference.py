"""One preprocessed image through the ensemble into every P-score level (SPEC 4 and 5): the one
inference function that the participant level and the normative reference both call."""

from dataclasses import dataclass

import numpy as np
import torch

from . import pscore
from .grid import cut_cubes


@dataclass(frozen=True)
class Scored:
    scores: pscore.Scores  # of one image
    ad_probability: float  # sigmoid(image_logit + the class offset)
    image_logit: float  # the meta-classifier's, log(p / (1 - p)) before any class offset
    cubes: np.ndarray  # (1, 150, 25, 25, 25), for the relevance maps


def score_image(ensemble, reference, image, mask, grid_atlas, sizes, class_offset=0.0):
    """The P-scores of one image on the grid (float32 in [0, 1]) with its brain mask, normalised by
    ``reference`` (``pscore.Reference``); the AD probability with ``class_offset`` added to the
    meta-classifier's logit (a site's calibration, ``normative.class_offset``)."""
    cubes = cut_cubes(np.asarray(image, np.float32))[None]
    with torch.no_grad():
        out = ensemble(torch.from_numpy(cubes))
    weights, selected = ensemble.weights_per_cube()
    brain, overlap = pscore.brain_overlap(mask, grid_atlas)
    scores = pscore.score(out["p_cube"].numpy(), weights, selected, brain, overlap, sizes, reference)
    logit = float(out["image_logit"][0])
    return Scored(scores, float(torch.sigmoid(torch.tensor(logit + class_offset, dtype=torch.float64))), logit, cubes)
