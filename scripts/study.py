"""Draw the GRACE study's figure and refresh its table in the book, from the committed records.

    python scripts/study.py     # book/figures/study.png and the table block of book/study.md

The records are ``results/sweep/study-*.json`` (``scripts/sweep.py``); nothing is trained here.
"""

from __future__ import annotations

from pathlib import Path

from grace.study import study_figure, study_markdown, study_records

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "book" / "study.md"
START, END = "<!-- study-table -->\n", "\n<!-- /study-table -->"


def main() -> None:
    records = study_records(ROOT / "results" / "sweep")
    figure_path = ROOT / "book" / "figures" / "study.png"
    figure_path.parent.mkdir(parents=True, exist_ok=True)
    study_figure(records, figure_path)
    page = PAGE.read_text()
    head, rest = page.split(START)
    tail = rest.split(END)[1]
    PAGE.write_text(head + START + study_markdown(records) + END + tail)
    written = f"{figure_path.relative_to(ROOT)}, {PAGE.relative_to(ROOT)}"
    print(f"{len(records)} study records: {written}")


if __name__ == "__main__":
    main()
