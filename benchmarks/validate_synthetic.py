"""Does the P-score find what it should? Validation on a fresh synthetic cohort with known atrophy.

Usage: python benchmarks/validate_synthetic.py [--base BIDS_DIR] [--subjects 20] [--sessions K] [--seed 2026]
                                             [--model FOLDER] [--work DIR] [--participant-label 01 02 ...]

Generates a cohort with a seed the demo model never saw and a re-scan of the same brains (another
acquisition seed: pose, voxel grid, bias field, noise), runs the participant level on both, and
prints:
- AUC, AD vs CN, of the meta-classifier's AD probability and of the whole-brain P-score;
- lambda, how often the flags fire in AD and in CN sessions, and the share of an AD session's
  regions tied at its maximum normalised score;
- precision and recall of the degenerative-region flags against the regions whose true volume
  loss is at least --atrophied (pooled over sessions and regions);
- what any threshold could do with the same scores (AUC of the normalised region score, atrophied
  vs not, in AD sessions; precision at recall 0.8; best F1), and the same for ideal cube scores:
  every cube scores the share of its atlas voxels that lie in atrophied regions, spread over its
  voxels as SPEC 5 spreads P_cube. That is the ceiling of any 150-cube model, a property of the
  cube size (25 voxels, 37.5 mm) and the atlas, not of training;
- the same ranking measures for two baselines with no network, normative z-scores against the
  cohort's CN sessions: of each region's mean grey level ("normative regions": what the
  preprocessed intensities say region by region), and of SPEC 5's region score of a cube score
  that is the share of the cube's brain voxels 2 SD darker than the controls ("normative
  cubes": what a cube-level score can say when it sees only intensity);
- test-retest: ICC(3,1) of the whole-brain P-score and the median over regions of the
  correlation of the normalised region score between scan and re-scan (first sessions);
- with --base and 3 sessions or more: per subtype, Kendall's tau between the group level's order
  of involvement (onset_order.tsv over the subtype's AD subjects) and the truth's stages (the
  group level counts normative flags when the model has a normative reference, else lambda's);
- with a model that has a normative reference (SPEC 10): its atrophic flags' sensitivity per
  loss bin, false flags per CN session and the share of CN sessions with any, precision and
  recall in AD sessions, the region AUC of each feature's z, and the test-retest Dice of flags.

Without --base the cohort is made of template heads (seed 2026, --subjects of them). With --base,
each subject of a BIDS dataset of healthy heads becomes a cohort subject (bids_pscore-synth
--base; docs/disease_model.md), by default the first half of those the demo model's recipe kept
out (every fourth subject in label order: bids_pscore.synth.demo.validation_labels; the quick
start's demo heads come from the other half), with 3 sessions on the base scans themselves; the re-scan is of the
first session, scanned anew by the generator's scanner model (--simulate-scanner: another pose, grid, bias and noise).
Targets: AUC >= 0.95 (template) or reported (base), region AUC >= 0.85, lambda < 1, at most 5% of
an AD session's regions tied at its maximum, ICC >= 0.95, median correlation >= 0.9.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def icc_3_1(test, retest):
    """ICC(3,1), two-way mixed, consistency, single measurement (Shrout and Fleiss 1979)."""
    data = np.column_stack([test, retest]).astype(float)
    n, k = data.shape
    grand = data.mean()
    ms_rows = k * ((data.mean(axis=1) - grand) ** 2).sum() / (n - 1)
    residual = data - data.mean(axis=1, keepdims=True) - data.mean(axis=0, keepdims=True) + grand
    ms_error = (residual**2).sum() / ((n - 1) * (k - 1))
    return (ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error)


def ranking_quality(scores, truth):
    """AUC, precision at recall 0.8, and the best F1 (with its precision and recall) of ``scores``
    ranking the ``truth`` regions; both pooled over sessions and regions."""
    from bids_pscore.model.training import auc

    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(truth[order])
    flagged = np.arange(1, len(order) + 1)
    precision, recall = hits / flagged, hits / truth.sum()
    at_recall = precision[np.searchsorted(recall, 0.8)]
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1))
    return auc(scores, truth)[0], at_recall, (f1[best], precision[best], recall[best])


def ideal_cube_scores(atrophied):
    """Region scores from ideal cubes: each cube scores the share of its atlas voxels in the
    ``atrophied`` regions ((n, 246) bool); a region averages its voxels' cube scores."""
    from bids_pscore.atlas import atlas_on_grid
    from bids_pscore.grid import N_CUBES, cube_index_map
    from bids_pscore.pscore import N_REGIONS

    atlas = atlas_on_grid()
    inside = atlas > 0
    voxels = np.zeros((N_REGIONS + 1, N_CUBES))
    np.add.at(voxels, (atlas[inside], cube_index_map()[inside]), 1)
    voxels = voxels[1:]  # (246, 150) atlas voxels of each region in each cube
    cube_share = (atrophied.astype(float) @ voxels) / np.maximum(voxels.sum(axis=0), 1)
    return cube_share @ (voxels / voxels.sum(axis=1, keepdims=True)).T


