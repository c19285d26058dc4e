"""bids_pscore-train on a labelled dataset with generated grid images (--preprocessed)."""

import contextlib
import io
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from bids_pscore import bids, tabular
from bids_pscore.cli.train import main
from bids_pscore.derivatives import layout
from bids_pscore.fileio import write_json
from bids_pscore.grid import GRID_AFFINE, GRID_SHAPE
from bids_pscore.model.bundle import load_bundle, model_warnings
from bids_pscore.model.preprocessing import PreprocParams
from bids_pscore.model.relevance import METHODS

from .helpers import make_bids, small_image

# what the participant level records in the grid images' sidecars; not the defaults, so that the
# bundle is seen to carry what the images were made with
RECORDED = PreprocParams(fwhm_mm=6.0, registration_seed=7)


def labelled_bids(root, groups):
    """A BIDS dataset of tiny raw T1w, sub-01, sub-02, ... labelled ``groups`` in participants.tsv."""
    rows = ["participant_id\tgroup"] + [f"sub-{i:02d}\t{g}" for i, g in enumerate(groups, 1)]
    return make_bids(root, {
        "participants.tsv": "\n".join(rows) + "\n",
        **{f"sub-{i:02d}/anat/sub-{i:02d}_T1w.nii.gz": small_image() for i in range(1, len(groups) + 1)},
    })  # fmt: skip


def labelled_dataset(tmp_path, groups, noise=()):
    """A BIDS dataset (tiny raw T1w) and grid images of it as bids_pscore would write them: the
    template's brain with noise, which passes the quality gate, or noise alone for the subjects
    numbered in ``noise``, which fails it."""
    from bids_pscore.preprocess.steps import template_on_grid

    root = labelled_bids(tmp_path / "bids", groups)
    rng = np.random.default_rng(0)
    template, template_mask = (np.asarray(img.dataobj) for img in template_on_grid("MNI152NLin2009aSym"))
    mask = template_mask > 0
    pre = tmp_path / "pre"
    for i, group in enumerate(groups, 1):
        brain = rng.uniform(0.3, 0.7, GRID_SHAPE) if i in noise else template / template.max() + rng.uniform(-0.1, 0.1, GRID_SHAPE)
        image = np.where(mask, brain, 0).astype(np.float32)
        if group == "AD":  # as strong as the template's own contrast, so that 3 epochs on 2 images learn it
            image[40:60, 60:80, 40:60] += 1.0
        paths = layout.session_outputs({"sub": f"{i:02d}"}, "MNI152NLin2009aSym", layout.PREPROCESSING)
        # the brain mask in the T1w's own space is the grid's here: the gate measures the brain's volume in it
        for key, data in (("t1w_grid", image), ("mask_grid", mask.astype(np.uint8)), ("mask_native", mask.astype(np.uint8))):
            (pre / paths[key]).parent.mkdir(parents=True, exist_ok=True)
            nib.Nifti1Image(data, GRID_AFFINE).to_filename(pre / paths[key])
        write_json(pre / layout.sidecar_path(paths["t1w_grid"]), {"PreprocessingParameters": RECORDED.to_dict()})
    return root, pre


def train_args(root, tmp_path, pre, *extra):
    """The command line of a small training, on the grid images in ``pre`` (None: on the raw T1w, which the run preprocesses)."""
    return [
        str(root),
        str(tmp_path / "model"),
        "--label-column",
        "group",
        "--positive",
        "AD",
        "--negative",
        "CN",
        *(["--preprocessed", str(pre)] if pre else []),
        "-w",
        str(tmp_path / "work"),
        "--epochs",
        "3",
        "--patience",
        "3",
        "--learning-rate",
        "3e-3",
        "--n-selected",
        "5",
        "--val-fraction",
        "0.2",
        "--test-fraction",
        "0.2",
        *extra,
    ]


def run_training(args):
    """``main(args)``'s exit code and what it printed (a module's fixture has no capsys)."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(args)
    return code, printed.getvalue()


# made once for the module: the tests only read them (one that changes a dataset changes a copy)
@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """8 labelled subjects, of which sub-03 (AD) and sub-04 (CN), both of the train split, fail the
    quality gate; and 2 MCI, left out."""
    return labelled_dataset(tmp_path_factory.mktemp("dataset"), ["AD", "CN"] * 4 + ["MCI", "MCI"], noise=(3, 4))


class Trained(NamedTuple):
    """A training's command line, exit code, what it printed, and its model folder."""

    args: list
    code: int
    printed: str
    model: Path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset):
    """The training on ``dataset`` whose bundle and messages several tests read."""
    root, pre = dataset
    folder = tmp_path_factory.mktemp("trained")
    args = train_args(root, folder, pre)
    return Trained(args, *run_training(args), folder / "model")


