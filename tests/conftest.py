"""Shared fixtures: offline environment, the built-in synthetic invoices, tiny from-scratch checkpoints."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO_ROOT = Path(__file__).resolve().parent.parent
# FUNSD_DIR: where FUNSD is when the checkout is not beside shared/ (as in tests/test_dataset_loader.py).
FUNSD_DIR = Path(os.environ.get("FUNSD_DIR", REPO_ROOT.parent / "shared" / "datasets" / "funsd"))


def run_command(args, cwd=None, env=None, timeout=600) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output if it exits non-zero."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd or REPO_ROOT, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        pytest.fail(f"command failed ({result.returncode}): {' '.join(map(str, args))}\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


# site-packages without its .pth files: scripts/setup.sh installs this project editable, which registers it through
# one, and a fresh process must see the libraries a checkpoint's user has, not the project.
# (`-S` leaves the venv's site-packages out altogether, so this process's are added by name.)
SITE_PACKAGES_WITHOUT_PTH = (
    f"import sys\nsys.path += {sorted({sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']})!r}\n"
)


def run_fresh_python(script: str, args, workdir: Path):
    """Run `script` in a `python -I -S` process and return the JSON its last stdout line prints.

    No PYTHONPATH, no user site, site-packages without .pth files, cwd `workdir` outside the project and offline,
    with its own Hugging Face caches there: the process sees only what a user of a saved checkpoint has, not this
    repository (installed or not).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(workdir / "modules"), HF_HOME=str(workdir / "hf"))
    result = subprocess.run([sys.executable, "-I", "-S", "-c", SITE_PACKAGES_WITHOUT_PTH + script, *map(str, args)],
                            cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-6000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def python_module(*args):
    return [sys.executable, "-m", *args]


@pytest.fixture(scope="session")
def synthetic_invoices(tmp_path_factory) -> Path:
    """48 synthetic invoices in the user annotation format (images/ + annotations/)."""
    folder = tmp_path_factory.mktemp("synth")
    run_command(python_module("dataset_loader", "synth", "--output", folder, "--num-docs", 48, "--seed", 0))
    return folder


@pytest.fixture(scope="session")
def invoice_dataset(synthetic_invoices, tmp_path_factory) -> Path:
    """The synthetic invoices built into a saved DatasetDict (train/validation/test)."""
    output = tmp_path_factory.mktemp("dataset") / "invoices"
    run_command(python_module("dataset_loader", "build", "--data-dir", synthetic_invoices, "--output", output,
                              "--seed", 0))
    return output


@pytest.fixture(scope="session")
def scratch_checkpoint(invoice_dataset, tmp_path_factory):
    """A factory of tiny from-scratch config + tokenizer folders, one per model type."""
    from layoutkit.apps.scratch import build_scratch_checkpoint, dataset_words

    made = {}

    def make(model_type: str) -> Path:
        if model_type not in made:
            folder = tmp_path_factory.mktemp(f"scratch-{model_type}")
            build_scratch_checkpoint(str(folder), model_type, dataset_words(str(invoice_dataset)), size="tiny",
                                     vocab_size=600)
            made[model_type] = folder
        return made[model_type]

    return make


# Inference, prediction, model card and push tests: a trained tiny checkpoint (see inference_fixtures.py).
from inference_fixtures import trained_ner_checkpoint, vendor_ner_checkpoint  # noqa: E402,F401