def participant(bids_dir, out_dir, work_dir, model, labels):
    cmd = [sys.executable, "-m", "bids_pscore.cli", str(bids_dir), str(out_dir), "participant", "-w", str(work_dir)]
    cmd += ["--model", str(model)] if model else []
    cmd += ["--participant-label", *labels] if labels else []
    subprocess.run(cmd, check=False)


# the summary and region table of each spread (keys of layout.SESSION_OUTPUTS): SPEC's even one, and the
# relevance-weighted one when the model has it
MAPS = {"even spread (SPEC)": ("summary", "region_table"), "relevance-weighted": ("relevance_summary", "relevance_region_table")}


def scored_sessions(out_dir):
    """((participant_id, session_id), the session's outputs) of every scored session in ``out_dir``."""
    from bids_pscore import bids
    from bids_pscore.derivatives import layout

    for summary_path in layout.summary_files(out_dir):
        entities = bids.source_entities(summary_path)
        template = json.loads(summary_path.read_text())["Space"]
        yield (
            (f"sub-{entities['sub']}", f"ses-{entities['ses']}"),
            {k: Path(out_dir) / v for k, v in layout.session_outputs(entities, template).items()},
        )


def collect(out_dir):
    """Per session: summary values, and per map the normalised region scores and flags, from the participant outputs."""
    sessions, regions = [], {name: {} for name in MAPS}
    for (sub, ses), outputs in scored_sessions(out_dir):
        summary = json.loads(outputs["summary"].read_text())
        row = {"participant_id": sub, "session_id": ses, "ad_probability": summary["ADProbability"], "whole": summary["WholeBrainPScore"]}
        for name, (summary_key, table_key) in MAPS.items():
            if outputs[summary_key].is_file():
                row[f"lambda {name}"] = json.loads(outputs[summary_key].read_text())["Lambda"]
                table = pd.read_csv(outputs[table_key], sep="\t")
                regions[name][(sub, ses)] = table.set_index("index")[["p_region_norm", "degenerative"]]
        sessions.append(row)
    return pd.DataFrame(sessions).set_index(["participant_id", "session_id"]), {k: v for k, v in regions.items() if v}


def region_measures(regions, sessions, is_ad, losses, atrophied_from):
    """Flags and ranking of one map's normalised region scores against the truth, over ``sessions``."""
    tp = fp = fn = 0
    scores, truth, tied, flags = [], [], [], []
    for key, ad in zip(sessions, is_ad):
        table = regions[key]
        atrophied = losses.get(key, pd.Series(dtype=float)).reindex(table.index, fill_value=0.0).to_numpy() >= atrophied_from
        flagged = table["degenerative"].to_numpy(bool)
        flags.append(flagged.sum())
        tp, fp, fn = tp + (flagged & atrophied).sum(), fp + (flagged & ~atrophied).sum(), fn + (~flagged & atrophied).sum()
        if ad and atrophied.any():
            norm = table["p_region_norm"].to_numpy()
            scores.append(norm)
            truth.append(atrophied)
            tied.append(np.mean(norm == norm.max()))
    flags, truth = np.array(flags), np.array(truth)
    return {"flags": flags, "tp": tp, "fp": fp, "fn": fn, "tied": np.array(tied), "truth": truth,
            "ranking": ranking_quality(np.concatenate(scores), truth.ravel())}  # fmt: skip