def test_trains_and_writes_a_bundle_that_loads(trained, tmp_path_factory, capsys):
    assert trained.code == 0
    out = trained.printed
    assert "labels from participants.tsv: 4 AD, 4 CN; left out (other values): {'MCI': 2}" in out
    bundle = load_bundle(trained.model)
    meta = bundle.metadata
    assert len(meta["selected_cubes"]) == 5 and meta["labels"]["left_out"] == {"MCI": 2}
    split = meta["training"]["split"]
    assert sorted(split) == [f"{i:02d}" for i in range(1, 9)]
    assert set(split.values()) == {"train", "validation", "test"}
    assert np.isfinite(meta["reference"]["lambda"]) and len(meta["reference"]["region_min"]) == 246
    relevance = meta["relevance"]
    assert relevance["method"] in METHODS and np.isfinite(relevance["reference"]["lambda"])
    assert len(relevance["reference"]["region_max"]) == 246 and relevance["reference"]["region_max"] != meta["reference"]["region_max"]
    # the images' own preprocessing, read from their sidecars, travels with the model to inference
    assert meta["preprocessing"] == RECORDED.to_dict() and meta["training"]["seeds"] == {"training": 0, "registration": 7}
    # the scanner's randomisation, on by default, as the networks had it
    recorded = meta["training"]["config"]
    assert (recorded["scanner_augmentation"], recorded["gamma_range"], recorded["contrast_jitter"], recorded["bias_coefficient"]) == (
        True, [0.6, 2.3], 0.15, 0.1,
    )  # fmt: skip
    history = pd.read_csv(trained.model / "training.tsv", sep="\t")
    assert len(history) == meta["training"]["epochs_run"] <= 3
    assert set(meta["training"]["metrics"]["test"]) >= {"accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity"}
    assert json.loads((trained.model / "model.json").read_text())["weights"]["sha256"]
    # SPEC 7: what served each step; the dataset named, not a path of this machine
    assert meta["training"]["fitted_on"]["meta_classifier"] == meta["training"]["fitted_on"]["reference_statistics"] == "validation"
    assert meta["training"]["dataset"] == "test" and str(tmp_path_factory.getbasetemp()) not in json.dumps(meta)
    # SPEC 10: 2 control subjects are too few for a normative reference, and the run says so
    assert "normative" not in meta and bundle.normative is None
    assert "fewer than the 20 a normative reference needs: the model gets none" in out
    # a second training into the same folder is refused before anything is read or written
    before = {p.name: p.read_bytes() for p in trained.model.iterdir()}
    assert main(trained.args) == 2
    assert "already holds a model bundle, and training never overwrites one" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in trained.model.iterdir()} == before


@pytest.mark.slow
def test_the_controls_of_the_train_and_validation_splits_make_the_normative_reference(tmp_path, capsys):
    groups = ["AD", "CN"] * 16 + ["CN"] * 8
    root, pre = labelled_dataset(tmp_path, groups)
    ages = "\n".join(["participant_id\tgroup\tage\tsex"] + [f"sub-{i:02d}\t{g}\t{30 + i}\t{'FM'[i % 2]}" for i, g in enumerate(groups, 1)])
    (root / "participants.tsv").write_text(ages + "\n")
    assert main(train_args(root, tmp_path, pre, "--val-fraction", "0.3", "--test-fraction", "0.15", "--epochs", "8", "--patience", "8")) == 0
    bundle = load_bundle(tmp_path / "model")
    split, record = bundle.metadata["training"]["split"], bundle.metadata["normative"]
    labels = {f"{i:02d}": g for i, g in enumerate(groups, 1)}
    assert record["reference"]["images"] == sum(part != "test" and labels[s] == "CN" for s, part in split.items()) >= 20
    assert record["reference"]["source"].startswith("the controls") and record["features"] == ["grey_level"]  # P-scores in-sample
    assert record["covariates"]["age"] and record["covariates"]["sex"] and record["reference"]["age"]["min"] >= 31
    assert record["unseen_controls"]["images"] == sum(part == "test" and labels[s] == "CN" for s, part in split.items())
    assert bundle.normative.flag_z == record["threshold"] < 0 and record["calibration"]["false_flags_per_healthy_image"] <= 1
    assert "normative reference: " in capsys.readouterr().out


