"""The image quality gate's measures against hand computations, and its thresholds option."""

import json

import numpy as np
import pytest

from bids_pscore import qc
from bids_pscore.cli.run import parse_args
from bids_pscore.errors import UsageError


def tissue_phantom():
    """A 'template': grey shell (0.5) around white core (1.0), with probability maps to match."""
    grid = np.indices((20, 20, 20)) - 9.5
    radius = np.sqrt((grid**2).sum(0))
    white, grey = (radius < 5).astype(float), ((radius >= 5) & (radius < 8)).astype(float)
    template = 1.0 * white + 0.5 * grey
    return template, radius < 8, grey, white


def test_the_template_itself_passes_with_correlation_one_and_its_white_grey_ratio():
    template, mask, grey, white = tissue_phantom()
    values = qc.measures(template, mask, template, mask, grey, white, brain_volume_ml=1200)
    assert values == {"brain_volume_ml": 1200.0, "template_correlation": 1.0, "wm_gm_ratio": 2.0}
    assert qc.failures(values) == [] and qc.record(values)["Passed"]


def test_inverted_contrast_a_flat_mask_and_noise_each_fail():
    template, mask, grey, white = tissue_phantom()
    t2_like = np.where(mask, 1.5 - template, 0)  # bright grey, dark white
    flat = mask * 1.0
    noise = np.random.default_rng(0).random(template.shape) * mask
    for image, failing in ((t2_like, "wm_gm_ratio 0.5 is below"), (flat, "wm_gm_ratio 1 is below"), (noise, "template_correlation")):
        values = qc.measures(image, mask, template, mask, grey, white, brain_volume_ml=1200)
        assert any(f.startswith(failing) for f in qc.failures(values)), (failing, values)
    # a whole-volume constant has no correlation to speak of: 0, not NaN
    assert qc.measures(np.ones_like(template), mask, template, mask, grey, white, 1200)["template_correlation"] == 0.0


def test_brain_volume_outside_its_range_fails_on_either_side():
    low, high = qc.DEFAULT_BOUNDS["brain_volume_ml"]
    base = {"template_correlation": 0.9, "wm_gm_ratio": 1.3}
    assert qc.failures({**base, "brain_volume_ml": low - 1}) == [f"brain_volume_ml {low - 1:g} is below {low:g}"]
    assert qc.failures({**base, "brain_volume_ml": high + 1}) == [f"brain_volume_ml {high + 1:g} is above {high:g}"]


def test_qc_thresholds_merge_over_the_defaults_from_json_or_a_file_and_off_disables(tmp_path):
    merged = qc.parse_bounds('{"template_correlation": [0.5, null]}')
    assert merged["template_correlation"] == (0.5, None) and merged["wm_gm_ratio"] == qc.DEFAULT_BOUNDS["wm_gm_ratio"]
    path = tmp_path / "qc.json"
    path.write_text(json.dumps({"brain_volume_ml": [100, None]}))
    assert qc.parse_bounds(str(path))["brain_volume_ml"] == (100.0, None)
    off = qc.parse_bounds("off")
    assert qc.failures({"brain_volume_ml": 1.0, "template_correlation": -1.0, "wm_gm_ratio": 0.0}, off) == []
    config = parse_args(["/d", "/o", "participant", "--qc-thresholds", '{"wm_gm_ratio": [1.0, null]}'])
    assert config.qc_thresholds["wm_gm_ratio"] == (1.0, None)


@pytest.mark.parametrize("text, says", [
    ("{not json", "neither JSON nor a readable JSON file"),
    ('{"snr": [1, 2]}', "unknown measure 'snr'"),
    ('{"wm_gm_ratio": 1.2}', "needs [low, high]"),
    ('[1, 2]', "must map measures"),
])  # fmt: skip
def test_bad_qc_thresholds_are_refused_with_the_fix(text, says):
    with pytest.raises(UsageError, match=says.replace("[", r"\[")):
        qc.parse_bounds(text)


def test_omp_nthreads_zero_is_refused_not_taken_for_the_default():
    with pytest.raises(UsageError, match="--omp-nthreads must be at least 1"):
        parse_args(["/d", "/o", "participant", "--omp-nthreads", "0"])
