"""Training learns a generated task whose signal lies in known cubes, and picks those cubes."""

import numpy as np
import pytest
import torch

from bids_pscore.model.networks import Ensemble
from bids_pscore.model.training import TrainConfig, auc, augment, binary_metrics, fit_ensemble, select_cubes, train_meta

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


def test_augment_moves_every_cube_of_an_image_alike_and_mirrors_left_right():
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
    mirrored = augment(batch, 0, True, rng)
    where = [tuple(np.argwhere(image[1].numpy() == 1.0)[0]) for image in mirrored]
    assert set(where) == {(3, 10, 14), (21, 10, 14)}  # x (left-right) mirrored or not, nothing else


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
        train_meta(ensemble, *train, *val, config)
        weights[prior] = ensemble.meta.weights.numpy()
        with torch.no_grad():
            p_val[prior] = torch.softmax(ensemble.meta(torch.from_numpy(val[0][:, :4])), -1)[:, 1].numpy()
    assert np.abs(weights[0.0] - 0.25).max() > 0.2  # free, they drift

    assert np.abs(weights[100.0] - 0.25).max() < 0.01
    assert auc(p_val[100.0], val[1])[0] == 1.0  # and the image is still classified