def normative_baselines(out_dir, sessions, is_ad, truth):
    """Region rankings with no network: how much of the atrophy the preprocessed images show against
    the cohort's controls. Each region's feature is z-scored against the CN sessions (which are never
    ranked), and the AD sessions' regions ranked by it:
    - "normative regions": the region's mean grey level, lower = more atrophied;
    - "normative cubes": per cube, the share of its brain voxels more than 2 SD darker than the
      controls' mean at that voxel, spread evenly over the cube's voxels as SPEC 5 spreads P_cube.
    The first bounds what intensity can say region by region, the second what a cube-level score can."""
    import nibabel as nib

    from bids_pscore import pscore
    from bids_pscore.atlas import atlas_on_grid
    from bids_pscore.derivatives import layout
    from bids_pscore.grid import N_CUBES, cube_index_map
    from bids_pscore.model.preprocessing import PreprocParams

    atlas = atlas_on_grid()
    sizes = pscore.region_sizes(atlas)
    template = PreprocParams().template

    def image(key):
        path = Path(out_dir) / layout.output_path({"sub": key[0].removeprefix("sub-"), "ses": key[1].removeprefix("ses-")}, "t1w_grid", template)
        return np.asarray(nib.load(path).dataobj, np.float64)

    controls = [key for key, ad in zip(sessions, is_ad) if not ad]
    # the voxel-wise mean and SD are summed image by image and the controls read again below,
    # rather than holding every control image (17 MB each) in memory
    total = np.zeros(atlas.shape)
    squares = np.zeros(atlas.shape)
    for key in controls:
        x = image(key)
        total, squares = total + x, squares + x**2
    mean = total / len(controls)
    sd = np.sqrt(np.maximum(squares / len(controls) - mean**2, 0)) + 1e-3

    def features(x):
        brain = x > 0
        darker = (x < mean - 2 * sd) & brain
        brain_voxels = pscore.brain_voxels_per_cube(brain)
        share = np.divide(np.bincount(cube_index_map()[darker], minlength=N_CUBES), brain_voxels, out=np.zeros(N_CUBES), where=brain_voxels > 0)
        return -pscore.region_means(x[None], atlas, sizes)[0], pscore.region_means(pscore.voxel_scores(share[None], brain[None]), atlas, sizes)[0]

    reference = np.array([features(image(key)) for key in controls])  # (n_controls, 2, 246)
    centre, spread = reference.mean(axis=0), reference.std(axis=0, ddof=1) + 1e-12
    scores, atrophied = [], []
    for key, ad in zip(sessions, is_ad):
        if ad and truth.get(key) is not None and truth[key].any():
            scores.append((features(image(key)) - centre) / spread)
            atrophied.append(truth[key])
    scores, atrophied = np.array(scores), np.array(atrophied).ravel()
    return {name: ranking_quality(scores[:, k].ravel(), atrophied) for k, name in enumerate(("normative regions", "normative cubes"))}


LOSS_BINS = ((0.05, 0.10), (0.10, 0.20), (0.20, 0.30), (0.30, 1.01))


def collect_normative(out_dir):
    """Per session, the normative region table (z per feature, atrophic), when the model has a reference."""
    return {key: pd.read_csv(outputs["normative_region_table"], sep="\t").set_index("index")
            for key, outputs in scored_sessions(out_dir) if outputs["normative_region_table"].is_file()}  # fmt: skip


def normative_measures(tables, sessions, is_ad, losses, atrophied_from):
    """The normative flags and z against the truth: sensitivity per loss bin (AD sessions), false
    flags in CN sessions, precision and recall in AD sessions, and the region AUC of each feature."""

    loss, flags, ad_rows, z = [], [], [], {}
    for key, ad in zip(sessions, is_ad):
        table = tables[key]
        loss.append(losses.get(key, pd.Series(dtype=float)).reindex(table.index, fill_value=0.0).to_numpy())
        flags.append(table["atrophic"].to_numpy(bool))
        ad_rows.append(ad)
        for column in (c for c in table.columns if c.endswith("_z")):
            z.setdefault(column[:-2], []).append(table[column].to_numpy())
    loss, flags, ad_rows = np.array(loss), np.array(flags), np.array(ad_rows)
    atrophied = loss >= atrophied_from
    out = {
        "sensitivity": {f"{lo:.0%}-{min(hi, 1):.0%}": (flags[ad_rows][(loss[ad_rows] >= lo) & (loss[ad_rows] < hi)].mean(),
                                                       int(((loss[ad_rows] >= lo) & (loss[ad_rows] < hi)).sum()))
                        for lo, hi in LOSS_BINS},
        "cn_flags": flags[~ad_rows].sum(axis=1),
        "ad_flags": flags[ad_rows].sum(axis=1),
        "precision": (flags[ad_rows] & atrophied[ad_rows]).sum() / max(flags[ad_rows].sum(), 1),
        "recall": (flags[ad_rows] & atrophied[ad_rows]).sum() / max(atrophied[ad_rows].sum(), 1),
        "auc": {},
    }  # fmt: skip
    with_atrophy = ad_rows & atrophied.any(axis=1)
    for feature, values in z.items():
        values = np.array(values)
        out["auc"][feature] = ranking_quality(-values[with_atrophy].ravel(), atrophied[with_atrophy].ravel())
    return out


