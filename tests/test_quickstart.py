"""`layoutkit quickstart` (layoutkit/apps/quickstart.py): the quick start from any folder, its summary table, and the
README's quick-start numbers naming the sample version they were measured on."""

import json
import re

from conftest import REPO_ROOT, python_module, run_command

from dataset_loader.synth import SAMPLE_VERSION

# The line the quick start prints under its summary table and the README keeps beside the numbers it copies.
SAMPLE_MARKER = re.compile(r"<!-- quickstart-sample: v(\d+) -->")


def test_small_quickstart_runs_from_another_folder_and_prints_its_summary(tmp_path):
    """--small: every step (generate, build, scratch, train, test, unseen invoice, end to end) on a few invoices, run
    as `layoutkit quickstart` from a folder outside the checkout; everything lands in --output_dir, the log has no
    progress-bar redraws (not a terminal), and it ends with the summary table naming the sample version."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = run_command(python_module("layoutkit", "quickstart", "--small", "--e2e_engine", "none",
                                       "--output_dir", "qs"), cwd=work)
    log = result.stdout + result.stderr
    assert sorted(p.name for p in work.iterdir()) == ["qs"], "the quick start writes only into --output_dir"
    assert "\r" not in log, "no progress-bar redraws in a log"
    for number, step in enumerate(["generate", "build", "scratch", "train", "test", "unseen invoice", "end to end"], 1):
        assert f"==> [{number}/7] {step}" in log and f"    {step} done in " in log
    summary = result.stdout[result.stdout.index("==> Summary"):]
    assert "| field | test F1 | end to end, words given |" in summary
    assert re.search(r"\| \*\*all fields\*\* \| \*\*\d\.\d{3}\*\* \| \*\*\d\.\d{3}\*\* \(\d+/\d+\) \|", summary)
    assert [int(v) for v in SAMPLE_MARKER.findall(summary)] == [SAMPLE_VERSION]
    assert "JSON (fields with candidates" in log and "field             predicted" in log
    written = json.loads((work / "qs" / "summary.json").read_text())
    assert written["sample_version"] == SAMPLE_VERSION and set(written["end_to_end"]) == {"given"}
    assert (work / "qs" / "summary.md").read_text().strip() == summary.split("\n", 2)[2].strip()
    assert (work / "qs" / "runs" / "predictions" / "invoice_00000.page1.png").exists()


def test_readme_quickstart_numbers_name_the_current_sample_version():
    """The README's quick-start numbers carry the marker line the quick start prints under its table; it must name
    the generator's current SAMPLE_VERSION (raise it with the generator, then re-run the quick start and copy its
    table)."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    versions = [int(v) for v in SAMPLE_MARKER.findall(readme)]
    assert versions, "README.md: the quick-start numbers need their `<!-- quickstart-sample: vN -->` line"
    assert set(versions) == {SAMPLE_VERSION}, (
        f"README.md's quick-start numbers were measured on sample v{versions}, the generator is at "
        f"v{SAMPLE_VERSION}: re-run `layoutkit quickstart` and copy its summary table")
