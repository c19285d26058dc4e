"""The container files are checked offline: hadolint, bosh validate, and that the
command line boutiques.json describes is the one the app accepts."""

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bids_pscore.cli import PLUGINS, build_parser, parse_args

REPO = Path(__file__).resolve().parents[1]


def tool(name):
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([tool("hadolint"), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_as_readme_and_runs_the_app():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["bids_pscore"]' in dockerfile
    assert '"torch==2.13.0" .' in dockerfile and "torch==2.13.0 -e ." in (REPO / "README.md").read_text()


def test_boutiques_descriptor_is_valid_and_follows_the_bids_app_conventions():
    result = subprocess.run([tool("bosh"), "validate", "--bids", str(REPO / "boutiques.json")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_boutiques_command_line_is_accepted_by_the_app(tmp_path):
    invocation = {
        "bids_dir": "/data", "output_dir_name": "/out", "analysis_level": "participant",
        "participant_label": ["01", "sub-02"], "session_label": ["1"], "skip_bids_validation": True,
        "n_cpus": 2, "omp_nthreads": 1, "work_dir": "/work", "nipype_plugin": "SLURM",
        "nipype_plugin_args": '{"sbatch_args": "-p short"}', "random_seed": 3, "verbose": True,
        "mem": 6, "stop_on_first_crash": True, "bids_database_dir": "/index", "reports_only": True,
    }  # fmt: skip
    path = tmp_path / "invocation.json"
    path.write_text(json.dumps(invocation))
    result = subprocess.run([tool("bosh"), "exec", "simulate", str(REPO / "boutiques.json"), "-i", str(path)],
                            capture_output=True, text=True, check=True)
    # BIDS-App descriptors make the output folder first: "mkdir -p OUT; bids_pscore ..."
    mkdir, app = result.stdout.strip().splitlines()[-1].split(";", 1)
    assert shlex.split(mkdir) == ["mkdir", "-p", "/out"]
    command = shlex.split(app)
    assert command[0] == "bids_pscore"
    opts = parse_args(command[1:])
    assert opts.participant_label == ["01", "02"] and opts.session_label == ["1"]
    assert opts.nipype_plugin == "SLURM" and opts.nipype_plugin_args == {"sbatch_args": "-p short"}
    assert (opts.n_cpus, opts.omp_nthreads, opts.random_seed, opts.verbose) == (2, 1, 3, 1)
    assert (opts.mem_gb, opts.stop_on_first_crash, str(opts.bids_database_dir), opts.reports_only) == (6, True, "/index", True)


def test_boutiques_lists_every_option_of_the_app():
    descriptor = json.loads((REPO / "boutiques.json").read_text())
    flags = {i["command-line-flag"] for i in descriptor["inputs"] if "command-line-flag" in i}
    # boutiques names each option by its first long spelling
    options = {next(o for o in a.option_strings if o.startswith("--"))
               for a in build_parser()._actions if a.option_strings and a.dest not in ("help", "version")}
    assert flags == options
    plugin = next(i for i in descriptor["inputs"] if i["id"] == "nipype_plugin")
    assert tuple(plugin["value-choices"]) == PLUGINS
