"""Refresh the book's generated blocks, the study figure and the notebooks' install cells.

    python scripts/refresh_book.py

Each block sits between ``<!-- name -->`` and ``<!-- /name -->`` in a page and is made from
committed files only (profiles, ``results/cpu/table.json``, ``results/sweep/``,
``results/echo/``, ``results/pooling/``, ``results/headroom/``, ``results/swap/``); nothing is
trained or evaluated here. The notebooks' install cell is written from
``grace.book.notebooks.install_cell`` (one source for all of them). Tests keep each page and
notebook equal to what this script writes, so a stale number or cell fails CI.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import yaml

from grace.book.notebooks import COLAB_METADATA, install_cell
from grace.book.study import (
    describe_study,
    echo_control,
    pooling_change,
    study_figure,
    study_markdown,
    study_records,
    swap_markdown,
    task_run_reading,
)
from grace.config import settings_table
from grace.data import TASKS
from grace.evaluation.results import headline_answer, table_json_markdown
from grace.headroom import headroom_markdown, headroom_parts_markdown

ROOT = Path(__file__).resolve().parent.parent
BOOK_PROFILES = ["tiny", "cpu", "cpu-long", "colab", "gpu", "paper"]


def table_rows() -> list[dict]:
    return json.loads((ROOT / "results" / "cpu" / "table.json").read_text())


def study() -> list[dict]:
    return study_records(ROOT / "results" / "sweep")


ECHO_FILES = ("base_echo.json", "validation.json")  # written by scripts/echo_control.py


def echo() -> str:
    folder = ROOT / "results" / "echo"
    report, validation = (json.loads((folder / n).read_text()) for n in ECHO_FILES)
    return echo_control(table_rows(), report, validation)


def headroom() -> list[dict]:  # written by scripts/headroom.py, by task then length
    records = [
        json.loads(path.read_text()) for path in (ROOT / "results" / "headroom").glob("*.json")
    ]
    order = list(TASKS)
    return sorted(records, key=lambda r: (order.index(r["task"]), r["rationale_tokens"]))


# The runs on the Lee topic task (scripts/sweep.py) and their swap tests (scripts/swap.py):
# record name -> the book's label.
TASK_RUNS = {
    "task-lee-topic-paper": "GRACE on lee-topic",
    "task-lee-topic-paper-64": "GRACE on lee-topic, 64-token rationales",
    "task-lee-topic-paper-draws8": "GRACE on lee-topic, validated with the mean of 8 draws",
    "task-lee-topic-paper-kl": "GRACE on lee-topic with a KL penalty of 0.04",
    "task-lee-topic-cl": "+CL on lee-topic",
}
SWAPS = {
    "task-lee-topic-paper-40": "GRACE, 40 steps",
    "task-lee-topic-paper-64": "GRACE, 64 tokens, 200 steps",
    "task-lee-topic-cl": "+CL, 150 steps",
}
# The test split, read once after every choice was made on validation (40 steps: +CL's
# plateau starts there, and GRACE's swap was measured there).
SWAP_TESTS = {
    "task-lee-topic-paper-40-test": "GRACE, 40 steps",
    "task-lee-topic-cl-40-test": "+CL, 40 steps",
}

# The committed cpu run's GRACE models (notebooks 5 and 6) on that profile's validation.
CPU_SWAPS = {
    "cpu-grace-supervised": "GRACE supervised",
    "cpu-grace-unsupervised": "GRACE unsupervised",
    "cpu-cl": "+CL",
    "cpu-simcse": "SimCSE",
}


def recorded(folder: str, labels: dict[str, str]) -> dict[str, dict]:
    """Book label -> record, for the names in ``labels`` recorded under ``results/folder``."""
    paths = {label: ROOT / "results" / folder / f"{name}.json" for name, label in labels.items()}
    return {label: json.loads(path.read_text()) for label, path in paths.items() if path.exists()}


def task_runs() -> str:
    runs = recorded("sweep", TASK_RUNS)
    return "\n\n".join(task_run_reading(record, label) for label, record in runs.items())


def swaps(labels: dict[str, str] = SWAPS) -> str:
    records = recorded("swap", labels)
    return swap_markdown(records) if records else "No swap test recorded yet."


def pooling() -> dict:  # written by scripts/pooling_change.py
    return json.loads((ROOT / "results" / "pooling" / "validation.json").read_text())


# block name -> (page, what to write there)
BLOCKS = {
    "settings-table": ("book/method.md", lambda: settings_table(BOOK_PROFILES)),
    "results-table": ("book/reproduce.md", lambda: table_json_markdown(table_rows())),
    "answer": ("book/intro.md", lambda: headline_answer(table_rows())),
    "study-table": ("book/study.md", lambda: study_markdown(study())),
    "study-reading": ("book/study_runs.md", lambda: describe_study(study())),
    "echo-control": ("book/study.md", echo),
    "pooling-change": ("book/method.md", lambda: pooling_change(pooling())),
    "headroom-table": ("book/study.md", lambda: headroom_markdown(headroom())),
    "headroom-parts": ("book/study.md", lambda: headroom_parts_markdown(headroom())),
    "task-run": ("book/study.md", task_runs),
    "swap-table": ("book/study.md", swaps),
    "swap-test": ("book/study.md", lambda: swaps(SWAP_TESTS)),
    "cpu-swap": ("book/reproduce.md", lambda: swaps(CPU_SWAPS)),
}


def split_block(text: str, name: str) -> tuple[str, str, str]:
    """``text`` as (before the block, the block, after it), the markers left out."""
    opening, closing = f"<!-- {name} -->\n", f"\n<!-- /{name} -->"
    if text.count(opening) != 1 or text.count(closing) != 1:
        raise SystemExit(
            f"Block {name!r}: the page needs exactly one '{opening.strip()}' line and one "
            f"'{closing.strip()}' line after it, found {text.count(opening)} and "
            f"{text.count(closing)} (an empty block still needs both, on lines of their own)."
        )
    head, rest = text.split(opening)
    if rest.startswith(closing[1:]):  # an empty block: its closing line follows at once
        return head, "", rest[len(closing) - 1 :]
    inside, tail = rest.split(closing)
    return head, inside, tail


def block(page: str, name: str) -> str:
    """The text of block ``name`` in ``page`` as committed."""
    return split_block((ROOT / page).read_text(), name)[1]


def repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def release_tag() -> str:
    """The git tag of this version's release (``v`` + pyproject's version): the notebooks'
    Colab links and install cells point at it, so a notebook and the package it installs are
    of one release."""
    return "v" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def with_install_cell(notebook: dict) -> dict:
    """``notebook`` with its install cell (the one that checks for Colab) written anew, its
    "Open in Colab" link at the release tag, and the metadata that opens it on a Colab GPU
    runtime."""
    tag = release_tag()
    (cell,) = [c for c in notebook["cells"] if "google.colab" in "".join(c["source"])]
    cell["source"] = install_cell(repository_url(), tag).splitlines(keepends=True)
    first = notebook["cells"][0]
    link = re.sub(r"/blob/[^/]+/notebooks/", f"/blob/{tag}/notebooks/", "".join(first["source"]))
    first["source"] = link.splitlines(keepends=True)
    notebook["metadata"] |= COLAB_METADATA
    return notebook


def main() -> None:
    # The executed copies too: the book's pages are made from them (their outputs stand).
    sources = [*(ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")]
    for path in sorted([*sources, *(ROOT / "book" / "executed").glob("[0-9][0-9]_*.ipynb")]):
        text = path.read_text()
        written = json.dumps(with_install_cell(json.loads(text)), indent=1, ensure_ascii=False)
        if written + "\n" != text:  # unchanged notebooks keep their files (and mtimes)
            path.write_text(written + "\n")
    print("notebooks: install cells, Colab runtime")
    for name, (page, make) in BLOCKS.items():
        path = ROOT / page
        head, _, tail = split_block(path.read_text(), name)
        path.write_text(f"{head}<!-- {name} -->\n{make()}\n<!-- /{name} -->{tail}")
        print(f"{page}: {name}")
    figure = ROOT / "book" / "figures" / "study.png"
    study_figure(study(), figure)
    print(figure.relative_to(ROOT))


if __name__ == "__main__":
    main()
