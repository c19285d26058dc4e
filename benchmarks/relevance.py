"""Speed and memory of the relevance-weighted P-score (docs/relevance.md), per session.

Usage: python benchmarks/relevance.py [--model FOLDER] [--repeats 5] [--device cpu]
Times, for one session on the template brain, the relevance of every selected cube (the
bundle's method), the relevance-weighted voxel map and its region scores, and reports the peak
memory it adds to the process. Targets on 2 CPU cores: <= 3 s and <= 0.5 GB a session.
"""

import argparse
import resource
import time

import numpy as np


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a model bundle with a relevance entry (default: the demo model)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args()

    import torch

    from bids_pscore import pscore
    from bids_pscore.atlas import atlas_on_grid
    from bids_pscore.cohort import load_model
    from bids_pscore.grid import cut_cubes
    from bids_pscore.model.relevance import relevance_on_grid, selected_base
    from bids_pscore.preprocess import steps

    torch.set_num_threads(opts.threads)
    bundle = load_model(opts.model)
    record = bundle.metadata["relevance"]
    template, template_mask = steps.template_on_grid("MNI152NLin2009aSym")
    image = np.asarray(template.dataobj, np.float32)
    mask = np.asarray(template_mask.dataobj) > 0
    atlas = atlas_on_grid()
    sizes = pscore.region_sizes(atlas)
    cubes = cut_cubes(image)[None]
    weights, selected = bundle.ensemble.weights_per_cube()
    with torch.no_grad():
        p_cube = pscore.cube_scores(bundle.ensemble(torch.from_numpy(cubes))["p_cube"].numpy(), weights, selected)
    base, chosen = selected_base(bundle.ensemble), bundle.ensemble.selected.numpy()

    before = peak_rss_gb()
    times = {"relevance of the selected cubes": [], "voxel map and region scores": []}
    for _ in range(opts.repeats):
        start = time.perf_counter()
        relevance = relevance_on_grid(base, cubes, chosen, record)
        middle = time.perf_counter()
        pscore.region_means(pscore.relevance_voxel_scores(p_cube, relevance, mask[None]), atlas, sizes)
        times["relevance of the selected cubes"].append(middle - start)
        times["voxel map and region scores"].append(time.perf_counter() - middle)
    print(
        f"{record['method']} {record.get('options', {})}, smoothing {record.get('smoothing_voxels', 0)} voxels, "
        f"{len(chosen)} cubes, {opts.threads} threads, median of {opts.repeats}"
    )
    print(f"{'step':40s} {'seconds':>8s}")
    for name, values in times.items():
        print(f"{name:40s} {np.median(values):8.2f}")
    total = np.median(np.sum(list(times.values()), axis=0))
    print(f"{'a session':40s} {total:8.2f}   target <= 3 s")
    print(f"{'peak memory added (GB)':40s} {peak_rss_gb() - before:8.2f}   target <= 0.5 GB")


if __name__ == "__main__":
    main()
