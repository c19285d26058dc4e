"""The model bundle (SPEC section 6): a folder with ``weights.safetensors`` and ``model.json``.

safetensors holds tensors and nothing else, so loading a stranger's model runs no code; a
folder that holds a pickle is refused outright. ``model.json`` records everything needed to
reproduce the numbers, and loading checks all of it: its form against the JSON Schema of its format
version (``model-v3.schema.json``, beside this module), then what a schema cannot say (this build's
grid and cubes, the checksums, the tensors against the cubes listed).
"""

import dataclasses
import hashlib
import json
import math
import zipfile
from functools import cache
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file as save_arrays
from safetensors.torch import load_file, save_file

from ..atlas import N_REGIONS
from ..fileio import atomic_path, write_json
from ..grid import CUBE_PAD, CUBE_SIZE, CUBES_TEXT, GRID_AFFINE, GRID_SHAPE, GRID_TEXT, N_CUBES
from ..normative import NormativeReference, Statistics
from .networks import CHANNELS, N_FEATURES, Ensemble

FORMAT = "bids_pscore-model"
FORMAT_VERSION = 3  # 2: per-cube input standardisation in the weights; 3: N4 fitted on the head only
WEIGHTS = "weights.safetensors"
NORMATIVE = "normative.safetensors"
# the normative reference of heads of the scanner the model's class was set on, in NORMATIVE's format: a scan far
# from them gets no reliable class (healthy heads of another scanner were all called AD; docs/normative.md)
DOMAIN = "domain.safetensors"
MODEL_CARD = "MODEL_CARD.md"
METADATA = "model.json"
# the JSON Schema of model.json in this format version, shipped beside this module
SCHEMA = f"model-v{FORMAT_VERSION}.schema.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


class BundleError(ValueError):
    """A model bundle that cannot be used; the message names the file and what is wrong."""


def grid_record():
    return {"shape": list(GRID_SHAPE), "affine": GRID_AFFINE.tolist()}


def cube_record():
    return {"size": CUBE_SIZE, "pad": [list(p) for p in CUBE_PAD], "count": N_CUBES, "order": "c = ix * 30 + iy * 5 + iz"}


def architecture_record(n_selected):
    return {
        "base": {"layers": 7, "channels": list(CHANNELS), "features": N_FEATURES, "classes": ["control", "AD"]},
        "meta": {"conv1d_kernel": n_selected, "fully_connected": [N_FEATURES, 2]},
    }


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metadata_sha256(meta):
    """Checksum of everything model.json says but this checksum: lambda, the reference statistics,
    the selected cubes and the rest change the numbers as much as the weights do."""
    canonical = json.dumps({k: v for k, v in meta.items() if k != "metadata_sha256"}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@cache
def schema_validator():
    """A validator of model.json against SCHEMA. Stricter than JSON Schema on two points the schema
    states: an integer is an int (3.0 would pass as a cube number), a number is finite (Python's JSON
    reader takes NaN, which JSON does not allow and no statistic may be)."""
    import jsonschema

    checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many({
        "integer": lambda _, value: type(value) is int,
        "number": lambda _, value: type(value) in (int, float) and math.isfinite(value),
    })  # fmt: skip
    validator = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=checker)
    return validator(json.loads((Path(__file__).parent / SCHEMA).read_text()))


TYPE_NAMES = {"object": "a JSON object", "array": "a list", "number": "a finite number", "integer": "an integer", "string": "a string",
              "boolean": "true or false"}  # fmt: skip


def key_path(keys):
    """``preprocessing.fwhm_mm``, ``selected_cubes[3]``: where a value is in model.json."""
    text = "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in keys).lstrip(".")
    return text or "the whole file"


