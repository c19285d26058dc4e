"""The model bundle: a round trip gives identical predictions; damage is refused, each kind with its own message naming
the key of model.json (its JSON Schema, model-v3.schema.json) or the file."""

import hashlib
import json
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bids_pscore.model.bundle import METADATA, WEIGHTS, BundleError, load_bundle, metadata_sha256, model_warnings, save_bundle
from bids_pscore.model.networks import Ensemble
from bids_pscore.model.preprocessing import PreprocParams
from bids_pscore.model.relevance import RELEVANCE

METADATA_FIELDS = {
    "name": "test", "version": "0", "preprocessing": PreprocParams().to_dict(),
    "reference": {"region_min": [0.0] * 246, "region_max": [1.0] * 246, "lambda": 0.7},
    "atlas": {"name": "Brainnetome"}, "labels": {"positive": "AD", "negative": "CN"},
    "training": {"subjects": 10}, "software": {"torch": torch.__version__},
}  # fmt: skip

STANDARDISATION_KEYS = {"intensity_standardisation", "tissue_levels", "tissue_probabilities"}


@pytest.fixture
def bundle_dir(tmp_path):
    torch.manual_seed(1)
    model = Ensemble(np.array([3, 17, 42, 99, 140]))
    with torch.no_grad():
        model.meta.cube_weights.weight.copy_(torch.tensor([[[0.5, -1.0, 0.25, 2.0, 0.1]]]))
    return save_bundle(tmp_path / "model", model, METADATA_FIELDS), model


def test_round_trip_gives_identical_predictions(bundle_dir):
    folder, model = bundle_dir
    loaded = load_bundle(folder)
    cubes = torch.rand(2, 150, 25, 25, 25)
    model.eval()
    with torch.no_grad():
        a, b = model(cubes), loaded.ensemble(cubes)
    torch.testing.assert_close(a["p_cube"], b["p_cube"], rtol=0, atol=0)
    torch.testing.assert_close(a["p_image"], b["p_image"], rtol=0, atol=0)
    weights, selected = loaded.ensemble.weights_per_cube()
    assert selected.sum() == 5 and weights[17] == -1.0 and weights[0] == 0.0
    assert loaded.metadata["cube_weights"] == pytest.approx([0.5, -1.0, 0.25, 2.0, 0.1])


def test_a_changed_byte_in_the_weights(bundle_dir):
    folder, _ = bundle_dir
    data = bytearray((folder / WEIGHTS).read_bytes())
    data[-10] ^= 0xFF
    (folder / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum does not match"):
        load_bundle(folder)


def test_truncated_weights_fail_the_checksum(bundle_dir):
    folder, _ = bundle_dir
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:1000])
    with pytest.raises(BundleError, match="changed or truncated"):
        load_bundle(folder)


def test_truncated_weights_under_a_matching_checksum_cannot_be_read(bundle_dir):
    folder, _ = bundle_dir
    (folder / WEIGHTS).write_bytes((folder / WEIGHTS).read_bytes()[:1000])
    edit_metadata(folder, lambda m: m["weights"].update(sha256=hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()))
    with pytest.raises(BundleError, match="cannot be read as safetensors"):
        load_bundle(folder)


def edit_metadata(folder, change, reseal=True):
    """Change model.json; resealed (its checksum recomputed) unless told not to, so that each
    test reaches the check it is about."""
    meta = json.loads((folder / METADATA).read_text())
    change(meta)
    if reseal:
        meta["metadata_sha256"] = metadata_sha256(meta)
    (folder / METADATA).write_text(json.dumps(meta))


@pytest.mark.parametrize("change", [
    lambda m: m["reference"].update({"lambda": 0.2}),  # would flag most regions of a control
    lambda m: m["reference"]["region_max"].__setitem__(5, 9.0),
    lambda m: m.update(selected_cubes=m["selected_cubes"][::-1]),
])  # fmt: skip
def test_an_edited_model_json_is_refused_by_its_checksum(bundle_dir, change):
    folder, _ = bundle_dir
    edit_metadata(folder, change, reseal=False)
    with pytest.raises(BundleError, match="was changed after training"):
        load_bundle(folder)


def with_normative(record):
    return lambda m: m.update(normative=record)


NORMATIVE_RECORD = {"file": "normative.safetensors", "sha256": "0" * 64, "covariates": {"age": True, "sex": True, "age_centre": 40.0},
                    "features": ["grey_level"], "flag_feature": "grey_level", "threshold": -3.5, "distance_threshold": 2.0}  # fmt: skip

