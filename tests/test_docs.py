"""The documentation site (docs/, Sphinx with MyST Markdown) builds offline with warnings as errors,
README's links into it resolve, and what Read the Docs installs is what pyproject.toml says."""

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# every page the site must have (code and recipes cite disease_model, normative and relevance by file name)
PAGES = ("index", "usage", "outputs", "containers", "troubleshooting", "training", "method", "synthetic_data", "validation", "development")
PAGES += ("disease_model", "normative", "relevance")


def build(source, out):
    """sphinx-build as Read the Docs runs it (fail_on_warning), plus nitpicky; returns the finished process."""
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", "-d", str(out / ".doctrees"), str(source), str(out)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    result = build(DOCS, out)
    assert result.returncode == 0, f"the docs build warned or failed:\n{result.stdout}{result.stderr}"
    return out


def test_site_builds_without_warnings_and_has_every_page(site):
    for page in PAGES:
        assert (site / f"{page}.html").is_file(), page
    # a page added to docs/ is built too (an orphan would have warned above)
    for page in DOCS.glob("*.md"):
        assert (site / f"{page.stem}.html").is_file(), page.name


def test_a_broken_reference_fails_the_build(tmp_path):
    source = tmp_path / "docs"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("_build"))
    with (source / "normative.md").open("a") as page:
        page.write("\nSee [a page that does not exist](no_such_page.md) and [a missing section](relevance.md#no-such-section).\n")
    result = build(source, tmp_path / "out")
    assert result.returncode != 0
    assert "no_such_page" in result.stderr and "no-such-section" in result.stderr, result.stderr


def test_readme_links_reach_built_pages_and_their_sections(site):
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", (REPO / "README.md").read_text())
    assert links, "README links to no docs page"
    for path, anchor in links:
        assert (REPO / path).is_file(), path
        page = (site / Path(path).relative_to("docs").with_suffix(".html")).read_text()
        assert not anchor or f'id="{anchor}"' in page, f"{path}#{anchor}"


def test_read_the_docs_installs_the_docs_extra_and_tests_build_the_site():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lines = (DOCS / "requirements.txt").read_text().splitlines()
    pinned = {str(Requirement(line)) for line in lines if line and not line.startswith("#")}
    assert pinned == {str(Requirement(r)) for r in extras["docs"]} == {"sphinx<9,>=8", "myst-parser<5,>=4"}
    assert pinned <= {str(Requirement(r)) for r in extras["test"]}
    config = yaml.safe_load((REPO / ".readthedocs.yaml").read_text())
    assert config["version"] == 2 and config["build"]["os"] == "ubuntu-24.04" and config["build"]["tools"]["python"] == "3.11"
    assert config["sphinx"] == {"configuration": "docs/conf.py", "fail_on_warning": True}
    assert config["python"]["install"] == [{"requirements": "docs/requirements.txt"}]
