"""The documentation site builds with ``mkdocs build --strict`` (no broken link, page or API
reference), its command-line reference is generated from the parser, the docstring examples
run, and the project's conventions (version, changelog, licence) agree."""

from __future__ import annotations

import argparse
import doctest
import importlib
import importlib.util
import os
import pkgutil
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import sdnet
from sdnet.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MKDOCS = ROOT / "mkdocs.yml"


def _hook():
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "hooks/cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages() -> list[str]:
    return re.findall(r":\s*([\w./-]+\.md)\s*$", MKDOCS.read_text(), re.M)


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(MKDOCS), "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return out


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = _nav_pages()
    assert len(nav) == len(set(nav)), "a page is listed twice in mkdocs.yml"
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, f"mkdocs.yml lists pages that do not exist: {missing}"
    orphans = sorted(p.name for p in DOCS.glob("*.md") if p.name not in nav)
    assert not orphans, f"pages missing from the nav of mkdocs.yml: {orphans}"


def test_strict_build_renders_the_api_and_cli_reference(site: Path) -> None:
    api = (site / "api" / "index.html").read_text()
    for name in ("sdnet.train", "sdnet.build_model", "sdnet.interop.export_onnx",
                 "sdnet.predict.predict_files", "get_backend"):  # fmt: skip
        assert f'id="{name}"' in api or f'id="backends.{name}"' in api, name
    cli = (site / "cli" / "index.html").read_text()
    for name, parser in _subcommands().items():
        assert f"sdnet {name}" in cli
        for action in parser._actions:
            for flag in action.option_strings:
                assert flag in cli, f"sdnet {name} {flag} missing from the CLI reference"
    assert (site / "img" / "results.png").is_file()
    assert "img/results.png" in (site / "results" / "index.html").read_text()  # the hook's plot


def test_cli_reference_is_generated_from_the_parser() -> None:
    text = _hook().render()
    for name, parser in _subcommands().items():
        assert f"## `sdnet {name}`" in text
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings or [action.metavar or action.dest]:
                assert flag in text, (name, flag)
    assert "<!-- cli-reference -->" in (DOCS / "cli.md").read_text()


def test_cli_reference_follows_a_new_subcommand() -> None:
    """A command added to the parser appears in the reference without touching the docs."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    extra = sub.add_parser("frobnicate", help="an extra command")
    extra.add_argument("--level", type=int, default=3, help="how much")
    text = _hook().render(parser)
    assert "## `sdnet frobnicate`" in text and "| `--level LEVEL` | `3` | how much |" in text


def _modules() -> list[str]:
    names = ["sdnet"]
    for info in pkgutil.walk_packages(sdnet.__path__, "sdnet."):
        names.append(info.name)
    return sorted(names)


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        if test.examples and (test.filename or "").startswith(str(ROOT)):
            runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} docstring example(s) failed in {name}"


def test_quickstart_starts_with_the_readme_commands() -> None:
    readme = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), re.S)
    quick = (DOCS / "quickstart.md").read_text()
    for cmd in readme[:2]:
        assert f"```bash\n{cmd}\n```" in quick, f"quickstart.md lacks the README command {cmd!r}"
    assert 'sdnet.train(device="gpu")' in quick


def test_images_referenced_by_the_docs_exist() -> None:
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            assert (DOCS / target).is_file(), f"{page.name}: image {target} not found"


def test_results_plot_script_draws_a_png(tmp_path: Path) -> None:
    out = tmp_path / "results.png"
    proc = subprocess.run(
        [sys.executable, "benchmarks/plot_results.py", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, MPLBACKEND="Agg"),
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_version_changelog_and_licence_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = project["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), "the version is MAJOR.MINOR.PATCH"
    assert sdnet.__version__ == version  # read from the installed metadata, nowhere else
    changelog = (ROOT / "CHANGELOG.md").read_text()
    first = re.search(r"^## \[?(\d+\.\d+\.\d+|Unreleased)\]?", changelog, re.M)
    assert first and first.group(1) in (version, "Unreleased")
    assert f"## [{version}]" in changelog, f"CHANGELOG.md has no entry for {version}"
    assert project["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    version_strings = [p for p in (ROOT / "sdnet").rglob("*.py") if f'"{version}"' in p.read_text()]
    assert not version_strings, f"the version is written again in {version_strings}"


def test_version_flag_prints_the_version(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"sdnet {sdnet.__version__}"
