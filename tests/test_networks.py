"""The batched base classifiers equal 150 separate models, and the meta-classifier is SPEC's."""

import numpy as np
import pytest
import torch

from bids_pscore.model.networks import N_FEATURES, BaseClassifiers, Ensemble, MetaClassifier

N = 150


@pytest.fixture(scope="module")
def batched():
    torch.manual_seed(0)
    return BaseClassifiers(N)


def separate_models(batched):
    """150 single-cube models holding the batched module's weights, cube by cube."""
    models = []
    for c in range(N):
        single = BaseClassifiers(1)
        state = {}
        for name, tensor in batched.state_dict().items():
            per_cube = tensor.shape[0] // N
            state[name] = tensor[c * per_cube : (c + 1) * per_cube].clone()
        single.load_state_dict(state)
        models.append(single)
    return models


def test_batched_equals_separate_models(batched):
    cubes = torch.rand(3, N, 25, 25, 25)
    features, logits = batched(cubes)
    assert features.shape == (3, N, N_FEATURES) and logits.shape == (3, N, 2)
    for c, model in enumerate(separate_models(batched)):
        f, lg = model(cubes[:, c : c + 1])
        torch.testing.assert_close(f[:, 0], features[:, c], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(lg[:, 0], logits[:, c], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 7, 150])
def test_chunking_does_not_change_the_result(batched, chunk):
    cubes = torch.rand(2, N, 25, 25, 25)
    reference = batched(cubes)[1]
    batched.chunk = chunk
    try:
        torch.testing.assert_close(batched(cubes)[1], reference, atol=1e-5, rtol=1e-5)
    finally:
        batched.chunk = None


def test_one_cubes_loss_reaches_only_its_own_parameters(batched):
    batched.zero_grad()
    _, logits = batched(torch.rand(2, N, 25, 25, 25))
    logits[:, 42].sum().backward()
    for name, param in batched.named_parameters():
        grad = param.grad.view(N, -1)
        others = torch.cat([grad[:42], grad[43:]])
        assert not others.any(), name
        assert grad[42].any(), name
    batched.zero_grad()


def test_meta_classifier_has_one_weight_per_selected_cube():
    meta = MetaClassifier(35)
    assert meta.cube_weights.weight.shape == (1, 1, 35)
    assert torch.allclose(meta.weights, torch.full((35,), 1 / 35))
    # z_f = sum_c w_c F_fc + b, by hand
    features = torch.randn(4, 35, N_FEATURES)
    with torch.no_grad():
        meta.cube_weights.weight.copy_(torch.randn(1, 1, 35))
    w, b = meta.weights, meta.cube_weights.bias
    z = torch.einsum("bcf,c->bf", features, w) + b
    torch.testing.assert_close(meta(features), meta.classify(z))
    n_params = sum(p.numel() for p in meta.cube_weights.parameters())
    assert n_params == 35 + 1


def test_ensemble_gives_every_output_in_one_call():
    selected = np.sort(np.random.default_rng(0).choice(N, 35, replace=False))
    model = Ensemble(selected)
    out = model(torch.rand(2, N, 25, 25, 25))
    assert out["features"].shape == (2, N, N_FEATURES)
    assert out["p_cube"].shape == (2, N) and torch.all((out["p_cube"] > 0) & (out["p_cube"] < 1))
    assert out["p_image"].shape == (2,)


def test_input_standardisation_is_per_cube_and_computed_on_the_given_images():
    from bids_pscore.model.training import cube_statistics

    rng = np.random.default_rng(0)
    cubes = rng.normal(0.7, 0.1, (5, 3, 25, 25, 25)).astype(np.float32)
    cubes[:, 1] = 0.2 + 0.5 * cubes[:, 1]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("bids_pscore.model.training.N_CUBES", 3)
        mean, sd = cube_statistics(cubes, batch_size=2)
    np.testing.assert_allclose(mean, cubes.mean(axis=(0, 2, 3, 4)), rtol=1e-5)
    np.testing.assert_allclose(sd, cubes.std(axis=(0, 2, 3, 4)), rtol=1e-4)
    torch.manual_seed(0)
    net = BaseClassifiers(3)
    plain = net(torch.from_numpy((cubes - mean[None, :, None, None, None].astype(np.float32)) / sd[None, :, None, None, None].astype(np.float32)))
    net.set_input_statistics(mean, sd)
    standardised = net(torch.from_numpy(cubes))
    torch.testing.assert_close(standardised[1], plain[1], rtol=1e-4, atol=1e-5)
    assert "input_mean" in net.state_dict() and "input_scale" in net.state_dict()  # saved with the weights
