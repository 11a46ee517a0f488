"""preprocessing.json has one reader (dataset_loader.preprocessing.load_preprocessing): training records what it
reads into config.json's document_preprocessing, with the defaults the pipelines apply."""

import json

from dataset_loader.preprocessing import load_preprocessing, save_preprocessing
from layoutkit.train.data import dataset_preprocessing


def test_training_records_what_the_one_reader_reads(tmp_path):
    save_preprocessing(tmp_path, (800, 600), keep_aspect=True, pad=False, ocr={"engine": "rapidocr"})
    assert dataset_preprocessing(str(tmp_path)) == load_preprocessing(tmp_path) == {
        "resize": [800, 600], "keep_aspect": True, "pad": False, "ocr": {"engine": "rapidocr"}}


def test_an_older_file_gets_the_pipelines_defaults(tmp_path):
    (tmp_path / "preprocessing.json").write_text(json.dumps({"resize": [1000, 1000]}))
    assert dataset_preprocessing(str(tmp_path)) == {"resize": [1000, 1000], "keep_aspect": False, "pad": True}


def test_without_a_file_pages_are_kept_as_they_are(tmp_path):
    assert dataset_preprocessing(str(tmp_path)) == dataset_preprocessing(None) == {"resize": None,
                                                                                  "keep_aspect": False}
