"""Training learns a generated task whose signal lies in known cubes, and picks those cubes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bids_pscore.grid import GRID_SHAPE, cut_cubes
from bids_pscore.model.networks import Ensemble
from bids_pscore.model.training import (
    TrainConfig,
    auc,
    augment,
    bias_fields,
    binary_metrics,
    fit_ensemble,
    intensity_curve,
    randomise_scanner,
    select_cubes,
    train_meta,
)

INFORMATIVE = [12, 75, 131]


def generated(n, rng):
    """n images as cubes (float16, as the on-disk cube cache): noise everywhere, and in the
    informative cubes of AD images a bright blob (a stand-in for a regional change)."""
    labels = np.arange(n) % 2
    rng.shuffle(labels)
    cubes = rng.normal(0.5, 0.15, (n, 150, 25, 25, 25)).astype(np.float16)
    grid = np.indices((25, 25, 25)) - 12
    blob = (0.35 * np.exp(-(grid**2).sum(0) / (2 * 4.0**2))).astype(np.float16)
    for c in INFORMATIVE:
        cubes[labels == 1, c] += blob
    return cubes, labels


def test_auc_and_metrics_by_hand():
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])[0] == pytest.approx(0.75)
    assert auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1])[0] == pytest.approx(0.5)
    m = binary_metrics([0.9, 0.2, 0.6, 0.4], [1, 1, 0, 0])
    assert (m["sensitivity"], m["specificity"], m["accuracy"], m["balanced_accuracy"]) == (0.5, 0.5, 0.5, 0.5)


def test_selection_by_balanced_accuracy_then_auc():
    labels = np.array([0, 0, 1, 1])
    p = np.full((4, 150), 0.5)
    p[:, 7] = [0.1, 0.2, 0.8, 0.9]  # perfect
    p[:, 3] = [0.1, 0.6, 0.7, 0.9]  # balanced accuracy 0.75, AUC 1
    p[:, 9] = [0.45, 0.6, 0.7, 0.55]  # balanced accuracy 0.75, AUC 0.75
    assert select_cubes(p, labels, 2).tolist() == [3, 7]


@pytest.mark.slow
def test_learns_the_informative_cubes(capsys):
    rng = np.random.default_rng(0)
    train, val, test = generated(48, rng), generated(24, rng), generated(24, rng)
    config = TrainConfig(epochs=8, batch_size=8, patience=3, n_selected=3, seed=0, learning_rate=3e-3)
    ensemble, history, metrics = fit_ensemble(train, val, test, config)
    assert sorted(ensemble.selected.tolist()) == INFORMATIVE
    assert ensemble.meta.cube_weights.weight.numel() == len(INFORMATIVE)
    assert metrics["test"]["auc"] >= 0.95
    assert 1 <= len(history) <= 8 and "val balanced accuracy" in capsys.readouterr().out


def test_augment_moves_every_cube_of_an_image_alike():
    batch = torch.zeros(40, 2, 25, 25, 25)
    batch[:, 0, 12, 12, 12] = 1.0
    batch[:, 1, 3, 10, 14] = 1.0
    rng = np.random.default_rng(0)
    assert augment(batch, 0, False, rng) is batch
    moved = augment(batch, 2, False, rng)
    offsets = set()
    for image in moved:
        (a,), (b,) = (np.argwhere(cube.numpy() == 1.0) for cube in image)
        assert (a - [12, 12, 12]).tolist() == (b - [3, 10, 14]).tolist()  # one move per image
        assert np.abs(a - 12).max() <= 2 and image.sum() == 2.0
        offsets.add(tuple(a - 12))
    assert len(offsets) > 10  # moves vary over images


def test_augment_mirrors_the_whole_brain_never_a_cube_in_place():
    """SPEC 7: a mirrored image is the mirrored brain cut into cubes, so a lateral cube sees the
    other side's cube, mirrored; a cube mirrored in place would be anatomy that cannot occur."""
    rng = np.random.default_rng(1)
    volume = rng.random(GRID_SHAPE).astype(np.float32)
    cubes = torch.from_numpy(cut_cubes(volume))
    mirrored = torch.from_numpy(cut_cubes(np.ascontiguousarray(volume[::-1])))
    batch = cubes[None].repeat(12, 1, 1, 1, 1)
    out = augment(batch, 0, True, rng)
    kinds = [bool(torch.equal(image, mirrored)) for image in out]
    assert all(torch.equal(image, mirrored) or torch.equal(image, cubes) for image in out)
    assert 0 < sum(kinds) < len(kinds)  # mirrored at random
    # cube ix takes the x-mirrored content of cube 4 - ix (here ix 0 <- 4, iy 2, iz 3)
    assert torch.equal(mirrored[0 * 30 + 2 * 5 + 3], cubes[4 * 30 + 2 * 5 + 3].flip(0))


