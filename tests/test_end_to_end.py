"""Participant level end to end with the shipped demo model on a generated dataset (2 subjects x 2 sessions)."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_pscore import bids
from bids_pscore.cli import run as cli
from bids_pscore.cohort import DEMO_MODEL, load_model
from bids_pscore.derivatives import layout
from bids_pscore.grid import GRID_AFFINE, GRID_SHAPE
from bids_pscore.model.bundle import metadata_sha256
from bids_pscore.synth.templateheads import write_dataset

from .test_summary_schema import summary_problems

TEMPLATE = "MNI152NLin2009aSym"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    bids_dir = write_dataset(root / "bids", n_subjects=2, n_sessions=2, seed=5)
    args = [str(bids_dir), str(root / "out"), "participant", "-w", str(root / "work")]
    code = cli.main(args)
    cached = {p: p.stat().st_mtime_ns for p in (root / "work").rglob("result_*.pklz") if "_sink" not in str(p)}
    rerun_code = cli.main(args)
    return root / "out", bids_dir, (code, cached), (rerun_code, {p: p.stat().st_mtime_ns for p in cached})


def test_the_demo_model_ships_small_says_what_it_was_trained_on_and_credits_ixi():
    bundle = load_model()
    # weights 20 MB, normative reference 11 MB and its copy, the class domain (git keeps the same bytes once)
    assert sum(p.stat().st_size for p in DEMO_MODEL.iterdir()) <= 40 * 1024**2
    warning = bundle.metadata["warning"]
    assert "simulated atrophy" in warning and "IXI" in warning and "not for research or clinical use" in warning
    assert "CC BY-SA 3.0" in warning and "CC BY-SA 3.0" in (DEMO_MODEL / "LICENSE.md").read_text()
    assert (DEMO_MODEL / "recipe.sh").is_file()


@pytest.mark.slow
def test_every_derivative_of_every_session_exists_and_loads(run):
    out, bids_dir, (code, _), _ = run
    assert code == 0
    atlas_files = layout.atlas_paths(TEMPLATE)
    lut = pd.read_csv(out / atlas_files["table"], sep="\t")
    grid_atlas = np.asarray(nib.load(out / atlas_files["image"]).dataobj)
    assert len(lut) == 246
    model_weights, model_selected = load_model().ensemble.weights_per_cube()
    for t1w in bids.find_t1w(bids.load_layout(bids_dir)):
        paths = layout.session_outputs(t1w.entities, TEMPLATE, layout.PREPROCESSING, layout.PSCORE)
        for rel in paths.values():
            assert (out / rel).is_file(), rel
        for name in ("t1w_grid", "mask_grid", "voxel_map", "region_map"):
            img = nib.load(out / paths[name])
            assert img.shape == GRID_SHAPE and np.allclose(img.affine, GRID_AFFINE)
        image = np.asarray(nib.load(out / paths["t1w_grid"]).dataobj)
        assert 0 <= image.min() and image.max() <= 1
        cubes = pd.read_csv(out / paths["cube_table"], sep="\t", na_values="n/a")
        regions = pd.read_csv(out / paths["region_table"], sep="\t", na_values="n/a")
        assert len(cubes) == 150 and len(regions) == 246
        # SPEC 5 on the written table: P_cube = w_c * p_ic for the selected cubes, with the model's own w_c; 0 elsewhere
        selected = cubes["selected"].to_numpy(bool)
        assert selected.tolist() == model_selected.tolist() and np.allclose(cubes.loc[selected, "weight"], model_weights[selected], atol=1e-6)
        assert np.allclose(cubes.loc[selected, "p_cube"], cubes.loc[selected, "weight"] * cubes.loc[selected, "p_ad"], rtol=1e-5, atol=1e-7)
        assert (cubes.loc[~selected, "p_cube"] == 0).all() and cubes.loc[~selected, "weight"].isna().all()
        assert ((cubes["p_ad"] >= 0) & (cubes["p_ad"] <= 1)).all() and cubes["p_ad"].nunique() > 1
        # the native mask multiplies the raw T1w voxel by voxel
        raw, native = nib.load(t1w.path), nib.load(out / paths["mask_native"])
        assert native.shape == raw.shape and np.allclose(native.affine, raw.affine)
        summary = json.loads((out / paths["summary"]).read_text())
        assert summary_problems(summary) == []
        assert summary["WholeBrainPScore"] == pytest.approx(regions["p_region_norm"].sum(), abs=1e-6)
        assert summary["NumberOfDegenerativeRegions"] == int(regions["degenerative"].sum())
        assert 0 <= summary["ADProbability"] <= 1 and summary["Model"]["Name"] == "demo-ixi"
        # the voxel map spreads each selected cube's score over its brain voxels (a cube with none, as
        # the retrained demo model's cube 118 in one of these small template heads, has nowhere to put it)
        voxel = np.asarray(nib.load(out / paths["voxel_map"]).dataobj)
        assert voxel.sum() == pytest.approx(cubes.loc[cubes["brain_voxels"] > 0, "p_cube"].sum(), rel=1e-3, abs=1e-4)
        # and the region scores are recomputed from the outputs alone: the voxel map's mean over the atlas image's regions
        for index in (1, 100, 211, 246):
            inside = grid_atlas == index
            assert regions.loc[regions["index"] == index, "p_region"].item() == pytest.approx(voxel[inside].mean(), rel=1e-4, abs=1e-9)
        # and so does the relevance-weighted one, with its own regions, normalisation and flags
        relevance = layout.session_outputs(t1w.entities, TEMPLATE, layout.RELEVANCE)
        weighted = np.asarray(nib.load(out / relevance["relevance_voxel_map"]).dataobj)
        assert weighted.sum() == pytest.approx(voxel.sum(), rel=1e-3, abs=1e-4) and not np.allclose(weighted, voxel)
        weighted_regions = pd.read_csv(out / relevance["relevance_region_table"], sep="\t", na_values="n/a")
        weighted_summary = json.loads((out / relevance["relevance_summary"]).read_text())
        assert weighted_summary["WholeBrainPScore"] == pytest.approx(weighted_regions["p_region_norm"].sum(), abs=1e-6)
        assert weighted_summary["Lambda"] == load_model().metadata["relevance"]["reference"]["lambda"]
        assert nib.load(out / relevance["relevance_region_map"]).shape == GRID_SHAPE


@pytest.mark.slow
def test_each_subject_has_a_report_with_its_figures_and_the_demo_warning(run):
    out, bids_dir, *_ = run
    for sub in ("01", "02"):
        page = (out / f"sub-{sub}.html").read_text()
        images = re.findall(r'<img src="([^"]+)"', page)
        # 5 figures per session, the normative deviation map, 3 more of the relevance-weighted map, 2 sessions, and the
        # model's cube weights
        assert len(images) == 19 and all((out / src).is_file() and (out / src).stat().st_size > 5000 for src in images)
        assert sum("desc-zmap_normative" in src for src in images) == 2 and "normative reference" in page
        assert "not for research or clinical use" in page and "logs/CITATION.md" in page
        assert "lambda" in page and "SHA256" in page
        # the run that made it: command line, date and version
        assert "bids_pscore " + str(bids_dir) in page and re.search(r"20\d\d-\d\d-\d\d \d\d:\d\d", page)
        # the preprocessing checks: the mask over the head in its own space, the template over the unsmoothed brain
        assert f"sub-{sub}/figures/sub-{sub}_ses-1_desc-brainmask_T1w.png" in images
    citation = (out / "logs" / "CITATION.md").read_text()
    assert "ANTsPy" in citation and "deepbet" in citation and "Fan L" in citation and "simulated atrophy" in citation
    # every paper README cites, also as BibTeX
    assert "Frontiers in Neuroscience 14:259" in citation and "US patent 12383189" in citation
    bib = (out / "logs" / "CITATION.bib").read_text()
    assert bib.count("@article{") + bib.count("@misc{") == 8 and "doi = {10.3389/fnins.2020.00259}" in bib


@pytest.mark.slow
def test_a_rerun_with_the_same_work_folder_computes_no_step_again(run):
    _, _, (_, cached), (code, after_rerun) = run
    assert code == 0
    # every step of the four T1w left its result: 14 each, the 9 preprocessing steps and the 5 scoring nodes
    # (workflows/scoring.py: images, quality_gate, scoring, figures, score_files)
    assert len(cached) == 4 * (9 + 5)
    # images (the preprocessed images' checksums) and score_files (copies the outputs back) always run, as the
    # sink does: the rerun rewrote their results and none of the other 12 of each T1w
    always_run = {p for p in cached if p.parent.name in ("images", "score_files")}
    assert len(always_run) == 4 * 2 and all(after_rerun[p] != cached[p] for p in always_run)
    assert {p: t for p, t in after_rerun.items() if p not in always_run} == {p: t for p, t in cached.items() if p not in always_run}


@pytest.mark.slow
def test_the_patents_outputs_are_the_same_without_the_relevance_map(run, tmp_path, capsys):
    out, bids_dir, *_ = run
    model = tmp_path / "model"
    shutil.copytree(DEMO_MODEL, model)
    meta = json.loads((model / "model.json").read_text())
    del meta["relevance"]
    meta["metadata_sha256"] = metadata_sha256(meta)  # as a bundle of an earlier version was written
    (model / "model.json").write_text(json.dumps(meta))
    assert cli.main([str(bids_dir), str(tmp_path / "out"), "participant", "-w", str(out.parent / "work"), "--model", str(model)]) == 0
    assert "relevance-weighted outputs are skipped" in capsys.readouterr().out
    for t1w in bids.find_t1w(bids.load_layout(bids_dir)):
        assert not any((tmp_path / "out" / p).exists() for p in layout.session_outputs(t1w.entities, TEMPLATE, layout.RELEVANCE).values())
        for rel in layout.session_outputs(t1w.entities, TEMPLATE, layout.PSCORE).values():
            if rel.name.endswith(".nii.gz"):
                with_feature, without = nib.load(out / rel), nib.load(tmp_path / "out" / rel)
                assert np.array_equal(np.asarray(with_feature.dataobj), np.asarray(without.dataobj))
                assert with_feature.header.binaryblock == without.header.binaryblock
            elif rel.suffix == ".json":
                assert same_but_the_model_json(out / rel, tmp_path / "out" / rel, meta["metadata_sha256"]), rel
            else:
                assert (out / rel).read_bytes() == (tmp_path / "out" / rel).read_bytes(), rel
            sidecar = layout.sidecar_path(rel)
            if (out / sidecar).exists() and sidecar != rel:
                assert same_but_the_model_json(out / sidecar, tmp_path / "out" / sidecar, meta["metadata_sha256"]), sidecar


def same_but_the_model_json(path, other_path, other_checksum):
    """Whether two JSON outputs say the same, but for the model.json each names where it names one
    (Model.MetadataSHA256), which must be ``other_checksum`` in the second: the same weights, another model.json."""
    first, second = json.loads(path.read_text()), json.loads(other_path.read_text())
    if "Model" in second:
        if second["Model"].pop("MetadataSHA256") != other_checksum:
            return False
        first["Model"].pop("MetadataSHA256")
    return first == second


@pytest.mark.slow
def test_reports_only_redraws_the_reports_without_touching_the_derivatives(run, tmp_path):
    out, bids_dir, *_ = run
    derivatives = [p for p in out.rglob("*") if p.is_file() and "figures" not in p.parts and p.suffix != ".html" and "logs" not in p.parts]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in derivatives}
    reports = sorted(out.glob("sub-*.html"))
    for page in reports:
        page.unlink()
    # the figures drawn from the outputs come back; the preprocessing checks were drawn by the workflow and stay
    drawn_here = [p for p in (out / "sub-01" / "figures").glob("*.png") if "_pscore" in p.name or "_bars" in p.name]
    for figure in drawn_here:
        figure.unlink()
    assert cli.main([str(bids_dir), str(out), "participant", "--reports-only", "-w", str(tmp_path / "unused")]) == 0
    assert sorted(out.glob("sub-*.html")) == reports and all(p.is_file() for p in drawn_here) and len(drawn_here) == 12
    page = reports[0].read_text()
    assert "whole-brain P-score" in page and "--reports-only" in page
    # the run that scored each session, from the list the participant run kept in its log folder
    assert len(re.findall(r"scored by run</td><td>\d{8}-\d{6}_\w+ \(its logs: logs/run-", page)) == page.count("scored by run") > 0
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in derivatives} == before
    assert not (tmp_path / "unused").exists()


@pytest.mark.slow
def test_participant_and_group_outputs_are_valid_bids_and_every_sidecar_describes_only_its_file(run):
    """bids-validator-deno (the BIDS validator 3, offline) passes; pybids finds for each file its own
    sidecar and nothing inherited from another file's."""
    from bids import BIDSLayout

    out, bids_dir, *_ = run
    assert cli.main([str(bids_dir), str(out), "group"]) == 0
    validator = bids.validator_command()
    assert validator, "bids-validator-deno is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([validator, str(out), "--json"], capture_output=True, text=True, timeout=300)
    issues = json.loads(result.stdout)["issues"]["issues"]
    errors = [(i["code"], i.get("subCode"), i.get("location")) for i in issues if i["severity"] == "error"]
    assert result.returncode == 0 and not errors, errors
    warnings = {i["code"] for i in issues if i["severity"] == "warning"}
    assert warnings <= {"TOO_FEW_AUTHORS"}, warnings  # the people who ran the app are the authors; we cannot know them
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["BIDSVersion"].startswith("1.11")
    bids_layout = BIDSLayout(out, validate=False, is_derivative=True)
    checked = 0
    for item in bids_layout.get(return_type="object"):
        path = Path(item.path)
        if path.suffix == ".json":
            continue
        own = layout.sidecar_path(path)
        expected = json.loads(own.read_text()) if own.is_file() else {}
        assert item.get_metadata() == expected, path.name
        checked += 1
    assert checked >= 40
