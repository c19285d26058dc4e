"""Training learns a generated task whose signal lies in known cubes, and picks those cubes."""

import numpy as np
import pytest

from bids_pscore.model.training import TrainConfig, auc, binary_metrics, fit_ensemble, select_cubes

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
