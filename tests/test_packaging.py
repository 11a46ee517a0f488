"""Packaging: the wheel `pip install .` builds (the library, its data files and the `layoutkit` command, not the
tests, benchmarks or top-level scripts), installed into a folder and used from outside the checkout; the `layoutkit`
command's dispatch. Offline and without the network: the wheel is built with the environment's setuptools."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from layoutkit import __version__, cli

pytest.importorskip("setuptools", minversion="70.1",
                    reason="building the wheel needs setuptools >= 70.1 (pip install '.[test]'; setup.sh installs it)")

PACKAGES = ("layoutkit", "dataset_loader", "model_card")
# Files the packages read at runtime (pyproject.toml's package-data).
DATA_FILES = ("layoutkit/apps/static/serve.html", "dataset_loader/FORMAT.md", "model_card/template.md")
# What the wheel must not carry: the checkout's tests, benchmarks, scripts and top-level programs.
NOT_PACKAGED = ("tests", "benchmarks", "scripts", "docs")
TOP_LEVEL_SCRIPTS = ("predict.py", "run_invoice_ner.py", "run_doc_classification.py", "run_relation_extraction.py")


def copy_checkout(target: Path) -> Path:
    """The files a build reads, and those it must leave out, copied to `target`: building there leaves no build/
    or *.egg-info in the checkout, and untracked data (data/, runs/) is not copied."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md", *TOP_LEVEL_SCRIPTS):
        shutil.copy2(REPO_ROOT / name, target / name)
    for name in (*PACKAGES, "tests", "benchmarks", "scripts"):
        shutil.copytree(REPO_ROOT / name, target / name, ignore=ignore)
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = copy_checkout(tmp_path_factory.mktemp("source"))
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", dist,
         source], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    (path,) = dist.glob("layoutkit-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed with `pip install --target` (dependencies: the test environment's)."""
    site = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", site, wheel],
        capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return site


def run_installed(site: Path, args, workdir: Path) -> subprocess.CompletedProcess:
    """Run `args` from `workdir` (outside the checkout) with only the installed copy on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1")
    return subprocess.run([str(a) for a in args], cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def test_wheel_holds_the_library_its_data_and_the_command(wheel):
    assert wheel.name == f"layoutkit-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"layoutkit-{__version__}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    # Every module of the three packages, and the data files they read.
    sources = {path.relative_to(REPO_ROOT).as_posix() for package in PACKAGES
               for path in (REPO_ROOT / package).rglob("*.py") if "__pycache__" not in path.parts}
    assert sources <= names, sorted(sources - names)
    assert set(DATA_FILES) <= names, sorted(set(DATA_FILES) - names)
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {*PACKAGES, info}, sorted(top_level)
    assert not top_level & {*NOT_PACKAGED, *TOP_LEVEL_SCRIPTS}
    assert "[console_scripts]\nlayoutkit = layoutkit.cli:main" in entry_points
    # The core dependencies and every extra are declared.
    requires = [line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Requires-Dist: ")]
    core = {requirement.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip() for requirement in requires
            if "extra ==" not in requirement}
    assert {"torch", "transformers", "datasets", "accelerate", "seqeval", "pillow"} <= core
    assert not core & {"fastapi", "rapidocr", "onnxruntime", "mlflow", "optuna", "pytest"}
    extras = {line.split(": ", 1)[1] for line in metadata.splitlines() if line.startswith("Provides-Extra: ")}
    assert extras >= {"ocr", "serve", "onnx", "tracking", "hpo", "all", "dev", "test"}


def test_installed_wheel_works_outside_the_checkout(installed, tmp_path):
    """Imports, the package data found through the installed package, and the console script."""
    check = (
        "import importlib.resources, json\n"
        "import dataset_loader, layoutkit, model_card\n"
        "from dataset_loader.card import FORMAT_FILE\n"
        "from layoutkit.apps.serve import PAGE_HTML\n"
        "from model_card.card import TEMPLATE\n"
        "page = importlib.resources.files('layoutkit').joinpath('apps/static/serve.html')\n"
        "print(json.dumps({'modules': [m.__file__ for m in (dataset_loader, layoutkit, model_card)],\n"
        "                  'data': [str(p) for p in (PAGE_HTML, FORMAT_FILE, TEMPLATE)],\n"
        "                  'page': page.read_text(encoding='utf-8') == PAGE_HTML.read_text(encoding='utf-8')}))\n"
    )
    result = run_installed(installed, [sys.executable, "-c", check], tmp_path)
    assert result.returncode == 0, result.stderr[-6000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    for path in found["modules"] + found["data"]:
        assert Path(path).resolve().is_relative_to(installed.resolve()), path  # not the checkout's copy
        assert Path(path).is_file()
    assert found["page"]

    script = installed / "bin" / "layoutkit"  # what pip writes for [project.scripts]
    assert script.is_file()
    result = run_installed(installed, [script, "--help"], tmp_path)
    assert result.returncode == 0, result.stderr[-6000:]
    assert all(f"  {name}" in result.stdout for name in cli.COMMANDS)
    result = run_installed(installed, [script, "--version"], tmp_path)
    assert result.stdout.strip() == f"layoutkit {__version__}"


@pytest.mark.parametrize(("command", "expected"), [
    (["dataset", "--help"], "synth"),
    (["dataset", "synth", "--help"], "--num_docs"),
    (["predict", "--help"], "--model_name_or_path"),
])
def test_installed_command_dispatches(installed, tmp_path, command, expected):
    """The module's own parser answers, under the command's name ("usage: layoutkit dataset synth ...")."""
    result = run_installed(installed, [sys.executable, "-m", "layoutkit.cli", *command], tmp_path)
    assert result.returncode == 0, result.stderr[-6000:]
    assert expected in result.stdout
    assert result.stdout.startswith(f"usage: layoutkit {' '.join(command[:-1])} ")


# --------------------------------------------------------------------------------------- the dispatcher itself
def test_cli_usage_version_and_unknown_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: layoutkit")
    assert len([line for line in out.splitlines() if line.startswith("  ")]) == len(cli.COMMANDS)  # one line each
    assert cli.main([]) == 2 and "usage: layoutkit" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0 and capsys.readouterr().out == f"layoutkit {__version__}\n"
    assert cli.main(["nope"]) == 2 and "unknown command 'nope'" in capsys.readouterr().err


def test_every_command_names_an_importable_module():
    for name, command in cli.COMMANDS.items():
        module, _, function = command.target.partition(":")
        assert importlib.util.find_spec(module) is not None, name
        assert function == "main"


def probe(argv):
    """A command's main(argv): what it was called with."""
    probe.calls.append((list(argv), list(sys.argv)))
    return 3


def test_command_gets_the_rest_of_the_line_and_its_name(monkeypatch):
    """The function gets the arguments after the command, sys.argv[0] names the command (argparse's prog) while it
    runs and is restored after, and its return value is the exit code."""
    monkeypatch.setitem(cli.COMMANDS, "probe", cli.Command(f"{__name__}:probe", "a test command"))
    probe.calls = []
    argv = list(sys.argv)
    assert cli.main(["probe", "--flag", "value", "--help"]) == 3
    assert probe.calls == [(["--flag", "value", "--help"], ["layoutkit probe", "--flag", "value", "--help"])]
    assert sys.argv == argv
    monkeypatch.setitem(cli.COMMANDS, "missing", cli.Command(f"{__name__}:no_such_function", "not there"))
    assert cli.main(["missing"]) == 2


@pytest.mark.parametrize(("command", "module"), [("train-ner", "layoutkit.train.ner_task"),
                                                  ("train-classifier", "layoutkit.train.classification_task"),
                                                  ("train-relations", "layoutkit.train.relation_task")])
def test_training_commands(command, module, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--dataset_path" in capsys.readouterr().out


def test_missing_optional_dependency_names_the_extra(monkeypatch, tmp_path):
    """PDFs without pypdfium2 (the ocr extra): the document's error says what to install."""
    from layoutkit.apps.documents import DocumentError, pdf_pages

    monkeypatch.setitem(sys.modules, "pypdfium2", None)  # import pypdfium2 -> ImportError
    with pytest.raises(DocumentError, match=r"scan\.pdf: reading PDFs needs pypdfium2: pip install 'layoutkit\[ocr\]'"):
        next(pdf_pages(tmp_path / "scan.pdf", 100, 10**8))
