"""The model bundle (SPEC section 6): a folder with ``weights.safetensors`` and ``model.json``.

safetensors holds tensors and nothing else, so loading a stranger's model runs no code; a
folder that holds a pickle is refused outright. ``model.json`` records everything needed to
reproduce the numbers, and loading checks all of it.
"""

import hashlib
import json
import math
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_arrays
from safetensors.numpy import save_file as save_arrays
from safetensors.torch import load_file, save_file

from ..atlas import N_REGIONS
from ..fileio import atomic_path, write_json
from ..grid import CUBE_PAD, CUBE_SIZE, CUBES_TEXT, GRID_AFFINE, GRID_SHAPE, GRID_TEXT, N_CUBES
from ..normative import NormativeReference
from .networks import CHANNELS, N_FEATURES, Ensemble

FORMAT = "bids_pscore-model"
FORMAT_VERSION = 3  # 2: per-cube input standardisation in the weights; 3: N4 fitted on the head only
WEIGHTS = "weights.safetensors"
NORMATIVE = "normative.safetensors"
METADATA = "model.json"
REQUIRED = (
    "format", "format_version", "name", "version", "grid", "cubes", "preprocessing", "architecture",
    "selected_cubes", "cube_weights", "reference", "atlas", "labels", "training", "software", "weights",
    "metadata_sha256",
)  # fmt: skip
# the keys of REQUIRED (and the optional "relevance") whose values are JSON objects
OBJECT_KEYS = ("grid", "cubes", "preprocessing", "architecture", "reference", "atlas", "labels", "training", "software", "weights", "relevance")
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


def check_reference(reference, where):
    """The reference statistics SPEC 5 needs: 246 minima and maxima and a finite lambda."""
    if not isinstance(reference, dict):
        raise BundleError(f"{where}: is not a JSON object; the bundle is damaged: train again or restore it")
    for key, length in (("region_min", N_REGIONS), ("region_max", N_REGIONS), ("lambda", None)):
        value = reference.get(key)
        ok = (
            isinstance(value, (int, float)) and math.isfinite(value)
            if length is None
            else (isinstance(value, list) and len(value) == length and all(isinstance(v, (int, float)) for v in value))
        )
        if not ok:
            raise BundleError(f"{where}: {key} is missing or malformed (needs {'a number' if length is None else f'{length} numbers'}); "
                              "the bundle is damaged: train again or restore it")  # fmt: skip


def check_preprocessing(record, meta_path):
    """Every preprocessing parameter must be stated: the code's defaults change between releases,
    so one left out says nothing about how the model's training images were made."""
    from ..preprocess.params import PreprocParams

    missing = [f.name for f in fields(PreprocParams) if f.name not in record]
    if missing:
        raise BundleError(f"{meta_path}: preprocessing lacks {', '.join(missing)}; the bundle is incomplete: train again or restore it")


def threshold_warning(threshold):
    """The note a model whose lambda no score can exceed must carry, else None.

    lambda = mean + 2 SD of the reference AD images' normalised region scores (SPEC 5); when those
    scores pile up at 0 and 1 it lands at or above 1, the largest normalised score.
    """
    if threshold < 1.0:
        return None
    return (
        f"this model's lambda ({threshold:.2f}) is not below 1, the largest normalised region score, so its P-score "
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
    warnings = [metadata.get("warning"), preprocessing_warning(metadata), threshold_warning(metadata["reference"]["lambda"])]
    return [w for w in warnings if w]


def write_normative(folder, reference, description):
    """Write a normative reference's statistics beside a bundle's weights; returns the record that
    ``model.json`` keeps under "normative" (``description``: who the reference is, its calibration)."""
    with atomic_path(Path(folder) / NORMATIVE) as tmp:
        save_arrays(reference.arrays(), str(tmp), metadata={"format": FORMAT})
    return {**description, **reference.record(), "file": NORMATIVE, "sha256": sha256(Path(folder) / NORMATIVE)}


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
    record["metadata_sha256"] = metadata_sha256(record)
    write_json(folder / METADATA, record)
    return folder


def add_normative(source, folder, reference, description):
    """A copy of the bundle ``source`` in the new ``folder`` with ``reference`` as its normative
    reference (replacing any it had); the weights are copied unchanged, model.json gets a new
    checksum and says what was added, when, and the checksum it had before."""
    import shutil

    source, folder = Path(source), Path(folder)
    meta = json.loads((source / METADATA).read_text())
    folder.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS, *(p.name for p in source.iterdir() if p.suffix in (".tsv", ".md", ".sh"))):
        shutil.copy2(source / name, folder / name)
    meta["normative"] = write_normative(folder, reference, description)
    meta["normative"]["added_to_trained_model"] = {"metadata_sha256_before": meta["metadata_sha256"], **description.get("added", {})}
    meta["metadata_sha256"] = metadata_sha256(meta)
    write_json(folder / METADATA, meta)
    return folder


