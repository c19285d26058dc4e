"""Training of the ensemble (SPEC sections 4 and 7) on arrays of cubes; no BIDS in here.

Each cube's base classifier learns on its own loss (the losses are summed, and the cubes share
no parameter, so each gradient is its cube's alone), with early stopping on its own validation
loss and its best state kept. The N best cubes on validation balanced accuracy (ties: AUC) are
selected; the meta-classifier learns on their features of the validation images, which the base
classifiers never trained on (SPEC 7: on their own training images their features are
overconfident); the test split is scored once.
"""

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..grid import CUBE_SIZE, GRID_SHAPE, N_CUBES, cube_origins, mirror_cubes
from .networks import BaseClassifiers, Ensemble

log = logging.getLogger(__name__)

CUBE_VOXELS = CUBE_SIZE**3


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    batch_size: int = 8
    patience: int = 5
    learning_rate: float = 1e-3
    n_selected: int = 35
    seed: int = 0
    device: str = "cpu"
    # measured on the demo cohort (docs/training.md): with these the held-out region
    # ranking rose from AUC 0.59-0.66 to 0.74 at the same image AUC
    max_shift: int = 2
    flip: bool = True
    weight_decay: float = 1e-4
    meta_weight_prior: float = 100.0
    # each training image as another scanner would give it (randomise_scanner, docs/training.md).
    # A white/grey ratio r becomes r ** gamma: 2.3 takes the training scanner's lowest, 1.24, to
    # another 3T site's highest, 1.64; 0.6 takes 1.28 to 1.16, a flatter contrast
    scanner_augmentation: bool = True
    gamma_range: tuple = (0.6, 2.3)
    # log of the largest change of the curve's slope in one band of intensities (e^0.15: 16%)
    contrast_jitter: float = 0.15
    # largest coefficient of the bias field's log, a polynomial of degree 2 in the grid position
    bias_coefficient: float = 0.1


