"""The benchmarks are scripts that no test runs (minutes each): a function of the package renamed or
removed must still fail here, not at the next person's benchmark run."""

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def package_names_used(source):
    """(module, name) of every name a script takes from bids_pscore: imported from a module, or read
    as an attribute of a module it imported (``layout.session_outputs``)."""
    tree = ast.parse(source)
    modules, used = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bids_pscore"):
            for alias in node.names:
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                    modules[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                except ModuleNotFoundError:  # a name in the module, not a module
                    used.append((node.module, alias.name))
        elif isinstance(node, ast.Import):
            modules.update({alias.asname: alias.name for alias in node.names if alias.name.startswith("bids_pscore") and alias.asname})
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            used.append((modules[node.value.id], node.attr))
    return used


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda path: path.name)
def test_every_name_a_benchmark_takes_from_the_package_exists(script):
    missing = [f"{module}.{name}" for module, name in package_names_used(script.read_text())
               if not hasattr(importlib.import_module(module), name)]  # fmt: skip
    assert not missing, f"{script.name} uses names the package no longer has: {missing}"


def test_a_removed_name_is_caught():
    source = "from bids_pscore import bids\nfrom bids_pscore.grid import GRID_SHAPE, NO_SUCH_NAME\nbids.preproc_paths({}, 'x')\n"
    used = package_names_used(source)
    assert ("bids_pscore.bids", "preproc_paths") in used and ("bids_pscore.grid", "NO_SUCH_NAME") in used
    assert [f"{m}.{n}" for m, n in used if not hasattr(importlib.import_module(m), n)] == [
        "bids_pscore.grid.NO_SUCH_NAME",
        "bids_pscore.bids.preproc_paths",
    ]