def brains(n, seed=0):
    """n images as cubes: a ball of brain, intensities in (0, 1] with some voxels at 1, and exact 0 outside."""
    rng = np.random.default_rng(seed)
    inside = (((np.indices(GRID_SHAPE).T - np.array(GRID_SHAPE) / 2) / 50.0) ** 2).sum(-1).T < 1
    volumes = np.where(inside, rng.uniform(0.05, 1.2, (n, *GRID_SHAPE)).clip(0, 1), 0.0)
    return torch.from_numpy(cut_cubes(volumes).astype(np.float32))


def test_randomise_scanner_is_seeded_one_draw_per_image_and_keeps_the_background_and_the_range():
    batch = brains(3)
    config = TrainConfig()
    first, again = (randomise_scanner(batch, config, np.random.default_rng(7)) for _ in range(2))
    other = randomise_scanner(batch, config, np.random.default_rng(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert not torch.equal(first, batch) and not torch.equal(first[0], first[1])  # each image its own scanner
    background = batch == 0
    assert (first[background] == 0).all() and (first[~background] > 0).all()
    assert first.min() >= 0 and first.max() == 1.0
    # the curve and the gamma act on intensity alone, the same way in every cube of an image
    alike = batch[:, :1].repeat(1, 150, 1, 1, 1)
    curved = randomise_scanner(alike, TrainConfig(bias_coefficient=0.0), np.random.default_rng(7))
    assert all(torch.equal(image[0], image[c]) for image in curved for c in (1, 75, 149))


def test_scanner_augmentation_off_changes_nothing_and_draws_nothing():
    batch, rng = brains(2), np.random.default_rng(7)
    state = rng.bit_generator.state
    assert randomise_scanner(batch, TrainConfig(scanner_augmentation=False), rng) is batch
    assert rng.bit_generator.state == state  # so training without it is the training it was before


def test_scanner_augmentation_by_hand():
    batch = brains(2)
    gamma_alone = TrainConfig(gamma_range=(2.0, 2.0), contrast_jitter=0.0, bias_coefficient=0.0)
    assert torch.allclose(randomise_scanner(batch, gamma_alone, np.random.default_rng(0)), batch**2, atol=1e-6)
    # slopes 0.5, 1.5, 1, 1 over the quarters of [0, 1]; flat outside
    x = torch.tensor([-0.1, 0.0, 0.25, 0.375, 0.5, 0.9, 1.0, 1.2]).view(1, 1, 1, 1, -1)
    curve = intensity_curve(x, torch.tensor([[0.5, 1.5, 1.0, 1.0]])).flatten()
    assert torch.allclose(curve, torch.tensor([0.0, 0.0, 0.125, 0.3125, 0.5, 0.9, 1.0, 1.0]))
    # log of the field a * x over the grid, x from -1 at grid voxel i = 0 to 1 at i = 120: cube
    # ix = 0 holds i = 0 at its voxel 2 (the padding comes first), cube ix = 2 holds i = 60 at its voxel 12
    field = bias_fields(torch.tensor([[0.2, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0.2, 0]]))
    assert field.shape == (2, 150, 25, 25, 25)
    assert torch.allclose(field[0, 0 * 30 + 3 * 5 + 1, 2], torch.tensor(np.exp(-0.2), dtype=torch.float32))
    assert torch.allclose(field[0, 2 * 30 + 3 * 5 + 1, 12], torch.tensor(1.0))
    # x * z: 1 at the grid's corner i = 0, k = 0, where both are -1; cube 0's voxel (2, ., 2)
    assert torch.allclose(field[1, 0, 2, :, 2], torch.tensor(np.exp(0.2), dtype=torch.float32))


def test_a_model_json_from_before_scanner_augmentation_still_loads(tmp_path):
    """The demo model was trained before it; should it be trained again, its keys are taken out here."""
    from bids_pscore.cohort import DEMO_MODEL
    from bids_pscore.model.bundle import load_bundle, metadata_sha256

    model = Path(shutil.copytree(DEMO_MODEL, tmp_path / "model"))
    meta = json.loads((model / "model.json").read_text())
    config = meta["training"]["config"]
    for key in ("scanner_augmentation", "gamma_range", "contrast_jitter", "bias_coefficient"):
        config.pop(key, None)
    (model / "model.json").write_text(json.dumps({**meta, "metadata_sha256": metadata_sha256(meta)}))
    assert load_bundle(model).metadata["training"]["config"] == config and config["flip"] is True


def informative_features(n, rng):
    """Meta-classifier inputs for 4 selected cubes: cube 0's features rise in AD; half of cube 1's
    rise and half fall, as the features of a real base network do (their sign means nothing)."""
    labels = np.arange(n) % 2
    features = rng.random((n, 150, 64)).astype(np.float32) * 0.5
    features[:, 0] += labels[:, None]
    features[:, 1, :32] += labels[:, None]
    features[:, 1, 32:] += (1 - labels)[:, None]
    return features, labels


def test_meta_weight_prior_keeps_cube_weights_near_one_over_n():
    rng = np.random.default_rng(0)
    train, val = informative_features(64, rng), informative_features(32, rng)
    weights, p_val = {}, {}
    for prior in (0.0, 100.0):
        ensemble = Ensemble([0, 1, 2, 3])
        config = TrainConfig(epochs=50, patience=50, learning_rate=1e-2, meta_weight_prior=prior)
        train_meta(ensemble, *train, config)
        weights[prior] = ensemble.meta.weights.numpy()
        with torch.no_grad():
            p_val[prior] = torch.softmax(ensemble.meta(torch.from_numpy(val[0][:, :4])), -1)[:, 1].numpy()
    assert np.abs(weights[0.0] - 0.25).max() > 0.2  # free, they drift

    assert np.abs(weights[100.0] - 0.25).max() < 0.01
    assert auc(p_val[100.0], val[1])[0] == 1.0  # and the image is still classified


@pytest.mark.slow
def test_permuted_test_labels_change_nothing_but_the_test_metrics():
    """SPEC 7 at the train level: cube selection, meta weights and every reference statistic come
    from the train and validation splits; the reference statistics from the validation split,
    as the bundle records."""
    from bids_pscore import pscore
    from bids_pscore.atlas import atlas_on_grid
    from bids_pscore.train import fit_model

    rng = np.random.default_rng(5)
    cubes, y = generated(64, rng)
    parts = {"train": np.arange(0, 32), "validation": np.arange(32, 48), "test": np.arange(48, 64)}
    mask = np.zeros(GRID_SHAPE, bool)
    mask[10:110, 10:130, 10:110] = True
    grid_atlas = atlas_on_grid()
    brain, overlap = (np.repeat(a, 64, axis=0) for a in pscore.brain_overlap(mask, grid_atlas))
    masks = np.repeat(np.packbits(mask)[None], 64, axis=0)
    sizes = pscore.region_sizes(grid_atlas)
    config = TrainConfig(epochs=6, batch_size=8, patience=3, n_selected=3, seed=0, learning_rate=3e-3)
    first = fit_model(cubes, y, parts, brain, overlap, masks, sizes, config)
    permuted = y.copy()
    permuted[parts["test"]] = rng.permutation(y[parts["test"]])
    assert (permuted != y).any()
    second = fit_model(cubes, permuted, parts, brain, overlap, masks, sizes, config)
    (e1, _, m1, ref1, rel1), (e2, _, m2, ref2, rel2) = first, second
    assert e1.selected.tolist() == e2.selected.tolist()
    assert torch.equal(e1.meta.weights, e2.meta.weights)
    assert ref1.to_dict() == ref2.to_dict() and rel1 == rel2
    assert m1["test"] != m2["test"]
    # the reference is that of the validation images, not of the training images
    from bids_pscore.model.training import Rows, predict_ensemble

    weights, selected = e1.weights_per_cube()

    def reference_of(rows):
        p_cube, p_image = predict_ensemble(e1, Rows(cubes, rows))
        region = pscore.region_scores(pscore.cube_scores(p_cube, weights, selected), brain[rows], overlap[rows], sizes)
        return pscore.reference_statistics(region, y[rows] == 1, p_image >= 0.5).to_dict()

    assert reference_of(parts["validation"]) == ref1.to_dict()
    assert reference_of(parts["train"]) != ref1.to_dict()
