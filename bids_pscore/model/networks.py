"""The 150 base classifiers as one batched module, and the meta-classifier (SPEC section 4).

Nothing here knows BIDS: inputs are cubes cut from grid images (``grid.cut_cubes``).
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..grid import CUBE_SIZE, N_CUBES

# the seven layers of a base classifier: conv 8, pool, conv 16, pool, conv 32, conv 64, linear
CHANNELS = (8, 16, 32, 64)
N_FEATURES = CHANNELS[-1]
N_CLASSES = 2  # logit 0: control, logit 1: AD


class BaseClassifiers(nn.Module):
    """``n_cubes`` independent 3D CNNs whose parameters are stacked by cube.

    Every layer is a grouped convolution with one group per cube, so the cubes share no
    parameter and a cube's loss reaches only its own weights. Input (batch, n_cubes, 25, 25,
    25); outputs the 64 features (batch, n_cubes, 64) and the logits (batch, n_cubes, 2).

    ``chunk`` cubes go through each convolution call. One call for all 150 is meant for a GPU;
    on a CPU, oneDNN's grouped 3-D convolutions slow down with many groups, and chunks of 3 in
    channels-last layout were fastest (forward + backward + Adam, batch 8, 2 cores: 0.58 s;
    chunks of 1: 0.81 s, of 10: 0.71 s, one call of 150: 1.0 s; 150 separate models in a
    loop: 1.02 s).
    """

    def __init__(self, n_cubes=N_CUBES, chunk=None):
        super().__init__()
        self.n_cubes = n_cubes
        self.chunk = chunk
        g, (c1, c2, c3, c4) = n_cubes, CHANNELS
        self.convs = nn.ModuleList([
            nn.Conv3d(g, g * c1, 3, groups=g),  # 25 -> 23, then pool -> 11
            nn.Conv3d(g * c1, g * c2, 3, groups=g),  # -> 9, then pool -> 4
            nn.Conv3d(g * c2, g * c3, 3, groups=g),  # -> 2
            nn.Conv3d(g * c3, g * c4, 2, groups=g),  # -> 1: the 64 features
        ])  # fmt: skip
        # the per-cube linear layer 64 -> 2, as a grouped 1x1x1 convolution
        self.classify = nn.Conv3d(g * c4, g * N_CLASSES, 1, groups=g)
        # each cube's input is standardised by the mean and SD of that cube over the training
        # images (set by training, kept in the bundle): on raw grey levels around 0.75 the
        # networks stayed at chance even where atrophy lowered the amygdala by 3% (t = -10 over
        # the cohort); standardised, the same cube reached 0.88 test accuracy in 15 epochs
        self.register_buffer("input_mean", torch.zeros(n_cubes))
        self.register_buffer("input_scale", torch.ones(n_cubes))

    def set_input_statistics(self, mean, scale):
        """Per-cube mean and SD of the training images' cubes (each (n_cubes,))."""
        self.input_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.input_scale.copy_(torch.clamp(torch.as_tensor(scale, dtype=torch.float32), min=1e-3))

    def _chunk_size(self, device):
        if self.chunk:
            return self.chunk
        return self.n_cubes if device.type == "cuda" else 3

    def _layers_by_chunk(self, step):
        """Each layer's (weight, bias) cut into chunks of ``step`` cubes.

        One split per layer: its backward joins the chunks' gradients in one copy, where a
        slice per chunk would add each chunk's gradient into a zero tensor of the whole layer.
        """
        layers = []
        for conv in [*self.convs, self.classify]:
            rows = step * (conv.out_channels // self.n_cubes)
            layers.append(list(zip(conv.weight.split(rows), conv.bias.split(rows))))
        return [list(chunk) for chunk in zip(*layers)]

    @staticmethod
    def _run(hidden, layers, n):
        """Features and logits of one chunk of n cubes through its slices of every layer."""
        if hidden.device.type == "cpu":
            hidden = hidden.contiguous(memory_format=torch.channels_last_3d)
        for depth, (weight, bias) in enumerate(layers[:-1]):
            hidden = F.conv3d(hidden, weight, bias, groups=n)
            # max-pooling before the ReLU gives the same result on 8 times fewer values
            if depth < 2:
                hidden = F.max_pool3d(hidden, 2)
            hidden = F.relu(hidden)
        weight, bias = layers[-1]
        return hidden.flatten(1), F.conv3d(hidden, weight, bias, groups=n).flatten(1)

    def forward(self, cubes):
        batch = cubes.shape[0]
        if tuple(cubes.shape[1:]) != (self.n_cubes, CUBE_SIZE, CUBE_SIZE, CUBE_SIZE):
            raise ValueError(f"expected cubes of shape (batch, {self.n_cubes}, {CUBE_SIZE}, {CUBE_SIZE}, {CUBE_SIZE}), got {tuple(cubes.shape)}")
        cubes = (cubes - self.input_mean.view(1, -1, 1, 1, 1)) / self.input_scale.view(1, -1, 1, 1, 1)
        step = self._chunk_size(cubes.device)
        parts = [self._run(chunk, layers, chunk.shape[1]) for chunk, layers in zip(cubes.split(step, dim=1), self._layers_by_chunk(step))]
        features = torch.cat([p[0] for p in parts], dim=1).view(batch, self.n_cubes, N_FEATURES)
        logits = torch.cat([p[1] for p in parts], dim=1).view(batch, self.n_cubes, N_CLASSES)
        return features, logits


class MetaClassifier(nn.Module):
    """One weight w_c per selected cube, shared over the 64 features, then 64 -> 2.

    z_f = sum_c w_c F_fc + b (a 1-D convolution with one kernel of size N over each feature
    row), w_c starting at 1/N; a fully connected layer maps z to the two logits.
    """

    def __init__(self, n_selected):
        super().__init__()
        self.cube_weights = nn.Conv1d(1, 1, kernel_size=n_selected)
        nn.init.constant_(self.cube_weights.weight, 1.0 / n_selected)
        self.classify = nn.Linear(N_FEATURES, N_CLASSES)

    def forward(self, features):
        """features: (batch, n_selected, 64) -> logits (batch, 2)."""
        batch, n_selected, n_features = features.shape
        rows = features.transpose(1, 2).reshape(batch * n_features, 1, n_selected)
        z = self.cube_weights(rows).view(batch, n_features)
        return self.classify(z)

    @property
    def weights(self):
        """w_c of the selected cubes, in the order of ``selected``."""
        return self.cube_weights.weight.detach().view(-1)


class Ensemble(nn.Module):
    """Base classifiers and meta-classifier: per-cube AD probabilities and the image's, in one call."""

    def __init__(self, selected, n_cubes=N_CUBES):
        super().__init__()
        self.base = BaseClassifiers(n_cubes)
        self.register_buffer("selected", torch.as_tensor(selected, dtype=torch.long))
        self.meta = MetaClassifier(len(self.selected))

    def weights_per_cube(self):
        """w_c on every cube (0 where not selected) and the selected cubes as a mask; numpy."""
        weights = torch.zeros(self.base.n_cubes)
        weights[self.selected.cpu()] = self.meta.weights.cpu()
        selected = torch.zeros(self.base.n_cubes, dtype=torch.bool)
        selected[self.selected.cpu()] = True
        return weights.numpy().astype(float), selected.numpy()

    def forward(self, cubes):
        features, logits = self.base(cubes)
        meta_logits = self.meta(features[:, self.selected])
        return {
            "features": features,
            "p_cube": torch.softmax(logits, dim=-1)[..., 1],
            "p_image": torch.softmax(meta_logits, dim=-1)[..., 1],
            "image_logit": meta_logits[..., 1] - meta_logits[..., 0],  # p_image = sigmoid(image_logit)
        }
