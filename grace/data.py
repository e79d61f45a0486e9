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
