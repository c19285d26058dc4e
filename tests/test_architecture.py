"""The layering of ../shared/ARCHITECTURE.md held by a tool: import-linter's contracts in
pyproject.toml (a circle, an upward import into the scoring core, model/ reaching for BIDS or
nipype, a report importing a level: the suite fails), every room of the package placed in them, and a
bundle that loads without nipype."""

import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import bids_pscore

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = {c["name"]: c for c in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]}
# the rooms the scoring core and model/ may import: each other and the two helpers every room uses
CORE = {"pscore", "normative", "grid", "atlas"}
BELOW_MODEL = CORE | {"errors", "fileio"}


def rooms():
    """The package's top-level modules and subpackages (data/ holds files, not code)."""
    return {m.name for m in pkgutil.iter_modules(bids_pscore.__path__)} - {"data"}


def named(contract, key):
    return {m.removeprefix("bids_pscore.") for m in contract[key] if m.startswith("bids_pscore.")}


def test_the_import_contracts_hold():
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in result.stdout


def test_every_room_is_placed_in_the_contracts():
    core = next(c for c in CONTRACTS.values() if named(c, "source_modules") == CORE)
    assert rooms() - CORE == named(core, "forbidden_modules"), "a room the scoring core may import, or a new room to forbid it"
    model = next(c for c in CONTRACTS.values() if named(c, "source_modules") == {"model"})
    assert rooms() - BELOW_MODEL - {"model"} == named(model, "forbidden_modules"), "a new room to forbid to model/"
    assert {"nipype", "bids"} <= set(model["forbidden_modules"]) and any(c["type"] == "acyclic_siblings" for c in CONTRACTS.values())


def test_a_bundle_loads_without_nipype():
    code = ("import sys; from importlib.resources import files; from bids_pscore.model.bundle import load_bundle; "
            "load_bundle(files('bids_pscore') / 'data' / 'demo_model'); "
            "print(sorted(m for m in ('nipype', 'bids') if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
