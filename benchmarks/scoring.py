"""Scoring speed (SPEC sections 5 and 10): one session with all its files, 1,000 sessions in one
call, and one session's comparison with a normative reference.

Usage: python benchmarks/scoring.py. Targets on a 2-core machine: one session, from 150
probabilities to every level and every file, <= 0.3 s; 1,000 sessions without files <= 10 s;
the normative outputs of one session (z map, region table, summary record) <= 1 s.
"""

import tempfile
import time

import numpy as np

from bids_pscore import atlas, normative, pscore
from bids_pscore.derivatives import records, session_files
from bids_pscore.grid import GRID_SHAPE, N_CUBES
from bids_pscore.preprocess import steps


def brain_masks(n, rng):
    """n brain masks: the template's, each shifted by a few voxels."""
    _, template_mask = steps.template_on_grid("MNI152NLin2009aSym")
    base = np.asarray(template_mask.dataobj) > 0
    masks = np.empty((n, *GRID_SHAPE), bool)
    for i in range(n):
        masks[i] = np.roll(base, tuple(rng.integers(-3, 4, 3)), axis=(0, 1, 2))
    return masks


def model(rng):
    selected = np.zeros(N_CUBES, bool)
    selected[rng.choice(N_CUBES, 35, replace=False)] = True
    return rng.normal(0, 0.2, N_CUBES), selected


def main():
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    grid_atlas = atlas.atlas_on_grid()
    atlas_s = time.perf_counter() - start
    sizes = pscore.region_sizes(grid_atlas)
    weights, selected = model(rng)
    masks = brain_masks(1000, rng)
    reference = pscore.Reference(np.full(246, -0.01), np.full(246, 0.01), 0.7)

    with tempfile.TemporaryDirectory() as out:
        times = []
        for repeat in range(5):
            p_ad = rng.uniform(0, 1, (1, N_CUBES))
            start = time.perf_counter()
            m, n = pscore.brain_overlap(masks[:1], grid_atlas)
            scores = pscore.score(p_ad, weights, selected, m, n, sizes, reference)
            voxel_map = pscore.voxel_scores(scores.cube, masks[0])[0]
            region_map = pscore.paint_regions(scores.region_norm, grid_atlas)[0]
            session_files.write_session(
                out,
                {"sub": f"{repeat:02d}"},
                "MNI152NLin2009aSym",
                scores,
                voxel_map,
                region_map,
                0.5,
                "AD",
                weights,
                selected,
                reference.lambda_,
                {"name": "bench"},
                "sub-01/anat/sub-01_T1w.nii.gz",
            )
            times.append(time.perf_counter() - start)

    p_ad = rng.uniform(0, 1, (1000, N_CUBES))
    start = time.perf_counter()
    m, n = pscore.brain_overlap(masks, grid_atlas)
    overlap_s = time.perf_counter() - start
    start = time.perf_counter()
    scores = pscore.score(p_ad, weights, selected, m, n, sizes, reference)
    score_s = time.perf_counter() - start
    assert scores.region.shape == (1000, 246)

    # a reference of 60 healthy images over the template's brain voxels (the demo model's has 121)
    voxel_mask = masks[0]
    images = rng.uniform(0.2, 0.8, (60, int(voxel_mask.sum()))).astype(np.float32)
    regions = {"grey_level": rng.uniform(0.2, 0.8, (60, 246)), "pscore": rng.uniform(0, 1, (60, 246))}
    start = time.perf_counter()
    built = normative.build(images, voxel_mask, regions, rng.uniform(20, 80, 60), rng.choice([-0.5, 0.5], 60), np.arange(60))
    build_s = time.perf_counter() - start
    labels = atlas.region_table()["label"].to_numpy()
    record = {**built.reference.record(), "calibration": {}, "reference": {}}
    normative_times = []
    with tempfile.TemporaryDirectory() as out:
        for repeat in range(5):
            image = np.where(voxel_mask, rng.uniform(0.2, 0.8, GRID_SHAPE), 0).astype(np.float32)
            start = time.perf_counter()
            values = {"grey_level": pscore.region_means(image, grid_atlas, sizes)[0], "pscore": scores.region_norm[0]}
            deviation = normative.deviation(built.reference, image, values, 60.0, 0.5)
            summary = records.normative_summary(deviation, record, labels, 60.0, "F")
            session_files.write_normative(out, {"sub": f"{repeat:02d}"}, "MNI152NLin2009aSym", deviation, summary, {"name": "bench"},
                                        "sub-01/anat/sub-01_T1w.nii.gz")  # fmt: skip
            normative_times.append(time.perf_counter() - start)

    print(f"{'what':<58}{'seconds':>9}{'target':>8}")
    print(f"{'atlas onto the grid (once per process)':<58}{atlas_s:9.2f}")
    print(f"{'one session: all levels and all files (median of 5)':<58}{np.median(times):9.3f}{'0.3':>8}")
    print(f"{'1,000 sessions: brain/region/cube voxel counts':<58}{overlap_s:9.2f}")
    print(f"{'1,000 sessions: every level from those counts':<58}{score_s:9.2f}")
    print(f"{'1,000 sessions in one call, total':<58}{overlap_s + score_s:9.2f}{'10':>8}")
    print(f"{'normative reference of 60 images (fit and calibration)':<58}{build_s:9.2f}")
    print(f"{'one session: normative z, flags and files (median of 5)':<58}{np.median(normative_times):9.3f}{'1':>8}")


if __name__ == "__main__":
    main()
