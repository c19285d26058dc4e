"""Which relevance makes the best regions: attribution methods side by side on a cohort with known atrophy.

For every preprocessed T1w of a generated cohort (bids_pscore-synth, with its ground truth) this
scores the model's region P-scores from SPEC's even spread and from relevance-weighted spreads
(docs/relevance.md), normalises each by its own reference statistics from the model's training
split, and ranks the regions of the AD sessions outside that split against the truth. Prints one
row per method: seconds per session, lambda, region AUC, precision at recall 0.8 and best F1,
beside the ideal-cube ceiling of the even spread.

    python benchmarks/relevance_methods.py COHORT PREPROCESSED --model BUNDLE

PREPROCESSED holds the grid images (bids_pscore-train -w WORK puts them in WORK/preprocessed).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from validate_synthetic import ideal_cube_scores, ranking_quality  # noqa: E402

# (name, method, baseline, options, smoothing sigma in voxels)
VARIANTS = [
    ("gradient x input", "gradient_x_input", "mean", {}, 0.0),
    ("gradient x input, smoothed", "gradient_x_input", "mean", {}, 1.5),
    ("gradient x input vs controls", "gradient_x_input", "controls", {}, 0.0),
    ("integrated gradients vs controls", "integrated_gradients", "controls", {"steps": 8}, 0.0),
    ("integrated gradients vs controls, smoothed", "integrated_gradients", "controls", {"steps": 8}, 1.5),
    ("occlusion 5^3 vs controls", "occlusion", "controls", {"block": 5}, 0.0),
]


def grid_images(preprocessed, template):
    """(participant_id, session_id, image path, mask path) of every grid image: each file named as
    the participant level names a preprocessed T1w on ``template``'s grid."""
    from bids_pscore import bids
    from bids_pscore.derivatives import layout

    rows = []
    for path in sorted(Path(preprocessed).rglob("sub-*_T1w.nii.gz")):
        entities = bids.source_entities(path)
        paths = layout.session_outputs(entities, template, layout.PREPROCESSING) if "sub" in entities else {}
        if paths and path == Path(preprocessed) / paths["t1w_grid"]:
            rows.append(
                (f"sub-{entities['sub']}", f"ses-{entities['ses']}" if "ses" in entities else "n/a", path, Path(preprocessed) / paths["mask_grid"])
            )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cohort", type=Path, help="the generated BIDS cohort, with derivatives/groundtruth")
    parser.add_argument("preprocessed", type=Path, help="its preprocessed grid images")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--atrophied", type=float, default=0.05, help="true volume loss from which a region counts as atrophied")
    parser.add_argument("--variants", nargs="+", help="only these rows (by number, from 1)")
    parser.add_argument("--save", type=Path, help="keep the raw region scores of every map in this .npz")
    opts = parser.parse_args()

    import nibabel as nib
    import torch
    from scipy.ndimage import gaussian_filter

    from bids_pscore import pscore
    from bids_pscore.atlas import atlas_on_grid
    from bids_pscore.grid import N_CUBES, cut_cubes, paste_cubes
    from bids_pscore.model.bundle import load_bundle
    from bids_pscore.model.relevance import cube_relevance, selected_base

    torch.set_num_threads(2)
    variants = [VARIANTS[int(k) - 1] for k in opts.variants] if opts.variants else VARIANTS
    bundle = load_bundle(opts.model)
    split = bundle.metadata["training"]["split"]
    weights, selected = bundle.ensemble.weights_per_cube()
    chosen = bundle.ensemble.selected.numpy()
    base = selected_base(bundle.ensemble)
    atlas = atlas_on_grid()
    sizes = pscore.region_sizes(atlas)
    groups = pd.read_csv(opts.cohort / "participants.tsv", sep="\t").set_index("participant_id")["group"]
    truth = pd.read_csv(opts.cohort / "derivatives" / "groundtruth" / "regions.tsv", sep="\t")

    images = grid_images(opts.preprocessed, bundle.metadata["preprocessing"]["template"])
    load = lambda p: np.asarray(nib.load(p).dataobj, np.float32)  # noqa: E731
    controls = [row for row in images if split.get(row[0].removeprefix("sub-")) == "train" and groups[row[0]] == "CN"]
    control_mean = np.mean([cut_cubes(load(row[2]))[chosen] for row in controls], axis=0)[None]
    print(f"{len(images)} images; baseline: mean of {len(controls)} training controls", flush=True)

    n = len(images)
    region = {"even spread": np.zeros((n, 246))} | {v[0]: np.zeros((n, 246)) for v in variants}
    seconds = {v[0]: 0.0 for v in variants}
    p_image = np.zeros(n)
    for i, (_, _, path, mask_path) in enumerate(images):
        cubes, mask = cut_cubes(load(path))[None], load(mask_path) > 0
        with torch.no_grad():
            out = bundle.ensemble(torch.from_numpy(cubes))
        p_image[i] = float(out["p_image"][0])
        p_cube = pscore.cube_scores(out["p_cube"].numpy(), weights, selected)
        brain, overlap = pscore.brain_overlap(mask, atlas)
        region["even spread"][i] = pscore.region_scores(p_cube, brain, overlap, sizes)[0]
        for name, method, baseline, options, sigma in variants:
            start = time.perf_counter()
            relevance = cube_relevance(base, cubes[:, chosen], method, None if baseline == "mean" else control_mean, **options)[0]
            if sigma:
                relevance = np.stack([gaussian_filter(r, sigma, mode="constant") for r in relevance])
            on_grid = np.zeros((N_CUBES, 25, 25, 25), np.float32)
            on_grid[chosen] = relevance
            voxel_map = pscore.relevance_voxel_scores(p_cube, paste_cubes(on_grid)[None], mask[None])
            region[name][i] = pscore.region_means(voxel_map, atlas, sizes)[0]
            seconds[name] += time.perf_counter() - start
        if i % 20 == 0:
            print(f"  {i + 1}/{n}", flush=True)

    subjects = np.array([row[0] for row in images])
    is_ad = groups.reindex(subjects).to_numpy() == "AD"
    train = np.array([split.get(s.removeprefix("sub-")) == "train" for s in subjects])
    if opts.save:
        np.savez(opts.save, subjects=subjects, sessions=[row[1] for row in images], is_ad=is_ad, train=train, p_image=p_image,
                 **{f"region {name}": values for name, values in region.items()})  # fmt: skip
    losses = truth.pivot_table(index=["participant_id", "session_id"], columns="index", values="volume_loss")
    held_ad = np.flatnonzero(~train & is_ad)
    atrophied = np.stack([losses.loc[(images[i][0], images[i][1])].reindex(range(1, 247), fill_value=0).to_numpy() >= opts.atrophied
                          for i in held_ad])  # fmt: skip
    keep = atrophied.any(axis=1)
    print(f"\nregions of {keep.sum()} AD sessions outside the training split ({atrophied[keep].sum()} atrophied, loss >= {opts.atrophied:.0%})")
    held_cn = np.flatnonzero(~train & ~is_ad)
    print(f"{'map':44s} {'s/session':>9s} {'lambda':>7s} {'AUC':>6s} {'P@R0.8':>7s} {'best F1':>8s}  flagged: AD / CN sessions")
    for name, values in region.items():
        reference = pscore.reference_statistics(values[train], is_ad[train], p_image[train] >= 0.5)
        norm = pscore.normalise_regions(values[held_ad][keep], reference.region_min, reference.region_max)
        area, at_recall, (f1, _, _) = ranking_quality(norm.ravel(), atrophied[keep].ravel())
        flagged_cn = pscore.normalise_regions(values[held_cn], reference.region_min, reference.region_max) > reference.lambda_
        timing = f"{seconds[name] / n:9.2f}" if name in seconds else f"{'':9s}"
        print(
            f"{name:44s} {timing} {reference.lambda_:7.3f} {area:6.3f} {at_recall:7.3f} {f1:8.3f}  "
            f"{np.mean((norm > reference.lambda_).any(axis=1)):.2f} / {np.mean(flagged_cn.any(axis=1)):.2f}"
        )
    area, at_recall, (f1, _, _) = ranking_quality(ideal_cube_scores(atrophied[keep]).ravel(), atrophied[keep].ravel())
    print(f"{'ideal cubes, even spread (ceiling)':44s} {'':9s} {'':7s} {area:6.3f} {at_recall:7.3f} {f1:8.3f}")


if __name__ == "__main__":
    main()