# (id, how model.json is damaged, how the message goes on after "<folder>/model.json: ")
MALFORMED = [
    ("wrong type", lambda m: m["preprocessing"].update(fwhm_mm="x"), 'preprocessing.fwhm_mm must be a finite number (got "x")'),
    ("integer written as a float", lambda m: m["selected_cubes"].__setitem__(0, 3.0), "selected_cubes[0] must be an integer (got 3.0)"),
    ("missing key", lambda m: m.pop("reference"), "reference is missing"),
    ("missing preprocessing parameter", lambda m: m["preprocessing"].pop("n4_shrink_mm"), "preprocessing.n4_shrink_mm is missing"),
    ("missing lambda", lambda m: m["reference"].pop("lambda"), "reference.lambda is missing"),
    ("lambda NaN", lambda m: m["reference"].update({"lambda": float("nan")}), "reference.lambda must be a finite number (got NaN)"),
    ("10 regions, not 246", lambda m: m["reference"].update(region_min=[0.0] * 10), "reference.region_min must hold at least 246 items (got 10)"),
    ("duplicate cube", lambda m: m.update(selected_cubes=[3, 3, 42, 99, 140]), "selected_cubes lists 3 more than once"),
    ("cube beyond the grid", lambda m: m["selected_cubes"].__setitem__(4, 150), "selected_cubes[4] must be at most 149 (got 150)"),
    ("unknown template", lambda m: m["preprocessing"].update(template="MNI152NLin6Asym"),
     'preprocessing.template must be "MNI152NLin2009aSym" (got "MNI152NLin6Asym")'),
    ("unknown atlas", lambda m: m["atlas"].update(name="AAL"), 'atlas.name must be "Brainnetome" (got "AAL")'),
    ("list instead of object", lambda m: m.update(reference=[0.7]), "reference must be a JSON object (got a list of 1)"),
    ("list instead of preprocessing", lambda m: m.update(preprocessing=[]), "preprocessing must be a JSON object (got a list of 0)"),
    ("list instead of weights", lambda m: m.update(weights=["weights.safetensors"]), "weights must be a JSON object (got a list of 1)"),
    ("list instead of relevance statistics", lambda m: m.update(relevance={**RELEVANCE, "reference": []}),
     "relevance.reference must be a JSON object (got a list of 0)"),
    ("extra junk", lambda m: m.update(junk=1), "junk is not a key of a format version 3 model.json"),
    ("extra preprocessing parameter", lambda m: m["preprocessing"].update(typo=1),
     "preprocessing.typo is not a key of a format version 3 model.json"),
    ("software version null", lambda m: m["software"].update(torch=None), "software.torch must be a string (got null)"),
    ("damaged weights checksum", lambda m: m["weights"].update(sha256="abc"), "weights.sha256 must match"),
    ("normative without checksum", with_normative({k: v for k, v in NORMATIVE_RECORD.items() if k != "sha256"}), "normative.sha256 is missing"),
    ("normative covariate not a boolean", with_normative({**NORMATIVE_RECORD, "covariates": {"age": "yes", "sex": True, "age_centre": 40.0}}),
     'normative.covariates.age must be true or false (got "yes")'),
    ("preprocessing value out of range", lambda m: m["preprocessing"].update(norm_percentile=10.0),
     "preprocessing: norm_percentile (the intensity normalisation) must be in [50, 100], got 10.0"),
    ("fewer weights than cubes", lambda m: m.update(cube_weights=[1.0] * 4), "selected_cubes and cube_weights do not match"),
]  # fmt: skip


@pytest.mark.parametrize("change, says", [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED])
def test_a_malformed_model_json_is_refused_naming_the_key(bundle_dir, change, says):
    folder, _ = bundle_dir
    edit_metadata(folder, change)
    with pytest.raises(BundleError) as caught:
        load_bundle(folder)
    message = str(caught.value)
    assert message.startswith(f"{folder / METADATA}: {says}") and "\n" not in message
    assert "train again" in message or "restore" in message


