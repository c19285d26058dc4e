"""The summary JSON's schema (bids_pscore/summary.schema.json): what the writer writes validates, every
key it writes is in the schema and every key of the schema is written, a misspelt key or a wrong type
fails, the docs name only keys of the schema, and the wheel ships it."""

import json
import re
import tomllib
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from bids_pscore.atlas import N_REGIONS, region_table
from bids_pscore.derivatives import records, session_files
from bids_pscore.grid import GRID_SHAPE, N_CUBES
from bids_pscore.model import bundle
from bids_pscore.normative import Deviation
from bids_pscore.pscore import Scores

REPO = Path(__file__).resolve().parents[1]
SCHEMA_NAME = "summary.schema.json"
SCHEMA = json.loads((files("bids_pscore") / SCHEMA_NAME).read_text())
# model.json's validator class: an integer is an int and a number finite (Python's JSON reader takes NaN)
VALIDATOR = type(bundle.schema_validator())(SCHEMA)
TEMPLATE = "MNI152NLin2009aSym"


def summary_problems(summary):
    """What is wrong with a summary against the schema, one line per problem (empty if nothing)."""
    return [f"{'.'.join(map(str, e.absolute_path)) or 'summary'}: {e.message}" for e in VALIDATOR.iter_errors(summary)]


def schema_keys(schema, prefix=""):
    """The dotted paths of every key the schema describes."""
    return {path for key, node in schema.get("properties", {}).items() for path in {prefix + key} | schema_keys(node, f"{prefix}{key}.")}