@pytest.mark.parametrize("groups,words", [
    (["AD"] * 8 + ["MCI"] * 3, "only one class"),
    (["AD", "AD", "CN", "CN", "CN", "CN"], "'AD' has 2 subject"),
])  # fmt: skip
def test_unsplittable_labels_fail_before_training(tmp_path, capsys, groups, words):
    root = labelled_bids(tmp_path / "bids", groups)
    # no grid image is there: the split is checked before any is looked for
    assert main(train_args(root, tmp_path, tmp_path / "pre")) == 2
    assert words in capsys.readouterr().err
    assert not list((tmp_path / "work").glob("**/cube_cache.npy")) and not (tmp_path / "model").exists()


def test_labels_per_session_from_sessions_tsv(tmp_path):
    from bids_pscore.train import label_of

    files = {"participants.tsv": "participant_id\tage\nsub-01\t70\nsub-02\t71\n"}
    for sub, rows in (("01", "ses-1\tCN\nses-2\tAD\n"), ("02", "ses-1\tCN\nses-2\tMCI\n")):
        files[f"sub-{sub}/sub-{sub}_sessions.tsv"] = "session_id\tdx\n" + rows
        for ses in ("1", "2"):
            files[f"sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_T1w.nii.gz"] = small_image()
    root = make_bids(tmp_path / "bids", files)
    labels, left_out, source = tabular.read_labels(root, "dx", "AD", "CN")
    assert source == "sessions.tsv" and left_out == {"MCI": 1}
    assert labels == {("01", "1"): 0, ("01", "2"): 1, ("02", "1"): 0}
    found = bids.find_t1w(bids.load_layout(root))
    assert [label_of(t, labels) for t in found] == [0, 1, 0, None]


def test_one_seed_trains_the_same_weights_and_another_seed_others(tmp_path, dataset, trained):
    root, pre = dataset

    def checksum_and_split(model):
        meta = load_bundle(model).metadata  # which checks the weights file against its recorded checksum
        return meta["weights"]["sha256"], meta["training"]["split"]

    again, other = (tmp_path / name for name in ("again", "other"))
    # the module's training had the default seed, 0
    assert main(train_args(root, again, pre)) == 0
    # seed 200 splits these subjects as seed 0 does: the weights differ by the seed of the networks and their batches alone
    assert main(train_args(root, other, pre, "--seed", "200")) == 0
    checksum, split = checksum_and_split(trained.model)
    assert checksum_and_split(again / "model") == (checksum, split)
    other_checksum, other_split = checksum_and_split(other / "model")
    assert other_split == split and other_checksum != checksum


def test_scanner_augmentation_is_on_unless_switched_off(tmp_path):
    from bids_pscore.cli.train import parse_args

    args = train_args(tmp_path / "bids", tmp_path, tmp_path / "pre")
    assert parse_args(args).training.scanner_augmentation is True
    assert parse_args([*args, "--no-scanner-augmentation"]).training.scanner_augmentation is False


def test_cat12_images_on_the_grid(tmp_path, capsys, dataset):
    root, pre = dataset
    cat12 = tmp_path / "cat12" / "mri"
    cat12.mkdir(parents=True)
    for subject in sorted(p.name for p in root.glob("sub-*")):
        paths = layout.session_outputs({"sub": subject.removeprefix("sub-")}, "MNI152NLin2009aSym", layout.PREPROCESSING)
        data = 3.0 * nib.load(pre / paths["t1w_grid"]).get_fdata()  # CAT12's scale is not [0, 1]
        nib.Nifti1Image(data.astype(np.float32), GRID_AFFINE).to_filename(cat12 / f"smwp1{subject}_T1w.nii")
    args = train_args(root, tmp_path, tmp_path / "cat12", "--cat12-prefix", "smwp1")
    assert main(args) == 0
    meta = load_bundle(tmp_path / "model").metadata
    assert meta["training"]["preprocessed_by"] == "CAT12 (smwp1 images)"
    # every run with this model says that its own preprocessing is not what the model was trained on
    assert any("trained on images preprocessed by CAT12 (smwp1 images), not by bids_pscore" in w for w in model_warnings(meta))
    assert main([args[0], str(tmp_path / "model-wm"), *args[2:-2], "--cat12-prefix", "wm"]) == 2
    assert "no file(s) named wmsub-01_T1w.nii[.gz]" in capsys.readouterr().err