def auc(scores, labels):
    """Area under the ROC curve of each column of ``scores`` (n, k) for binary ``labels`` (n,)."""
    scores = np.asarray(scores, np.float64).reshape(len(labels), -1)
    labels = np.asarray(labels, bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return np.full(scores.shape[1], np.nan)
    # Mann-Whitney U with average ranks for ties
    order = scores.argsort(axis=0, kind="stable")
    ranks = np.empty_like(scores)
    for col in range(scores.shape[1]):
        values = scores[order[:, col], col]
        _, first, counts = np.unique(values, return_index=True, return_counts=True)
        average = first + (counts + 1) / 2.0
        ranks[order[:, col], col] = np.repeat(average, counts)
    return (ranks[labels].sum(axis=0) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def binary_metrics(p_ad, labels, threshold=0.5):
    """Accuracy, balanced accuracy, AUC, sensitivity and specificity of one score."""
    labels = np.asarray(labels, bool)
    predicted = np.asarray(p_ad) >= threshold
    sensitivity = float((predicted & labels).sum() / max(labels.sum(), 1))
    specificity = float((~predicted & ~labels).sum() / max((~labels).sum(), 1))
    return {
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": (sensitivity + specificity) / 2.0,
        "auc": float(auc(p_ad, labels)[0]),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "n": int(len(labels)),
    }


def per_cube_balanced_accuracy(p_cube, labels):
    labels = np.asarray(labels, bool)[:, None]
    predicted = np.asarray(p_cube) >= 0.5
    sensitivity = (predicted & labels).sum(0) / max(labels.sum(), 1)
    specificity = (~predicted & ~labels).sum(0) / max((~labels).sum(), 1)
    return (sensitivity + specificity) / 2.0


def select_cubes(p_cube_val, labels_val, n_selected):
    """The n cubes with the best validation balanced accuracy, ties broken by AUC; sorted."""
    bacc = per_cube_balanced_accuracy(p_cube_val, labels_val)
    area = np.nan_to_num(auc(p_cube_val, labels_val), nan=0.5)
    ranking = np.lexsort((-area, -bacc))  # last key first: balanced accuracy, then AUC
    return np.sort(ranking[:n_selected])


class Rows:
    """Some rows of an array or memory map, indexed like an array, copying nothing until read."""

    def __init__(self, array, rows):
        self.array, self.rows = array, np.asarray(rows, int)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.array[self.rows[index]]


def _batches(n, batch_size, rng=None):
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        yield np.sort(order[start : start + batch_size])


def _tensor(cubes, rows, device):
    """A float32 batch from an array or a memory-mapped cube cache (float16 on disk)."""
    return torch.from_numpy(np.asarray(cubes[rows], dtype=np.float32)).to(device)


def predict_base(base, cubes, batch_size=8, device="cpu"):
    """Features (n, 150, 64) and per-cube AD probabilities (n, 150)."""
    base.eval()
    features, probabilities = [], []
    with torch.no_grad():
        for rows in _batches(len(cubes), batch_size):
            f, logits = base(_tensor(cubes, rows, device))
            features.append(f.cpu())
            probabilities.append(torch.softmax(logits, -1)[..., 1].cpu())
    return torch.cat(features).numpy(), torch.cat(probabilities).numpy()


def predict_ensemble(ensemble, cubes, batch_size=8, device="cpu"):
    """Per-cube AD probabilities (n, 150) and the meta-classifier's (n,)."""
    features, p_cube = predict_base(ensemble.base, cubes, batch_size, device)
    ensemble.meta.eval()
    with torch.no_grad():
        logits = ensemble.meta(torch.as_tensor(features[:, ensemble.selected.cpu().numpy()], device=device))
    return p_cube, torch.softmax(logits, -1)[:, 1].cpu().numpy()


def augment(batch, max_shift, flip, rng):
    """Each image of a training batch (batch, 150, 25, 25, 25) moved by up to ``max_shift`` voxels
    along every axis (edges repeated) and, with ``flip``, the whole brain mirrored left-right at
    random (cube ix takes the mirrored cube 4 - ix, SPEC 7: a lateral cube never sees anatomy
    that cannot occur where it is).

    The same move for all cubes of one image, as a registration error would make it; a cube
    classifier then cannot key on the exact voxel where a boundary falls in its few training
    images, which it otherwise does by epoch 8 (validation loss rising while training loss falls).
    """
    if max_shift == 0 and not flip:
        return batch
    size = batch.shape[-1]
    padded = F.pad(batch, (max_shift,) * 6, mode="replicate") if max_shift else batch
    moved = []
    for image, offset, mirror in zip(padded, rng.integers(0, 2 * max_shift + 1, (len(batch), 3)), rng.random(len(batch)) < 0.5):
        x, y, z = offset
        image = image[:, x : x + size, y : y + size, z : z + size]
        moved.append(mirror_cubes(image) if flip and mirror else image)
    return torch.stack(moved)


# the intensity curve's bands: a quarter of [0, 1] each, so that dark (CSF-rich), grey and white
# voxels change their contrast independently
CURVE_BANDS = 4


def intensity_curve(images, slopes):
    """A monotone piecewise-linear curve of each image (n, 150, 25, 25, 25), from 0 at 0 to
    ``slopes.mean()`` at 1 and flat outside [0, 1]; ``slopes`` (n, CURVE_BANDS) are its positive
    slopes over the bands."""
    width = 1.0 / slopes.shape[1]
    curve, ramp = torch.zeros_like(images), torch.empty_like(images)
    for band, slope in enumerate(slopes.T):  # in place: a batch is 19 million voxels
        torch.sub(images, band * width, out=ramp).clamp_(0.0, width)
        curve.addcmul_(ramp, slope.view(-1, 1, 1, 1, 1))
    return curve


def cube_positions():
    """Each cube voxel's grid position along x, y and z, scaled to [-1, 1] over the grid (a little
    beyond in the padding); shaped (150, 25, 1, 1), (150, 1, 25, 1) and (150, 1, 1, 25)."""
    index = cube_origins()[:, :, None] + np.arange(CUBE_SIZE)  # (150, 3, 25)
    scaled = torch.from_numpy(2.0 * index / (np.array(GRID_SHAPE)[:, None] - 1) - 1.0).float()
    return scaled[:, 0, :, None, None], scaled[:, 1, None, :, None], scaled[:, 2, None, None, :]


def bias_fields(coefficients):
    """exp of a polynomial of degree 2 (no constant) in the grid position, at every cube voxel:
    (n, 150, 25, 25, 25) for ``coefficients`` (n, 9) of x, y, z, x², y², z², xy, xz, yz."""
    x, y, z = (axis.to(coefficients.device) for axis in cube_positions())
    c = coefficients.view(*coefficients.shape, 1, 1, 1, 1).unbind(1)
    # the terms grouped by the plane they vary in, so that only the last products are full-size
    in_xy = c[0] * x + c[1] * y + c[3] * x * x + c[4] * y * y + c[6] * x * y
    in_xz = c[2] * z + c[5] * z * z + c[7] * x * z
    in_yz = c[8] * y * z
    return in_xy.exp() * in_xz.exp() * in_yz.exp()


def randomise_scanner(batch, config, rng):
    """Each image of a training batch (batch, 150, 25, 25, 25), intensities in [0, 1] and 0 outside
    the brain (SPEC 2), as another scanner would give it: a random monotone intensity curve (each
    tissue's contrast), a gamma (the white/grey ratio, which differs between sites: a model trained
    at one called every healthy head of another AD) and a smooth multiplicative bias field (what
    N4 leaves). One draw for all cubes of an image, as a scanner acts on the whole head; 0 stays 0
    and values stay in [0, 1].

    No added blur or noise: FWHMs add in quadrature, so a 3 mm acquisition rather than a 1 mm one
    widens the 8 mm smoothing by at most half a millimetre, and the smoothing averages the noise of
    a 1 mm acquisition over about 1700 mm^3, dividing its SD by about 40; white noise added on the
    smoothed grid would be an image that cannot occur (SPEC 7).
    """
    if not config.scanner_augmentation:
        return batch
    n = len(batch)
    gamma = np.exp(rng.uniform(*np.log(config.gamma_range), n))  # log-uniform: steepening by g as likely as flattening by 1/g
    slopes = np.exp(rng.uniform(-config.contrast_jitter, config.contrast_jitter, (n, CURVE_BANDS)))
    slopes /= slopes.mean(axis=1, keepdims=True)  # 1 stays 1: the curve moves tissues, not the scale
    coefficients = rng.uniform(-config.bias_coefficient, config.bias_coefficient, (n, 9))

    def tensor(values):
        return torch.as_tensor(values, dtype=batch.dtype, device=batch.device)

    scanned = intensity_curve(batch, tensor(slopes)).pow_(tensor(gamma).view(-1, 1, 1, 1, 1))
    return scanned.mul_(bias_fields(tensor(coefficients))).clamp_(0.0, 1.0)


def _per_cube_loss(logits, labels):
    """Cross-entropy of each cube over the batch; (150,)."""
    batch, n_cubes, _ = logits.shape
    losses = F.cross_entropy(logits.reshape(-1, 2), labels.repeat_interleave(n_cubes), reduction="none")
    return losses.view(batch, n_cubes).mean(0)


def cube_statistics(cubes, batch_size=8):
    """Mean and SD of each cube over all images and voxels, in one pass over batches."""
    total = np.zeros(N_CUBES)
    squares = np.zeros(N_CUBES)
    for rows in _batches(len(cubes), batch_size):
        batch = np.asarray(cubes[rows], dtype=np.float64).reshape(len(rows), N_CUBES, -1)
        total += batch.sum(axis=(0, 2))
        squares += (batch**2).sum(axis=(0, 2))
    count = len(cubes) * CUBE_VOXELS
    mean = total / count
    return mean, np.sqrt(np.maximum(squares / count - mean**2, 0.0))


def train_base(train_cubes, train_labels, val_cubes, val_labels, config):
    """Train the 150 base classifiers; returns the module in each cube's best state and the history."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = torch.device(config.device)
    base = BaseClassifiers()
    base.set_input_statistics(*cube_statistics(train_cubes, config.batch_size))
    base.to(device)
    optimiser = torch.optim.AdamW(base.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    y_train = torch.as_tensor(np.asarray(train_labels), dtype=torch.long, device=device)
    y_val = torch.as_tensor(np.asarray(val_labels), dtype=torch.long, device=device)
    best_state = copy.deepcopy(base.state_dict())
    best_loss = np.full(N_CUBES, np.inf)
    waited = np.zeros(N_CUBES, int)
    history, start = [], time.monotonic()
    for epoch in range(1, config.epochs + 1):
        base.train()
        train_loss = []
        for rows in _batches(len(train_cubes), config.batch_size, rng):
            batch = augment(_tensor(train_cubes, rows, device), config.max_shift, config.flip, rng)
            batch = randomise_scanner(batch, config, rng)
            _, logits = base(batch)
            loss = _per_cube_loss(logits, y_train[rows])
            optimiser.zero_grad()
            loss.sum().backward()
            optimiser.step()
            train_loss.append(loss.detach().cpu().numpy() * len(rows))
        base.eval()
        val_loss, val_p = np.zeros(N_CUBES), []
        with torch.no_grad():
            for rows in _batches(len(val_cubes), config.batch_size):
                _, logits = base(_tensor(val_cubes, rows, device))
                val_loss += _per_cube_loss(logits, y_val[rows]).cpu().numpy() * len(rows)
                val_p.append(torch.softmax(logits, -1)[..., 1].cpu().numpy())
        val_loss /= len(val_cubes)
        improved = val_loss < best_loss
        best_loss[improved] = val_loss[improved]
        waited = np.where(improved, 0, waited + 1)
        _keep_cubes(best_state, base.state_dict(), improved)
        bacc = per_cube_balanced_accuracy(np.concatenate(val_p), val_labels)
        elapsed = time.monotonic() - start
        active = int((waited < config.patience).sum())
        row = {
            "epoch": epoch, "train_loss": float(np.sum(train_loss, axis=0).mean() / len(train_cubes)),
            "val_loss": float(val_loss.mean()), "val_balanced_accuracy": float(bacc.mean()),
            "cubes_improved": int(improved.sum()), "cubes_training": active, "seconds": round(elapsed, 1),
        }  # fmt: skip
        history.append(row)
        eta = elapsed / epoch * (config.epochs - epoch)
        log.info(
            f"epoch {epoch:3d}/{config.epochs}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
            f"val balanced accuracy {row['val_balanced_accuracy']:.3f}  cubes still improving {active}/{N_CUBES}  ETA {eta:.0f} s"
        )
        if active == 0:
            break
    base.load_state_dict(best_state)
    return base, history


def _keep_cubes(best_state, state, cubes):
    """Copy the parameters of the given cubes from ``state`` into ``best_state``."""
    if not cubes.any():
        return
    index = torch.as_tensor(np.flatnonzero(cubes))
    for name, tensor in state.items():
        best_state[name].view(N_CUBES, -1)[index] = tensor.detach().view(N_CUBES, -1)[index]


def train_meta(ensemble, features, labels, config):
    """Train the meta-classifier on the selected cubes' features of images the base classifiers did
    not train on, until its loss stops falling for ``2 * patience`` epochs; keeps its best state.

    ``meta_weight_prior`` pulls each w_c towards its start, 1/N (an L2 penalty). w_c scales a
    cube's internal features, whose sign says nothing about AD, so a free w_c is negative about
    as often as not (12-17 of 35 on the demo cohort), and then a cube's P-score falls as its AD
    probability rises. Held near 1/N the image AUC stayed the same and the region ranking rose.
    """
    torch.manual_seed(config.seed)
    meta = ensemble.meta
    device = next(meta.parameters()).device
    selected = ensemble.selected.cpu().numpy()
    x = torch.as_tensor(features[:, selected], dtype=torch.float32, device=device)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long, device=device)
    optimiser = torch.optim.Adam(meta.parameters(), lr=config.learning_rate)
    best, best_loss, waited = copy.deepcopy(meta.state_dict()), np.inf, 0
    rng = np.random.default_rng(config.seed)

    def penalised_loss(rows):
        loss = F.cross_entropy(meta(x[rows]), y[rows])
        return loss + config.meta_weight_prior * ((meta.cube_weights.weight - 1.0 / len(selected)) ** 2).sum()

    for _ in range(config.epochs * 4):
        meta.train()
        for rows in _batches(len(x), config.batch_size, rng):
            loss = penalised_loss(rows)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        meta.eval()
        with torch.no_grad():
            epoch_loss = float(penalised_loss(np.arange(len(x))))
        if epoch_loss < best_loss - 1e-6:
            best, best_loss, waited = copy.deepcopy(meta.state_dict()), epoch_loss, 0
        else:
            waited += 1
            if waited >= config.patience * 2:
                break
    meta.load_state_dict(best)
    meta.eval()
    return meta


def fit_ensemble(train, val, test, config):
    """``train``, ``val``, ``test``: (cubes, labels) with labels 1 for AD. Returns the ensemble,
    the history of base training, and the metrics (validation per cube, test once)."""
    base, history = train_base(*train, *val, config)
    device = config.device
    val_features, val_p = predict_base(base, val[0], config.batch_size, device)
    selected = select_cubes(val_p, val[1], config.n_selected)
    ensemble = Ensemble(selected)
    ensemble.base = base
    ensemble.to(device)
    train_meta(ensemble, val_features, val[1], config)
    ensemble.eval()
    _, p_test = predict_ensemble(ensemble, test[0], config.batch_size, device)
    metrics = {
        "validation_cubes": {
            "balanced_accuracy": per_cube_balanced_accuracy(val_p, val[1]).tolist(),
            "auc": np.nan_to_num(auc(val_p, val[1]), nan=0.5).tolist(),
        },
        "test": binary_metrics(p_test, test[1]),
    }
    log.info(
        f"selected cubes: {selected.tolist()}; test AUC {metrics['test']['auc']:.3f}, balanced accuracy {metrics['test']['balanced_accuracy']:.3f}"
    )
    return ensemble, history, metrics
