"""The container files are checked offline: hadolint, bosh validate, and that the
command line boutiques.json describes is the one the app accepts."""

import importlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from bids_pscore import __version__
from bids_pscore.cli.execution import PLUGINS
from bids_pscore.cli.run import build_parser, parse_args

REPO = Path(__file__).resolve().parents[1]


def tool(name):
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run([tool("hadolint"), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def lock_pins():
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_lock_pins_every_dependency_within_pyproject_and_the_tested_torch():
    # offline: tools/lock --check (CircleCI) re-resolves; this catches a dependency added or
    # narrowed in pyproject.toml without rerunning tools/lock
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = lock_pins()
    for requirement in map(Requirement, project["dependencies"] + project["optional-dependencies"]["validator"]):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in requirements.lock: run tools/lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {requirement}"
    tested_torch = Requirement(next(line for line in (REPO / "tools/torch.txt").read_text().splitlines() if line and not line.startswith("#")))
    assert pins["torch"] == Version(f"{tested_torch.specifier}".lstrip("=") + "+cpu")
    assert f"{tested_torch} -e ." in (REPO / "README.md").read_text()


def test_dockerfile_copies_what_the_install_needs_and_its_entrypoint_is_the_app(capsys):
    dockerfile = (REPO / "Dockerfile").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    copied = {src for line in dockerfile.splitlines() if line.startswith("COPY ") for src in line.split()[1:-1]}
    # pip install . reads these: without one the build fails, or the package lacks its data
    assert {"requirements.lock", "pyproject.toml", project["readme"], "LICENSE", "bids_pscore"} <= copied
    assert re.search(
        r"--no-deps --requirement requirements\.lock\s+\\\s+&& SETUPTOOLS_SCM_PRETEND_VERSION=\"\$\{VERSION\}\" pip install [^\n]*--no-deps \.",
        dockerfile,
    )
    assert re.search(r"^ARG VERSION=(.+)$", dockerfile, re.M).group(1) == released_version()
    # the entry point is a console script of the project, and that script answers
    (entrypoint,) = json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.M).group(1))
    module, function = project["scripts"][entrypoint].split(":")
    with pytest.raises(SystemExit) as stop:
        getattr(importlib.import_module(module), function)(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"bids_pscore {__version__}"


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
    result = subprocess.run(
        [tool("bosh"), "exec", "simulate", str(REPO / "boutiques.json"), "-i", str(path)], capture_output=True, text=True, check=True
    )
    # BIDS-App descriptors make the output folder first: "mkdir -p OUT; bids_pscore ..."
    mkdir, app = result.stdout.strip().splitlines()[-1].split(";", 1)
    assert shlex.split(mkdir) == ["mkdir", "-p", "/out"]
    command = shlex.split(app)
    assert command[0] == "bids_pscore"
    config = parse_args(command[1:])
    execution = config.execution
    assert config.selection.participant_label == ("01", "02") and config.selection.session_label == ("1",)
    assert execution.plugin == "SLURM" and execution.plugin_args == {"sbatch_args": "-p short"}
    assert (execution.n_cpus, execution.omp_nthreads, execution.random_seed, execution.verbosity) == (2, 1, 3, 1)
    assert (execution.mem_gb, execution.stop_on_first_crash, str(config.selection.bids_database_dir), config.reports_only) == (
        6,
        True,
        "/index",
        True,
    )


def test_boutiques_lists_every_option_of_the_app():
    descriptor = json.loads((REPO / "boutiques.json").read_text())
    flags = {i["command-line-flag"] for i in descriptor["inputs"] if "command-line-flag" in i}
    # boutiques names each option by its first long spelling
    options = {
        next(o for o in a.option_strings if o.startswith("--"))
        for a in build_parser()._actions
        if a.option_strings and a.dest not in ("help", "version")
    }
    assert flags == options
    plugin = next(i for i in descriptor["inputs"] if i["id"] == "nipype_plugin")
    assert tuple(plugin["value-choices"]) == PLUGINS


def released_version():
    """The release users are told to pull: boutiques.json's, which every other mention must equal."""
    return json.loads((REPO / "boutiques.json").read_text())["tool-version"]


def test_every_mention_of_the_released_image_names_one_version():
    image = f"bids/bids_pscore:{released_version()}"
    assert json.loads((REPO / "boutiques.json").read_text())["container-image"]["image"] == image
    assert f"docker://{image}" in (REPO / "brainlife" / "main").read_text()
    # README's install and the containers page tell users to pull it; any other image tag they name is this one
    for page in (REPO / "README.md", REPO / "docs" / "containers.md"):
        text = page.read_text()
        assert f"docker pull {image}" in text, page
        assert set(re.findall(r"bids/bids_pscore:[\w.]+", text)) == {image}, page


def test_circleci_pushes_on_tags_the_image_boutiques_names():
    config = yaml.safe_load((REPO / ".circleci/config.yml").read_text())
    version = released_version()
    steps = config["jobs"]["deploy"]["steps"]
    push = next(s["run"]["command"] for s in steps if isinstance(s, dict) and "run" in s)
    assert 'docker push "bids/bids_pscore:$tag"' in push and "--password-stdin" in push
    jobs = {name: spec for job in config["workflows"]["build_test_deploy"]["jobs"] for name, spec in job.items()}
    assert jobs["deploy"]["filters"]["branches"]["ignore"] == "/.*/" and jobs["deploy"]["context"] == "bids-apps"
    # a tag build skips every job without a tag filter, and deploy needs them all
    tag_pattern = re.compile(jobs["deploy"]["filters"]["tags"]["only"].strip("/"))
    for name in jobs["deploy"]["requires"]:
        assert jobs[name]["filters"]["tags"]["only"] == jobs["deploy"]["filters"]["tags"]["only"]
    assert tag_pattern.match("v0.1.0") and tag_pattern.match(version) and not tag_pattern.match("main")
    # CircleCI runs README's install and test command, less the tests that need ../shared/data, which it does not have
    tests = config["jobs"]["tests"]["steps"][-1]["run"]["command"].splitlines()
    readme_test_command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    install, run_tests = readme_test_command.rsplit(" && ", 1)
    assert readme_test_command in (REPO / "README.md").read_text() and tests[1:] == [install, f'{run_tests} -m "not shared_data"']
    assert config["jobs"]["lock"]["steps"][-1]["run"]["command"].endswith("tools/lock --check")