def test_first_session_is_the_lowest_label_as_a_number_and_subjects_without_t1w_are_left_out(tmp_path, capsys):
    from bids_pscore.train import select_inputs

    files = {"participants.tsv": "participant_id\tgroup\nsub-01\tAD\nsub-02\tCN\nsub-03\tCN\n"}
    for ses in ("2", "10"):
        files[f"sub-01/ses-{ses}/anat/sub-01_ses-{ses}_T1w.nii.gz"] = small_image()
    files["sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"] = small_image()
    root = make_bids(tmp_path / "bids", files)  # sub-03 is labelled but has no image
    labels, _, _ = tabular.read_labels(root, "group", "AD", "CN")
    chosen = select_inputs(bids.load_layout(root), labels, "first", None)
    assert [t.relpath for t in chosen] == ["sub-01/ses-2/anat/sub-01_ses-2_T1w.nii.gz", "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"]
    assert "1 labelled subject(s) have no T1w and are left out: sub-03" in capsys.readouterr().out


def test_a_missing_preprocessed_image_is_named_before_anything_is_made(tmp_path, capsys, dataset):
    root, pre = dataset[0], shutil.copytree(dataset[1], tmp_path / "pre")
    missing = pre / layout.session_outputs({"sub": "03"}, "MNI152NLin2009aSym", layout.PREPROCESSING)["t1w_grid"]
    missing.unlink()
    assert main(train_args(root, tmp_path, pre)) == 2
    err = capsys.readouterr().err
    assert f"1 preprocessed image(s) missing, e.g. {missing}" in err and "Traceback" not in err
    assert not (tmp_path / "model").exists() and not (tmp_path / "work").exists()


def test_preprocessed_images_must_say_how_they_were_made_and_agree(tmp_path, capsys, dataset):
    root, pre = dataset[0], shutil.copytree(dataset[1], tmp_path / "pre")
    sidecar = pre / layout.sidecar_path(layout.session_outputs({"sub": "04"}, "MNI152NLin2009aSym", layout.PREPROCESSING)["t1w_grid"])
    write_json(sidecar, {"PreprocessingParameters": {**RECORDED.to_dict(), "registration_seed": 8}})
    assert main(train_args(root, tmp_path, pre)) == 2
    err = capsys.readouterr().err
    assert "were preprocessed with different parameters" in err and str(sidecar) in err
    sidecar.unlink()
    assert main(train_args(root, tmp_path, pre)) == 2
    assert f"{sidecar}: missing or without PreprocessingParameters" in capsys.readouterr().err
    # their registration is done: a seed for it is refused rather than recorded untrue
    assert main(train_args(root, tmp_path, pre, "--random-seed", "3")) == 2
    assert "--random-seed: the images under --preprocessed are registered already" in capsys.readouterr().err
    assert not (tmp_path / "model").exists() and not (tmp_path / "work").exists()


def test_a_split_emptied_of_a_class_by_failures_is_named():
    from bids_pscore.errors import TrainingError
    from bids_pscore.train import check_both_classes

    y = np.array([1, 0, 1, 0, 1, 0])
    check_both_classes({"train": np.array([0, 1]), "validation": np.array([2, 3]), "test": np.array([4, 5])}, y, "AD", "CN")
    # the CN images of the validation and test splits failed to preprocess
    parts = {"train": np.array([0, 1]), "validation": np.array([2]), "test": np.array([4])}
    with pytest.raises(TrainingError, match="the validation and test split.s. no longer hold both AD and CN images") as caught:
        check_both_classes(parts, y, "AD", "CN")
    assert caught.value.exit_code == 1


def test_a_split_emptied_by_failures_is_named():
    from bids_pscore.errors import TrainingError
    from bids_pscore.train import check_both_classes

    y = np.array([1, 0, 1, 0])
    # as the run makes them: a split whose images all failed is an empty float array
    parts = {"train": np.array([0, 1]), "validation": np.array([]), "test": np.array([2, 3])}
    with pytest.raises(TrainingError, match="the validation split.s. hold no image: fix those T1w .see the summary. or add subjects") as caught:
        check_both_classes(parts, y, "AD", "CN")
    assert caught.value.exit_code == 1


