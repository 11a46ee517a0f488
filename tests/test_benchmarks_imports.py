"""The benchmark scripts' imports of project code resolve: every `from X import a, b` (at module level or inside a
function) where X is a project module (layoutkit.*, dataset_loader.*) names a module that imports and names that it
defines, and every `from sibling import a` (another script in benchmarks/) names what that script defines at its top
level. No benchmark runs in the test suite, so without this a renamed or moved function breaks a script silently
(benchmarks/predict_throughput.py once imported `Tally` from a module that no longer had it). The scripts themselves
are only parsed, never executed."""

import ast
import importlib
from pathlib import Path

import pytest

from conftest import REPO_ROOT

BENCHMARKS_DIR = REPO_ROOT / "benchmarks"
PROJECT_PACKAGES = ("layoutkit", "dataset_loader")
SCRIPTS = sorted(BENCHMARKS_DIR.glob("*.py"))


def top_level_names(path: Path) -> set[str]:
    """Names a script defines at module level (functions, classes, assignments, imports), read without running it."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for target in targets for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def project_imports(path: Path):
    """(module, [names], line) for each `from module import names` of project code or of a sibling script, and
    (module, [], line) for each `import module` of project code."""
    siblings = {script.stem for script in SCRIPTS}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in PROJECT_PACKAGES or node.module in siblings:
                yield node.module, [alias.name for alias in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PROJECT_PACKAGES:
                    yield alias.name, [], node.lineno


def test_there_are_benchmark_scripts_with_project_imports():
    """So the check below cannot pass vacuously (a moved folder, a changed import style)."""
    assert len(SCRIPTS) >= 10
    assert sum(1 for script in SCRIPTS for _ in project_imports(script)) >= 20


@pytest.mark.parametrize("script", SCRIPTS, ids=[script.name for script in SCRIPTS])
def test_benchmark_imports_resolve(script):
    problems = []
    for module_name, names, line in project_imports(script):
        where = f"benchmarks/{script.name}:{line}"
        sibling = BENCHMARKS_DIR / f"{module_name}.py"
        if sibling.is_file():
            defined = top_level_names(sibling)
            problems += [f"{where}: benchmarks/{sibling.name} defines no {name!r}" for name in names
                         if name not in defined]
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            problems.append(f"{where}: cannot import {module_name} ({error})")
            continue
        for name in names:
            if name == "*" or hasattr(module, name):
                continue
            try:  # `from package import submodule`
                importlib.import_module(f"{module_name}.{name}")
            except ModuleNotFoundError:
                problems.append(f"{where}: {module_name} has no {name!r}")
    assert problems == [], "\n".join(problems)