@dataclass(frozen=True)
class Bundle:
    folder: Path
    metadata: dict
    ensemble: Ensemble
    normative: NormativeReference | None = None  # SPEC 10; None for a model without one


def load_normative(folder, meta):
    """The bundle's normative reference, checked like the weights; None when it has none."""
    record = meta.get("normative")
    if record is None:
        return None
    path = Path(folder) / NORMATIVE
    if not isinstance(record, dict) or record.get("file") != NORMATIVE:
        raise BundleError(f"{Path(folder) / METADATA}: normative is malformed (needs file {NORMATIVE}); the bundle is damaged")
    if not path.is_file():
        raise BundleError(f"{path}: missing, though {METADATA} names a normative reference; the bundle is incomplete")
    if sha256(path) != record.get("sha256"):
        raise BundleError(f"{path}: checksum does not match {METADATA}: the normative reference was changed or truncated; restore it")
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


def load_bundle(folder):
    """Load and check a bundle; raise BundleError with a message that says what is wrong."""
    folder = Path(folder)
    meta_path, weights_path = folder / METADATA, folder / WEIGHTS
    if not meta_path.is_file():
        raise BundleError(f"{folder}: not a bids_pscore model bundle (no {METADATA}); pass the folder that bids_pscore-train wrote")
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (METADATA,)):
        if path not in (weights_path, folder / NORMATIVE) and _looks_like_pickle(path):
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
    missing = [key for key in REQUIRED if key not in meta]
    if missing:
        raise BundleError(f"{meta_path}: missing key(s) {', '.join(missing)}; the bundle is incomplete")
    if meta["metadata_sha256"] != metadata_sha256(meta):
        raise BundleError(f"{meta_path}: was changed after training (its checksum, metadata_sha256, no longer matches): "
                          "restore the file as bids_pscore-train wrote it, or train again")  # fmt: skip
    not_object = next((key for key in OBJECT_KEYS if key in meta and not isinstance(meta[key], dict)), None)
    if not_object:
        raise BundleError(f"{meta_path}: {not_object} is not a JSON object; the bundle is damaged: train again or restore it")
    check_preprocessing(meta["preprocessing"], meta_path)
    check_reference(meta["reference"], f"{meta_path}: reference")
    if "relevance" in meta:
        check_reference(meta["relevance"].get("reference", {}), f"{meta_path}: relevance.reference")
    if meta["grid"] != grid_record():
        raise BundleError(f"{meta_path}: the model's grid {meta['grid'].get('shape')} is not the {GRID_TEXT} grid of this bids_pscore")
    if meta["cubes"] != cube_record():
        raise BundleError(f"{meta_path}: the model's cube layout differs from this bids_pscore's ({CUBES_TEXT})")
    if not weights_path.is_file():
        raise BundleError(f"{weights_path}: missing; the bundle is incomplete")
    if sha256(weights_path) != meta["weights"].get("sha256"):
        raise BundleError(f"{weights_path}: checksum does not match {METADATA}: the weights were changed or truncated")
    if _looks_like_pickle(weights_path):
        raise BundleError(f"{weights_path}: is a pickle, not safetensors; refusing to load it")
    selected = meta["selected_cubes"]
    # a cube twice would count its classifier twice in the meta-classifier
    if not isinstance(selected, list) or not all(type(c) is int and 0 <= c < N_CUBES for c in selected) or len(set(selected)) < len(selected):
        raise BundleError(f"{meta_path}: selected_cubes must list distinct cube numbers 0-{N_CUBES - 1}; the bundle is damaged: "
                          "train again or restore it")  # fmt: skip
    if not isinstance(meta["cube_weights"], list) or len(selected) != len(meta["cube_weights"]):
        raise BundleError(f"{meta_path}: selected_cubes and cube_weights do not match")
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
    return Bundle(folder, meta, ensemble, load_normative(folder, meta))
