"""Errors raised by the datamodules when a dataset directory is missing or malformed."""

from __future__ import annotations

import os
from collections.abc import Iterable


class DatasetNotFoundError(FileNotFoundError):
    """A dataset directory (or a file in it) is missing, empty or unreadable.

    Subclasses ``FileNotFoundError`` so generic handlers still catch it; the message is a single
    paragraph built by :func:`dataset_error_message`.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)

    def __str__(self) -> str:  # FileNotFoundError(msg) already prints msg; keep it free of errno noise.
        return self.args[0]


def dataset_error_message(
    dataset: str,
    path: str | os.PathLike,
    expected: str,
    how_to_get: str,
    missing: Iterable[str] | str | None = None,
    problem: str | None = None,
) -> str:
    """Build a one-paragraph message: what is wrong at ``path``, the expected layout and how to get the data.

    ``missing`` lists the absent items (files/folders), ``problem`` describes anything else found wrong
    (e.g. an unreadable pickle or a wrong class count).
    """
    path = os.path.abspath(os.fspath(path))
    if problem is None:
        problem = "was not found" if not os.path.exists(path) else "is incomplete or malformed"
    parts = [f"{dataset} data at '{path}' {problem}."]
    if missing is not None:
        items = [missing] if isinstance(missing, str) else list(missing)
        if items:
            parts.append("Missing: " + ", ".join(items) + ".")
    parts.append(f"Expected layout: {expected}.")
    parts.append(f"To obtain it: {how_to_get}.")
    return " ".join(parts)


def dataset_not_found(dataset: str, path: str | os.PathLike, expected: str, how_to_get: str,
                      missing: Iterable[str] | str | None = None,
                      problem: str | None = None) -> DatasetNotFoundError:
    """Return (not raise) a :class:`DatasetNotFoundError` with a :func:`dataset_error_message` message."""
    return DatasetNotFoundError(
        dataset_error_message(dataset, path, expected, how_to_get, missing=missing, problem=problem), path
    )