def test_the_schema_describes_this_format_version_and_this_code():
    from jsonschema import Draft202012Validator

    from bids_pscore.atlas import N_REGIONS
    from bids_pscore.grid import N_CUBES
    from bids_pscore.model import bundle
    from bids_pscore.model.relevance import METHODS

    schema = bundle.schema_validator().schema
    Draft202012Validator.check_schema(schema)
    props = schema["properties"]
    assert schema["$id"].endswith(f"format-version-{bundle.FORMAT_VERSION}") and bundle.SCHEMA.endswith(f"v{bundle.FORMAT_VERSION}.schema.json")
    assert props["format"]["const"] == bundle.FORMAT and props["format_version"]["const"] == bundle.FORMAT_VERSION
    assert props["selected_cubes"]["items"]["maximum"] == N_CUBES - 1 and schema["$defs"]["regions"]["minItems"] == N_REGIONS
    preprocessing = props["preprocessing"]
    assert set(preprocessing["properties"]) == set(PreprocParams().to_dict())
    # the standardisation's parameters came after format 3 first shipped: absent, a bundle divided by its percentile
    assert set(preprocessing["properties"]) - set(preprocessing["required"]) == STANDARDISATION_KEYS
    assert preprocessing["properties"]["template"]["enum"] == [PreprocParams().template]
    assert props["relevance"]["properties"]["method"]["enum"] == list(METHODS)
    assert props["weights"]["properties"]["file"]["const"] == WEIGHTS


@pytest.mark.parametrize("content", ["[]", '"a model"'])
def test_a_model_json_that_is_not_an_object_is_refused(bundle_dir, content):
    folder, _ = bundle_dir
    (folder / METADATA).write_text(content)
    with pytest.raises(BundleError, match=f"^{re.escape(str(folder / METADATA))}: is not a JSON object"):
        load_bundle(folder)


def test_selected_cubes_that_differ_from_the_weights_are_refused(bundle_dir):
    folder, _ = bundle_dir
    edit_metadata(folder, lambda m: m.update(selected_cubes=[4, 17, 42, 99, 140]))
    with pytest.raises(BundleError, match=f"{METADATA}: selected_cubes .* differ from those in {WEIGHTS}"):
        load_bundle(folder)


def test_the_demo_model_states_every_preprocessing_parameter_and_a_bundle_from_before_the_standardisation_still_loads(tmp_path):
    from bids_pscore.cohort import DEMO_MODEL

    recorded = load_bundle(DEMO_MODEL).metadata["preprocessing"]
    assert set(recorded) == set(PreprocParams().to_dict())
    assert PreprocParams.from_dict(recorded) == PreprocParams()  # trained with this release's preprocessing
    assert PreprocParams.from_dict(PreprocParams().to_dict()) == PreprocParams()
    # a bundle trained before the choice existed is applied as it was trained: divided by its percentile
    old = Path(shutil.copytree(DEMO_MODEL, tmp_path / "old"))
    edit_metadata(old, lambda m: [m["preprocessing"].pop(key) for key in STANDARDISATION_KEYS])
    assert PreprocParams.from_dict(load_bundle(old).metadata["preprocessing"]).intensity_standardisation == "percentile"
    assert PreprocParams().intensity_standardisation == "tissue"


def test_wrong_grid(bundle_dir):
    folder, _ = bundle_dir
    edit_metadata(folder, lambda m: m["grid"].update(shape=[91, 109, 91]))
    with pytest.raises(BundleError, match="grid"):
        load_bundle(folder)


def test_other_format_version(bundle_dir):
    folder, _ = bundle_dir
    edit_metadata(folder, lambda m: m.update(format_version=99))
    with pytest.raises(BundleError, match="format version 99"):
        load_bundle(folder)


def test_weights_that_disagree_with_the_json(bundle_dir):
    folder, _ = bundle_dir
    edit_metadata(folder, lambda m: m.update(cube_weights=[1.0] * 5))
    with pytest.raises(BundleError, match="cube_weights differ"):
        load_bundle(folder)


@pytest.mark.parametrize("name", ["extra.pkl", "model.pt", "notes.bin"])
def test_a_pickle_in_the_bundle_is_refused(bundle_dir, name):
    folder, _ = bundle_dir
    (folder / name).write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(BundleError, match="is a pickle file"):
        load_bundle(folder)


def test_torch_save_instead_of_safetensors_is_refused(bundle_dir):
    folder, model = bundle_dir
    torch.save(model.state_dict(), folder / "weights.pth")
    with pytest.raises(BundleError, match="pickle"):
        load_bundle(folder)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="not a bids_pscore model bundle"):
        load_bundle(tmp_path)


def test_a_lambda_no_score_can_exceed_is_said_beside_the_bundles_warning():
    # normalised region scores lie in [0, 1], so lambda >= 1 means no region can be flagged
    assert model_warnings({"reference": {"lambda": 0.73}}) == []
    assert model_warnings({"warning": "DEMO", "reference": {"lambda": 0.73}}) == ["DEMO"]
    warnings = model_warnings({"warning": "DEMO", "reference": {"lambda": 1.26}})
    assert warnings[0] == "DEMO" and "lambda (1.26)" in warnings[1] and "no region" in warnings[1]
    assert len(model_warnings({"reference": {"lambda": 1.0}})) == 1
