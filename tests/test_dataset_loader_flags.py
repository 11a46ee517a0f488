"""dataset_loader's flags are snake_case like every other program's; the kebab-case spellings still work for a
release, with a deprecation warning."""

from dataset_loader.__main__ import build_parser, main
from dataset_loader.deprecated_flags import option_strings, snake_case_options


def test_every_flag_is_snake_case():
    assert [name for name in option_strings(build_parser()) if "-" in name[2:]] == []


def test_kebab_spellings_are_converted_with_a_warning(capsys):
    parser = build_parser()
    argv = ["build", "--data-dir", "in", "--output=out", "--resize-mode=pad", "--ocr-config", "--psm-6", "--keep-asp"]
    assert snake_case_options(argv, parser) == ["build", "--data_dir", "in", "--output=out", "--resize_mode=pad",
                                                "--ocr-config", "--psm-6", "--keep_asp"]
    err = capsys.readouterr().err
    assert "--data-dir is deprecated, write --data_dir" in err and "--resize-mode is deprecated" in err
    assert "--psm-6" not in err  # not an option of dataset_loader: left as it is


def test_the_old_spelling_still_runs(tmp_path, capsys):
    assert main(["synth", "--output", str(tmp_path / "old"), "--num-docs", "1"]) == 0
    assert main(["synth", "--output", str(tmp_path / "new"), "--num_docs", "1"]) == 0
    assert "--num-docs is deprecated" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "old").rglob("*.json")) == sorted(
        p.name for p in (tmp_path / "new").rglob("*.json"))
