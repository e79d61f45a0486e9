"""Files written whole or not at all: outputs replaced only once complete, and run logs
appended a line at a time whose last line a stop may have cut."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from grace.data import DataError


class WriteError(RuntimeError):
    """A file could not be written (a full disk, say); the file it would replace is kept."""


@contextmanager
def atomic_output(path: str | Path, binary: bool = False) -> Iterator[IO]:
    """A handle whose contents replace ``path`` only once all are written: a full disk, an
    error or a stop midway leaves the previous file whole, and a hard link to the old file
    (an input, say) keeps its contents."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    try:
        with open(partial, "wb" if binary else "w", encoding=None if binary else "utf-8") as out:
            yield out
        os.replace(partial, path)
    except OSError as error:
        raise WriteError(f"{path}: could not be written ({error}); nothing was replaced.") from None
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomically(path: str | Path, text: str) -> None:
    with atomic_output(path) as out:
        out.write(text)


def appended_records(path: str | Path, repair: bool = False) -> list[dict]:
    """The records of a JSON-lines file a run appends to, without a last line cut by a stop;
    ``repair`` also cuts it from the file, so the next append starts a line of its own rather
    than gluing onto it. A damaged earlier line is an error naming it."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number < len(lines):
                message = f"{path}:{number} is not a JSON record: the file is damaged."
                raise DataError(message) from None
    if repair and (len(records) < len(lines) or not text.endswith("\n")):
        path.write_text("".join(f"{line}\n" for line in lines[: len(records)]), encoding="utf-8")
    return records