def summary_keys(summary, schema=SCHEMA, prefix=""):
    """The dotted paths of a summary's keys, into the objects the schema describes key by key."""
    paths = set()
    for key, value in summary.items():
        paths.add(prefix + key)
        node = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and "properties" in node:
            paths |= summary_keys(value, node, f"{prefix}{key}.")
    return paths


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Two summaries of session_files.write_session: one with every key it can write (a normative reference with a
    class calibration, both of its cautions, a class domain the scan lies beyond, the model's warning), one with none;
    each as (content, path)."""
    out = tmp_path_factory.mktemp("summaries")
    z = np.linspace(-5.0, 1.0, N_REGIONS)
    far = Deviation(np.zeros(GRID_SHAPE, np.float32), {"grey_level": z}, {"grey_level": np.zeros(N_REGIONS)}, {"grey_level": z}, z < -3.0,
                    -0.4, 2.5, False, False)  # fmt: skip
    reference = {"images": 30}
    normative_record = {
        "rule": "a region is atrophic when its z is below -3", "threshold": -3.0, "distance_threshold": 1.9, "sha256": "c" * 64,
        "calibration": {"false_flags_per_healthy_image": 0.5}, "reference": reference, "covariates": {"age": True, "age_centre": 60.0},
        "class_calibration": {"logit_offset": -1.0, "specificity": 0.9, "images": 30, "called_ad_before": 12, "heldout_called_control": 0.8},
    }  # fmt: skip
    domain_record = {"distance_threshold": 1.9, "reference": reference, "from_class_calibration": True, "sha256": "d" * 64}
    norm = np.linspace(0, 1, N_REGIONS)[None]
    scores = Scores(p_ad=np.zeros((1, N_CUBES)), cube=np.zeros((1, N_CUBES)), brain_voxels=np.zeros((1, N_CUBES), int), region=norm,
                    region_norm=norm, whole=norm.sum(axis=1), degenerative=norm > 0.5)  # fmt: skip
    card = {"name": "schema-test", "version": "1", "sha256": "a" * 64, "metadata_sha256": "b" * 64}
    empty = np.zeros(GRID_SHAPE, np.float32)

    def summary(folder, ad_probability, card, **optional):
        paths = session_files.write_session(out / folder, {"sub": "01"}, TEMPLATE, scores, empty, empty, ad_probability,
                                          "AD" if ad_probability >= 0.5 else "control", np.zeros(N_CUBES), np.zeros(N_CUBES, bool), 0.5,
                                          card, "sub-01/anat/sub-01_T1w.nii.gz", **optional)  # fmt: skip
        return json.loads(paths["summary"].read_text()), paths["summary"]

    normative = records.normative_summary(far, normative_record, region_table()["label"].to_numpy(), float("nan"), "F")
    every = summary("every", 0.9, {**card, "warning": "not for clinical use"}, normative=normative,
                    class_domain=records.class_domain_summary(far, domain_record))  # fmt: skip
    return every, summary("none", 0.1, card)


def test_the_summary_record_reads_and_writes_a_summary_back_byte_for_byte(written, tmp_path):
    for _, path in written:
        records.Summary.from_json(path).write(tmp_path / path.name)
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def test_the_schema_is_draft_2020_12_gives_every_key_a_type_and_a_description_and_ships_in_the_wheel():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["properties"]["WholeBrainPScoreRange"]["const"] == [0, N_REGIONS]

    def nodes(schema):
        for node in schema.get("properties", {}).values():
            yield node
            yield from nodes(node)

    for node in nodes(SCHEMA):
        assert node.keys() & {"type", "const", "enum", "$ref"} and node["description"].strip() and "\n" not in node["description"]
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bids_pscore"]
    assert SCHEMA_NAME in package_data


def test_what_the_writer_writes_validates_and_every_key_it_writes_is_in_the_schema_and_back(written):
    (every, _), (none, _) = written
    assert summary_problems(every) == [] and summary_problems(none) == []
    # a key added to the writer and not to the schema fails here (and above: additionalProperties), and so does a key
    # of the schema that the writer no longer writes
    assert summary_keys(every) == schema_keys(SCHEMA)
    assert none["ClassReliable"] is None and none["ClassDomain"] is None and "Normative" not in none and "Warning" not in none["Model"]
    assert {"ClassCalibration", "Caution"} <= every["Normative"].keys() and "Caution" in every["ClassDomain"]


def _rename(record, old, new):
    record[new] = record.pop(old)


MISTAKES = {
    "a misspelt key": lambda s: _rename(s, "ADProbability", "AdProbability"),
    "a misspelt key of Model": lambda s: _rename(s["Model"], "MetadataSHA256", "MetadataSha256"),
    "a misspelt key of Normative": lambda s: _rename(s["Normative"], "MedianRegionZ", "MedianRegionZScore"),
    "a misspelt key of ClassDomain": lambda s: _rename(s["ClassDomain"], "FromClassCalibration", "FromCalibration"),
    "a missing key": lambda s: s.pop("Lambda"),
    "a boolean as text": lambda s: s.update(ClassReliable="false"),
    "an integer with a decimal point": lambda s: s.update(NumberOfDegenerativeRegions=3.0),
    "a number that is not finite": lambda s: s.update(WholeBrainPScore=float("nan")),
    "a class that is not a class": lambda s: s.update(PredictedClass="Alzheimer"),
    "an age as text": lambda s: s["Normative"].update(Age="70"),
    "atrophic regions without the normative record": lambda s: s.pop("Normative"),
    "a checksum that is not one": lambda s: s["Model"].update(SHA256="abc"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_summary_with_a_misspelt_key_or_a_wrong_type_fails(written, mistake):
    summary = json.loads(json.dumps(written[0][0]))
    MISTAKES[mistake](summary)
    assert summary_problems(summary)


def test_the_docs_name_only_keys_of_the_summary_schema():
    """docs/outputs.md describes the summary in prose, not a table of every key: each key it names (`ClassReliable`,
    `Model.MetadataSHA256`; nested ones by their last name) must be one of the schema's."""
    text = (REPO / "docs" / "outputs.md").read_text()
    section = text[text.index("`*_desc-summary_pscore.json` |") : text.index("Each subject gets an HTML report")]
    named = set(re.findall(r"`([A-Z][A-Za-z0-9]*(?:\.[A-Z][A-Za-z0-9]*)*)`", section))
    keys = schema_keys(SCHEMA)
    assert {"ADProbability", "ClassReliable", "Model.MetadataSHA256", "MedianRegionZ"} <= named
    assert {name for name in named if name not in keys and not any(key.endswith(f".{name}") for key in keys)} == set()