def _shown(value):
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def schema_problem(error):
    """What a jsonschema ValidationError of model.json says, in words, naming the key."""
    keys, rule, expected, value = list(error.absolute_path), error.validator, error.validator_value, error.instance
    where = key_path(keys)
    if rule == "required":
        return f"{key_path([*keys, next(k for k in expected if k not in value)])} is missing"
    if rule == "additionalProperties":
        extra = sorted(k for k in value if k not in error.schema.get("properties", {}))
        return f"{key_path([*keys, extra[0]])} is not a key of a format version {FORMAT_VERSION} model.json"
    if rule == "type":
        return f"{where} must be {TYPE_NAMES[expected]} (got {_shown(value)})"
    if rule in ("const", "enum"):
        return f"{where} must be {' or '.join(json.dumps(v) for v in ([expected] if rule == 'const' else expected))} (got {_shown(value)})"
    if rule == "uniqueItems":
        return f"{where} lists {_shown(next(v for i, v in enumerate(value) if v in value[:i]))} more than once"
    if rule in ("minItems", "maxItems"):
        return f"{where} must hold {'at least' if rule == 'minItems' else 'at most'} {expected} items (got {len(value)})"
    if rule in ("minimum", "maximum", "exclusiveMinimum"):
        bound = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "above"}[rule]
        return f"{where} must be {bound} {expected} (got {_shown(value)})"
    if rule == "pattern":
        return f"{where} must match {expected} (got {_shown(value)})"
    return f"{where}: {error.message}"


def check_schema(meta, meta_path):
    """model.json against SCHEMA: types, required and unknown keys, distinct cubes, the known
    template and atlas; the first problem (the shallowest) as a BundleError naming its key."""
    from jsonschema.exceptions import best_match

    error = best_match(schema_validator().iter_errors(meta))
    if error is not None:
        raise BundleError(f"{meta_path}: {schema_problem(error)}; this is not a model.json that this bids_pscore's training writes "
                          f"({SCHEMA}): train again, or use the bids_pscore version that wrote it")  # fmt: skip


def check_preprocessing(record, meta_path):
    """The preprocessing values' ranges, as PreprocParams checks them (the schema checks their types)."""
    from ..errors import UsageError
    from .preprocessing import PreprocParams

    try:
        PreprocParams.from_dict(record)
    except UsageError as exc:
        raise BundleError(f"{meta_path}: preprocessing: {exc}; the bundle is damaged: train again or restore it") from None


def lambda_warning(lambda_):
    """The note a model whose lambda no score can exceed must carry, else None.

    lambda = mean + 2 SD of the reference AD images' normalised region scores (SPEC 5); when those
    scores pile up at 0 and 1 it lands at or above 1, the largest normalised score.
    """
    if lambda_ < 1.0:
        return None
    return (
        f"this model's lambda ({lambda_:.2f}) is not below 1, the largest normalised region score, so its P-score "
        "(patent) flags mark no region as degenerative; read those region scores as a ranking (the relevance-weighted "
        "and normative flags have thresholds of their own)"
    )


def preprocessing_warning(metadata):
    """A model trained on images that another tool made (CAT12) sees this app's images unlike its
    training images; its scores of them are not what its training promised."""
    made_by = metadata.get("training", {}).get("preprocessed_by", "bids_pscore")
    if made_by == "bids_pscore":
        return None
    return (
        f"this model was trained on images preprocessed by {made_by}, not by bids_pscore, which preprocesses the "
        "images of this run: their scores are not comparable with the model's training and test results"
    )


def model_warnings(metadata):
    """What every run with this model says: the bundle's own warning, another tool's preprocessing
    and the lambda note."""
    warnings = [metadata.get("warning"), preprocessing_warning(metadata), lambda_warning(metadata["reference"]["lambda"])]
    return [w for w in warnings if w]


def write_normative(folder, reference, description):
    """Write a normative reference's statistics beside a bundle's weights; returns the record that
    ``model.json`` keeps under "normative" (``description``: who the reference is, its calibration)."""
    with atomic_path(Path(folder) / NORMATIVE) as tmp:
        save_arrays(reference.arrays(), str(tmp), metadata={"format": FORMAT})
    return {**description, **reference.record(), "file": NORMATIVE, "sha256": sha256(Path(folder) / NORMATIVE)}


def write_class_domain(folder, reference, description):
    """Write ``reference``'s region statistics as the bundle's class domain; returns the record that
    ``model.json`` keeps under "class_domain" (who its heads are, and whether a class calibration on
    them set the class: ``description`` holds "class_calibration" then). The distance to the domain
    reads regions only, so its voxel statistics are left empty (11 MB of the demo's 13)."""
    folder = Path(folder)
    no_voxels = Statistics(np.zeros((reference.voxel.coef.shape[0], 0)), np.zeros(0))
    regions_only = dataclasses.replace(reference, voxel_mask=np.zeros_like(reference.voxel_mask), voxel=no_voxels)
    with atomic_path(folder / DOMAIN) as tmp:
        save_arrays(regions_only.arrays(), str(tmp), metadata={"format": FORMAT})
    return {**reference.record(), "file": DOMAIN, "sha256": sha256(folder / DOMAIN), "reference": description.get("reference", {}),
            "from_class_calibration": "class_calibration" in description}  # fmt: skip