def test_runs_sharing_a_work_folder_get_their_own_scratch(tmp_path):
    from bids_pscore.train import training_scratch

    first, second, other = (training_scratch(tmp_path / "work", bids_dir, run_id)
                            for bids_dir, run_id in ((tmp_path / "a", "1"), (tmp_path / "a", "2"), (tmp_path / "b", "3")))  # fmt: skip
    # the preprocessing cache is kept across runs of one dataset, apart from another dataset's sub-01
    assert first.dataset == second.dataset != other.dataset
    assert len({first.run, second.run, other.run}) == 3
    assert all(s.cube_cache.parent == s.run and (tmp_path / "work") in s.run.parents for s in (first, second, other))


@pytest.mark.parametrize("path", ["--preprocessed", "raw"])
def test_images_that_fail_the_quality_gate_train_nothing_and_are_counted(request, tmp_path, monkeypatch, dataset, path):
    from types import SimpleNamespace

    from bids_pscore import cohort
    from bids_pscore.cli.train import parse_args
    from bids_pscore.qc import DEFAULT_BOUNDS

    root, pre = dataset
    if path == "raw":
        # the preprocessing writes the images that labelled_dataset made (the real one takes a minute an
        # image: test_trains_on_raw_t1w_through_the_preprocessing_workflow runs it)
        def preprocess(t1w_inputs, bids_dir, output_dir, *rest):
            shutil.copytree(pre, output_dir, dirs_exist_ok=True)
            return SimpleNamespace(failed=[])

        monkeypatch.setattr(cohort, "preprocess", preprocess)
        args = train_args(root, tmp_path, None)
        code, out = run_training(args)
        model = tmp_path / "model"
    else:
        args, code, out, model = request.getfixturevalue("trained")
    assert code == 0
    for sub in ("03", "04"):
        assert f"sub-{sub}: left out of training, it failed the quality gate: template_correlation" in out
    assert out.count("failed the quality gate") == 3  # a line each, and the count in the closing line
    closing = next(line for line in out.splitlines() if "model bundle written to" in line)
    assert closing.endswith("; 2 T1w skipped (failed the quality gate, see above)")
    assert sum(load_bundle(model).metadata["training"]["images"].values()) == 6
    # the gate's bounds are the participant level's option
    assert parse_args([*args, "--qc-thresholds", "off"]).qc_thresholds == {name: (None, None) for name in DEFAULT_BOUNDS}
    assert parse_args(args).qc_thresholds == DEFAULT_BOUNDS


def test_a_split_that_the_quality_gate_empties_ends_training_before_any_cube_is_cut(tmp_path, capsys, dataset):
    root, pre = dataset
    # a correlation with the template above 1 is a bound that no image meets
    assert main(train_args(root, tmp_path, pre, "--qc-thresholds", '{"template_correlation": [1.01, null]}')) == 1
    captured = capsys.readouterr()
    assert captured.out.count("left out of training, it failed the quality gate") == 8
    assert "the train and validation and test split(s) hold no image" in captured.err and captured.err.count("\n") == 1
    assert "Traceback" not in captured.err and not list((tmp_path / "work").glob("**/cube_cache.npy"))
    assert not (tmp_path / "model" / "model.json").exists()


@pytest.mark.slow
def test_trains_on_raw_t1w_through_the_preprocessing_workflow(tmp_path):
    """The workflow's own images, not grid images made up as above: the fewest T1w that training
    accepts (3 AD and 3 CN generated heads, one of each class in each split), preprocessed with a
    registration seed that is not the default."""
    from bids_pscore.synth.templateheads import write_dataset
    from bids_pscore.train import dataset_work_dir

    bids_dir = write_dataset(tmp_path / "bids", n_subjects=6, seed=3)
    # three epochs on two training images learn nothing through the scanner augmentation (lambda
    # undefined, exit 1); this test is about the workflow's images, so it trains without it
    assert main(train_args(bids_dir, tmp_path, None, "--random-seed", "3", "--no-scanner-augmentation")) == 0
    meta = load_bundle(tmp_path / "model").metadata
    assert meta["training"]["preprocessed_by"] == "bids_pscore" and sum(meta["training"]["images"].values()) == 6
    # the bundle records what the workflow wrote in the images' sidecars, so that inference preprocesses alike
    sidecars = sorted((dataset_work_dir(tmp_path / "work", bids_dir) / "preprocessed").glob("sub-*/ses-*/anat/*_desc-preproc_T1w.json"))
    assert len(sidecars) == 6
    assert all(json.loads(p.read_text())["PreprocessingParameters"] == meta["preprocessing"] for p in sidecars)
    assert meta["preprocessing"] == PreprocParams(registration_seed=3).to_dict() and meta["training"]["seeds"] == {"training": 0, "registration": 3}