def flag_dice(tables, retest_tables, common):
    """Mean over sessions with a flag in either scan of the Dice of the flagged regions, scan vs re-scan."""
    dice = []
    for key in common:
        a, b = tables[key]["atrophic"].to_numpy(bool), retest_tables[key]["atrophic"].to_numpy(bool)
        if a.any() or b.any():
            dice.append(2 * (a & b).sum() / (a.sum() + b.sum()))
    return (float(np.mean(dice)) if dice else float("nan")), len(dice)


def retest_correlation(regions, retest_regions, common):
    """Median over regions that vary of the correlation of the normalised score between scan and re-scan."""
    scan = np.stack([regions[k]["p_region_norm"].to_numpy() for k in common])
    rescan = np.stack([retest_regions[k]["p_region_norm"].to_numpy() for k in common])
    varying = (scan.std(axis=0) > 0) & (rescan.std(axis=0) > 0)
    return np.median([np.corrcoef(scan[:, r], rescan[:, r])[0, 1] for r in np.flatnonzero(varying)]), int(varying.sum())


def make_cohorts(opts):
    """Write the test and re-test cohorts (once) and return their folders."""
    from bids_pscore.synth.demo import validation_labels
    from bids_pscore.synth.realheads import write_cohort
    from bids_pscore.synth.templateheads import write_dataset

    folders = {}
    for name, acquisition_seed in (("test", opts.seed), ("retest", opts.seed + 1)):
        bids_dir = folders[name] = opts.work / f"{name}_bids"
        if (bids_dir / "participants.tsv").is_file():
            continue
        if opts.base is None:
            write_dataset(bids_dir, opts.subjects, opts.sessions, opts.seed, acquisition_seed)
        else:
            # the re-scan is of the first session: test-retest needs no more, and each session costs a preprocessing; a
            # session on a real head is its base scan, so the re-scan is the generator's (pose, grid, bias field, noise)
            write_cohort(bids_dir, opts.base, opts.sessions if name == "test" else 1, opts.seed, acquisition_seed,
                         participant_labels=opts.base_labels or validation_labels(opts.base),
                         cache_dir=opts.work / "bases", n_procs=2, simulate_scanner=name == "retest")  # fmt: skip
    return folders