def save_bundle(folder, ensemble, metadata, normative=None):
    """Write the ensemble's weights and ``metadata`` (plus grid, cubes, architecture, checksum),
    and ``normative`` = (NormativeReference, description) when given."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in ensemble.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
    selected = ensemble.selected.tolist()
    record = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        **metadata,
        "grid": grid_record(), "cubes": cube_record(), "architecture": architecture_record(len(selected)),
        "selected_cubes": selected, "cube_weights": ensemble.meta.weights.tolist(),
        "weights": {"file": WEIGHTS, "sha256": sha256(folder / WEIGHTS)},
    }  # fmt: skip
    if normative is not None:
        record["normative"] = write_normative(folder, *normative)
        # the reference training builds is of the training data's scanner, on which the class was set
        record["class_domain"] = write_class_domain(folder, *normative)
    record["metadata_sha256"] = metadata_sha256(record)
    write_json(folder / METADATA, record)
    return folder


def add_normative(source, folder, reference, description, new_domain):
    """A copy of the bundle ``source`` in the new ``folder`` with ``reference`` as its normative
    reference (replacing any it had); the weights are copied unchanged, model.json gets a new
    checksum and says what was added, when, and the checksum it had before. With ``new_domain``
    the reference becomes the class domain too; otherwise the source's domain travels unchanged."""
    import shutil

    source, folder = Path(source), Path(folder)
    meta = json.loads((source / METADATA).read_text())
    folder.mkdir(parents=True, exist_ok=True)
    # the licence, recipe and training table travel; a model card describes the reference it shipped with, not the new one
    kept = [WEIGHTS, *(p.name for p in source.iterdir() if p.suffix in (".tsv", ".md", ".sh") and p.name != MODEL_CARD)]
    for name in kept + ([] if new_domain else [DOMAIN]):
        shutil.copy2(source / name, folder / name)
    meta["normative"] = write_normative(folder, reference, description)
    meta["normative"]["added_to_trained_model"] = {"metadata_sha256_before": meta["metadata_sha256"], **description.get("added", {})}
    if new_domain:
        meta["class_domain"] = write_class_domain(folder, reference, description)
    meta.pop("metadata_sha256")  # written last, as training writes it
    meta["metadata_sha256"] = metadata_sha256(meta)
    write_json(folder / METADATA, meta)
    return folder


@dataclasses.dataclass(frozen=True)
class Bundle:
    folder: Path
    metadata: dict
    ensemble: Ensemble
    normative: NormativeReference | None = None  # SPEC 10; None for a model without one
    class_domain: NormativeReference | None = None  # DOMAIN; None for a bundle made before it (the class is not checked)

    @property
    def class_offset(self):
        """What a site's controls add to the meta-classifier's logit (bids_pscore-normative --calibrate-class); 0 without."""
        return float(((self.metadata.get("normative") or {}).get("class_calibration") or {}).get("logit_offset", 0.0))


def load_normative(folder, meta, key="normative"):
    """The bundle's normative reference (``key`` "class_domain": its class domain), checked like the
    weights; None when it has none."""
    record = meta.get(key)
    if record is None:
        return None
    name, what = {"normative": (NORMATIVE, "the normative reference"), "class_domain": (DOMAIN, "the class domain")}[key]
    path = Path(folder) / name
    if record.get("relative_to_overall_level") is not True:
        raise BundleError(f"{path}: its threshold was calibrated on z that are not relative to the image's overall level (made by an "
                          "earlier bids_pscore): build the reference again with bids_pscore-normative")  # fmt: skip
    if not path.is_file():
        raise BundleError(f"{path}: missing, though {METADATA} names {what}; the bundle is incomplete")
    if sha256(path) != record["sha256"]:
        raise BundleError(f"{path}: checksum does not match {METADATA}: {what} was changed or truncated; restore it")
    try:
        arrays = load_arrays(str(path))
        return NormativeReference.from_arrays(arrays, record, GRID_SHAPE, N_REGIONS)
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"{path}: cannot be read as safetensors ({exc})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleError(f"{path}: does not fit {METADATA} ({exc}); the bundle is damaged") from None


