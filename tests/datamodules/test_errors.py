"""DatasetNotFoundError and its message helper."""

from __future__ import annotations

import pytest

from datamodules.errors import DatasetNotFoundError, dataset_error_message, dataset_not_found


def test_error_is_a_file_not_found_error(tmp_path):
    err = dataset_not_found("Toy", tmp_path / "toy", "<data_dir>/toy/x.bin", "copy it there", missing=["x.bin"])
    assert isinstance(err, DatasetNotFoundError)
    assert isinstance(err, FileNotFoundError)
    assert err.path == str(tmp_path / "toy")
    with pytest.raises(FileNotFoundError):
        raise err


def test_message_names_path_layout_and_remedy(tmp_path):
    msg = dataset_error_message("Toy", tmp_path / "toy", "<data_dir>/toy/x.bin", "copy it there",
                                missing=["x.bin", "y.bin"])
    assert str(tmp_path / "toy") in msg
    assert "was not found" in msg
    assert "Missing: x.bin, y.bin." in msg
    assert "Expected layout: <data_dir>/toy/x.bin." in msg
    assert "To obtain it: copy it there." in msg
    assert "\n" not in msg


def test_message_for_existing_but_malformed_path(tmp_path):
    msg = dataset_error_message("Toy", tmp_path, "layout", "remedy")
    assert "is incomplete or malformed" in msg
    msg = dataset_error_message("Toy", tmp_path, "layout", "remedy", problem="has 3 classes, expected 4")
    assert "has 3 classes, expected 4" in msg and str(tmp_path) in msg
    assert str(DatasetNotFoundError(msg)) == msg
