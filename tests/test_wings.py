"""The three wings of layoutkit and the import rules between them (docs/architecture.md):

- layoutkit/pipelines/: exactly the modules copied into a checkpoint or an ONNX export folder (plus attach.py, which
  copies them); each may import only transformers, torch, numpy, PIL and the standard library at module level, and
  nothing of layoutkit outside pipelines/ at all (in a checkpoint they are flat files beside the weights);
- layoutkit/apps/ and everything else outside layoutkit/train/ never import training code;
- importing the predict and serve apps loads no training module.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

from layoutkit.pipelines.attach import ALLOWED_IMPORTS, ENDPOINT_HANDLER, ONNX_MODEL, PIPELINES, pipeline_files

PACKAGE = REPO_ROOT / "layoutkit"
PIPELINES_DIR = PACKAGE / "pipelines"
# Not shipped, but lives with what it ships.
PIPELINES_NOT_SHIPPED = {"__init__.py", "attach.py"}
# The relation model's own code, saved beside its weights by save_pretrained (config.json's auto_map).
RELATION_MODEL = PIPELINES_DIR / "relation_model.py"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports(path: Path, source: str | None = None):
    """(absolute module name, line, at module level) of every import in the file; `from . import x` gives the
    module `package.x`. Module level: outside any function (an import in a class body or an `if`/`try` at the top
    still runs on import)."""
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source, filename=str(path))
    found = []

    def visit(node, top_level):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, top_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package_of(path).split(".")
                    base = ".".join(base[: len(base) - child.level + 1])
                    target = f"{base}.{child.module}" if child.module else base
                else:
                    target = child.module
                if child.module is None:  # from . import x, y: each name is a module
                    found.extend((f"{target}.{alias.name}", child.lineno, top_level) for alias in child.names)
                else:
                    found.append((target, child.lineno, top_level))
            visit(child, top_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, True)
    return found


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(REPO_ROOT)}:{line}"


def test_pipelines_wing_holds_exactly_the_shipped_modules():
    shipped = {path.name for task in PIPELINES for path in pipeline_files(task)}
    shipped |= {RELATION_MODEL.name, ENDPOINT_HANDLER.name, ONNX_MODEL.name}  # onnx_model.py: in ONNX exports
    present = {path.name for path in PIPELINES_DIR.glob("*.py")} - PIPELINES_NOT_SHIPPED
    assert present - shipped == set(), "in layoutkit/pipelines/ but never copied into a checkpoint: move them out"
    assert shipped - present == set(), "shipped modules outside layoutkit/pipelines/"


def test_pipelines_import_only_what_a_checkpoint_has():
    """Third-party packages beyond ALLOWED_IMPORTS only lazily (inside a function), layoutkit only within pipelines/."""
    problems = []
    for path in sorted(PIPELINES_DIR.glob("*.py")):
        for target, line, top_level in imports(path):
            root = target.split(".")[0]
            if root == "layoutkit":
                if not target.startswith("layoutkit.pipelines.") or "." in target[len("layoutkit.pipelines."):]:
                    problems.append(f"{where(path, line)} imports {target}: outside layoutkit/pipelines/")
                elif not (PIPELINES_DIR / f"{target.rpartition('.')[2]}.py").is_file():
                    problems.append(f"{where(path, line)} imports {target}: no such module in layoutkit/pipelines/")
            elif top_level and root not in ALLOWED_IMPORTS | STDLIB:
                problems.append(f"{where(path, line)} imports {target} at module level: a checkpoint's environment has "
                                f"only {sorted(ALLOWED_IMPORTS)} and the standard library (import it inside a function)")
    assert problems == [], "\n".join(problems)


def test_nothing_outside_train_imports_training_code():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "train") in path.parents:
            continue
        for target, line, _ in imports(path):
            if target == "layoutkit.train" or target.startswith("layoutkit.train."):
                problems.append(f"{where(path, line)} imports {target}")
    assert problems == [], "apps, pipelines and shared modules must not import training code:\n" + "\n".join(problems)


def test_import_checker_sees_relative_and_lazy_imports():
    """The checker above resolves `from ..train.x import y` inside a function, so the rules cannot pass vacuously."""
    source = "import numpy\ndef f():\n    from ..train.driver import main\n    from . import documents\n"
    assert imports(PACKAGE / "apps" / "predict.py", source) == [
        ("numpy", 1, True), ("layoutkit.train.driver", 3, False), ("layoutkit.apps.documents", 4, False)]


def test_inference_apps_load_no_training_module():
    """`import layoutkit.apps.predict` (and serve) must not drag in the driver, augmentation, losses or datasets."""
    check = (
        "import json, sys\n"
        "import layoutkit.apps.predict, layoutkit.apps.serve\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('layoutkit', 'datasets'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert [name for name in loaded if name.startswith(("layoutkit.train", "datasets"))] == [], loaded
    assert "layoutkit.apps.predict" in loaded