def _looks_like_pickle(path):
    if path.suffix in PICKLE_SUFFIXES:
        return True
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head[:1] == b"\x80" and head[1:2] in {bytes([v]) for v in range(2, 6)}:
        return True
    if zipfile.is_zipfile(path):  # torch.save's format: a zip around a pickle
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith(".pkl") for name in archive.namelist())
    return False


def load_bundle(folder, normative=True):
    """Load and check a bundle; raise BundleError with a message that says what is wrong.
    ``normative=False`` leaves its normative reference unread (bids_pscore-normative replaces it)."""
    folder = Path(folder)
    meta_path, weights_path = folder / METADATA, folder / WEIGHTS
    if not meta_path.is_file():
        raise BundleError(f"{folder}: not a bids_pscore model bundle (no {METADATA}); pass the folder that bids_pscore-train wrote")
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (METADATA,)):
        if path not in (weights_path, folder / NORMATIVE, folder / DOMAIN) and _looks_like_pickle(path):
            raise BundleError(f"{path}: is a pickle file; a bundle holds safetensors only, since a pickle can run code when loaded: remove it")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{meta_path}: is not valid JSON ({exc}); the bundle is damaged") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_path}: is not a JSON object; the bundle is damaged: train again or restore it")
    if meta.get("format") != FORMAT:
        raise BundleError(f"{meta_path}: is not a {FORMAT} file (format {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{meta_path}: bundle format version {meta.get('format_version')!r}; this bids_pscore reads version "
            f"{FORMAT_VERSION}: use the bids_pscore version that wrote it, or train again"
        )
    check_schema(meta, meta_path)
    if meta["metadata_sha256"] != metadata_sha256(meta):
        raise BundleError(f"{meta_path}: was changed after training (its checksum, metadata_sha256, no longer matches): "
                          "restore the file as bids_pscore-train wrote it, or train again")  # fmt: skip
    check_preprocessing(meta["preprocessing"], meta_path)
    if meta["grid"] != grid_record():
        raise BundleError(f"{meta_path}: the model's grid {meta['grid'].get('shape')} is not the {GRID_TEXT} grid of this bids_pscore")
    if meta["cubes"] != cube_record():
        raise BundleError(f"{meta_path}: the model's cube layout differs from this bids_pscore's ({CUBES_TEXT})")
    if not weights_path.is_file():
        raise BundleError(f"{weights_path}: missing; the bundle is incomplete")
    if sha256(weights_path) != meta["weights"]["sha256"]:
        raise BundleError(f"{weights_path}: checksum does not match {METADATA}: the weights were changed or truncated")
    if _looks_like_pickle(weights_path):
        raise BundleError(f"{weights_path}: is a pickle, not safetensors; refusing to load it")
    selected = meta["selected_cubes"]
    if len(selected) != len(meta["cube_weights"]):
        raise BundleError(
            f"{meta_path}: selected_cubes and cube_weights do not match (one weight per cube); the bundle is damaged: train again or restore it"
        )
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise BundleError(f"{weights_path}: cannot be read as safetensors ({exc})") from None
    ensemble = Ensemble(selected)
    try:
        ensemble.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{weights_path}: tensors do not fit the architecture in {METADATA} ({str(exc).splitlines()[0]})") from None
    if ensemble.selected.tolist() != selected:
        raise BundleError(f"{meta_path}: selected_cubes {selected} differ from those in {WEIGHTS} {ensemble.selected.tolist()}; "
                          "the bundle is damaged: train again or restore it")  # fmt: skip
    if not torch.allclose(ensemble.meta.weights, torch.tensor(meta["cube_weights"], dtype=torch.float32), atol=1e-6):
        raise BundleError(f"{meta_path}: cube_weights differ from the meta-classifier's weights in {WEIGHTS}")
    ensemble.eval()
    return Bundle(folder, meta, ensemble, load_normative(folder, meta) if normative else None, load_normative(folder, meta, "class_domain"))