def order_agreement(out_dir, bids_dir, truth_sessions, work):
    """Per subtype: Kendall's tau between the group level's onset order and the truth's stages (the
    group level's default flags: normative when every session has them, else the patent's)."""
    from scipy.stats import kendalltau

    from bids_pscore.derivatives import layout
    from bids_pscore.group import group_folder
    from bids_pscore.synth.disease import SUBTYPES, subtype_order

    rows = []
    for subtype in SUBTYPES:
        subjects = sorted(truth_sessions.loc[truth_sessions["subtype"] == subtype, "participant_id"].unique())
        if len(subjects) < 2:
            continue
        group_out = work / f"group_{subtype}"
        if group_out.exists():
            subprocess.run(["rm", "-rf", str(group_out)], check=True)
        subprocess.run(["cp", "-r", str(out_dir), str(group_out)], check=True)
        labels = [s.removeprefix("sub-") for s in subjects]
        subprocess.run([sys.executable, "-m", "bids_pscore.cli", str(bids_dir), str(group_out), "group",
                        "--participant-label", *labels], check=False, stdout=subprocess.DEVNULL)  # fmt: skip
        # a run on some of the subjects writes beside group/, to a folder named for them
        onset = pd.read_csv(group_folder(group_out, labels)[0] / layout.GROUP_FILES["onset"], sep="\t", na_values="n/a")
        truth = subtype_order(subtype).set_index("index")["stage"]
        involved = onset[(onset["order"] > 0) & onset["index"].isin(truth.index)]
        tau = kendalltau(involved["order"], truth.reindex(involved["index"]).to_numpy())[0] if len(involved) > 2 else np.nan
        rows.append((subtype, len(subjects), len(involved), len(truth), tau))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, help="a BIDS dataset of healthy heads to simulate atrophy on (bids_pscore-synth --base)")
    parser.add_argument(
        "--base-labels",
        nargs="+",
        help="with --base: these base subjects (default: the first half of those the demo "
        "model's recipe kept out; the other half holds the quick start's demo heads)",
    )
    parser.add_argument("--subjects", type=int, default=20, help="without --base: how many template heads")
    parser.add_argument("--sessions", type=int, help="sessions per subject (default 1, or 3 with --base)")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--atrophied", type=float, help="true volume loss from which a region counts as atrophied "
                        "(default 0.10, or 0.05 with --base)")  # fmt: skip
    parser.add_argument("--model", type=Path)
    parser.add_argument("--participant-label", nargs="+", help="score only these subjects of the generated cohort")
    parser.add_argument("--work", type=Path, default=Path("validate_work"), help="datasets, outputs and caches (reused)")
    opts = parser.parse_args()
    opts.sessions = opts.sessions or (3 if opts.base else 1)
    opts.atrophied = opts.atrophied or (0.05 if opts.base else 0.10)

    from bids_pscore.model.training import auc
    from bids_pscore.pscore import N_REGIONS
    from bids_pscore.synth import GROUNDTRUTH

    folders, runs = make_cohorts(opts), {}
    normative = {}
    for name, bids_dir in folders.items():
        participant(bids_dir, opts.work / f"{name}_out", opts.work / f"{name}_work", opts.model, opts.participant_label)
        runs[name] = collect(opts.work / f"{name}_out")
        normative[name] = collect_normative(opts.work / f"{name}_out")

    truth_dir = folders["test"] / GROUNDTRUTH
    participants = pd.read_csv(folders["test"] / "participants.tsv", sep="\t").set_index("participant_id")
    groups = participants["group"]
    truth = pd.read_csv(truth_dir / "regions.tsv", sep="\t")
    sessions, regions = runs["test"]
    is_ad = groups.reindex(sessions.index.get_level_values(0)).to_numpy() == "AD"
    age = participants["age"].reindex(sessions.index.get_level_values(0)).to_numpy(float)
    older = age >= np.median(age)

    losses = {key: frame.set_index("index")["volume_loss"]
              for key, frame in truth.groupby(["participant_id", "session_id"])}  # fmt: skip
    retest_sessions, retest_regions = runs["retest"]
    common = sessions.index.intersection(retest_sessions.index)
    measured = {name: region_measures(maps, sessions.index, is_ad, losses, opts.atrophied) for name, maps in regions.items()}
    ideal = ranking_quality(ideal_cube_scores(measured["even spread (SPEC)"]["truth"]).ravel(), measured["even spread (SPEC)"]["truth"].ravel())
    atrophied = {key: loss.reindex(range(1, N_REGIONS + 1), fill_value=0.0).to_numpy() >= opts.atrophied for key, loss in losses.items()}
    baselines = normative_baselines(opts.work / "test_out", sessions.index, is_ad, atrophied)
    rankings = {**{name: m["ranking"] for name, m in measured.items()}, **baselines, "ideal cubes": ideal}

    rows = [
        ("sessions (AD / CN)", f"{is_ad.sum()} / {(~is_ad).sum()}", ""),
        ("AUC of the AD probability", f"{auc(sessions['ad_probability'], is_ad)[0]:.3f}", ">= 0.95" if opts.base is None else "reported"),
        ("AUC of the whole-brain P-score", f"{auc(sessions['whole'], is_ad)[0]:.3f}", ">= 0.95" if opts.base is None else "reported"),
        # AD subjects are older (docs/disease_model.md): what age alone would give, and the model among the older half
        *(
            (
                ("AUC of age alone (baseline)", f"{auc(age, is_ad)[0]:.3f}", ""),
                (
                    f"AUC of the AD probability, subjects aged {np.median(age):.0f} or more",
                    f"{auc(sessions['ad_probability'][older], is_ad[older])[0]:.3f}  ({is_ad[older].sum()} AD / {(~is_ad[older]).sum()} CN sessions)",
                    "",
                ),
            )
            if opts.base is not None
            else ()
        ),
        (
            "test-retest ICC(3,1), whole-brain P-score",
            f"{icc_3_1(sessions.loc[common, 'whole'], retest_sessions.loc[common, 'whole']):.3f}",
            ">= 0.95",
        ),
    ]
    region_rows = {
        "lambda": ({name: f"{sessions[f'lambda {name}'].iloc[0]:.3f}" for name in measured}, "< 1"),
        "sessions with a flag: AD / CN": (
            {name: f"{np.mean(m['flags'][is_ad] > 0):.2f} / {np.mean(m['flags'][~is_ad] > 0):.2f}" for name, m in measured.items()},
            "",
        ),
        "flags per session, mean: AD / CN": (
            {name: f"{m['flags'][is_ad].mean():.1f} / {m['flags'][~is_ad].mean():.1f}" for name, m in measured.items()},
            "",
        ),
        "regions tied at an AD session's maximum, mean / worst": (
            {name: f"{m['tied'].mean():.1%} / {m['tied'].max():.1%}" for name, m in measured.items()},
            "<= 5%",
        ),
        f"flags: precision / recall (loss >= {opts.atrophied:.0%})": (
            {name: f"{m['tp'] / max(m['tp'] + m['fp'], 1):.3f} / {m['tp'] / max(m['tp'] + m['fn'], 1):.3f}" for name, m in measured.items()},
            "",
        ),
        "AUC, atrophied vs not (AD sessions)": ({name: f"{r[0]:.3f}" for name, r in rankings.items()}, ">= 0.85"),
        "precision at recall 0.8": ({name: f"{r[1]:.3f}" for name, r in rankings.items()}, ""),
        "best F1 (precision, recall)": ({name: f"{r[2][0]:.3f} ({r[2][1]:.2f}, {r[2][2]:.2f})" for name, r in rankings.items()}, ""),
        "test-retest median region correlation": (
            {name: "{:.3f} ({} vary)".format(*retest_correlation(maps, retest_regions[name], common)) for name, maps in regions.items()},
            ">= 0.9",
        ),
    }
    truth_sessions = pd.read_csv(truth_dir / "sessions.tsv", sep="\t")
    if opts.base is not None and opts.sessions >= 3:
        for subtype, n_subjects, n_involved, n_truth, tau in order_agreement(opts.work / "test_out", folders["test"], truth_sessions, opts.work):
            rows.append((f"order of involvement, {subtype} ({n_subjects} subjects): Kendall tau",
                         f"{tau:.2f}  ({n_involved} of {n_truth} regions flagged in some subject)", ">= 0.5"))  # fmt: skip
    width = max(len(r[0]) for r in [*rows, *((k,) for k in region_rows)]) + 2
    print(f"\n{'measure':<{width}}{'value':<34}target")
    for name, value, target in rows:
        print(f"{name:<{width}}{value:<34}{target}")
    columns = list(rankings)
    print(
        f"\nregion level (truth: volume loss >= {opts.atrophied:.0%}; normative: no network, z against the cohort's CN sessions; "
        "ideal cubes: each cube scores its atrophied share, evenly spread)"
    )
    print(f"{'measure':<{width}}" + "".join(f"{c:<26}" for c in columns) + "target")
    for name, (values, target) in region_rows.items():
        print(f"{name:<{width}}" + "".join(f"{values.get(c, ''):<26}" for c in columns) + target)
    if normative["test"] and set(sessions.index) <= set(normative["test"]):
        m = normative_measures(normative["test"], sessions.index, is_ad, losses, opts.atrophied)
        dice, n_dice = flag_dice(normative["test"], normative["retest"], [k for k in common if k in normative["retest"]])
        print(f"\nnormative flags (SPEC 10: grey-level z below the model's calibrated threshold; truth: volume loss >= {opts.atrophied:.0%})")
        rows = [
            ("false flags per CN session, mean", f"{m['cn_flags'].mean():.2f} ({(~is_ad).sum()} sessions)", "<= 1"),
            ("CN sessions with any flag", f"{np.mean(m['cn_flags'] > 0):.2f}", ""),
            ("flags per AD session, mean", f"{m['ad_flags'].mean():.1f}", ""),
            *((f"sensitivity, regions that lost {name}", f"{value:.2f} ({n} regions)",
               {"20%-30%": ">= 0.5", "30%-100%": ">= 0.9"}.get(name, "")) for name, (value, n) in m["sensitivity"].items()),
            ("precision / recall in AD sessions", f"{m['precision']:.3f} / {m['recall']:.3f}", "precision >= 0.7"),
            *((f"region AUC of the {feature} z (P@R0.8, best F1)", f"{r[0]:.3f} ({r[1]:.3f}, {r[2][0]:.3f})", ">= 0.815")
              for feature, r in m["auc"].items()),
            ("test-retest Dice of the flags", f"{dice:.3f} ({n_dice} sessions)", ">= 0.8"),
        ]  # fmt: skip
        for name, value, target in rows:
            print(f"{name:<{width}}{value:<34}{target}")


if __name__ == "__main__":
    main()
