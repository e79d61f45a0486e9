"""The book's generated blocks equal what scripts/refresh_book.py makes from the committed
results: a rerun that rewrites results/ without refreshing the pages fails here."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("refresh_book", ROOT / "scripts" / "refresh_book.py")
refresh_book = importlib.util.module_from_spec(spec)
spec.loader.exec_module(refresh_book)


@pytest.mark.parametrize("name", list(refresh_book.BLOCKS))
def test_each_generated_block_matches_the_committed_results(name):
    page, make = refresh_book.BLOCKS[name]
    assert refresh_book.block(page, name) == make(), f"run python scripts/refresh_book.py ({page})"


def test_the_landing_page_names_the_paper_and_states_the_answer_with_intervals():
    intro = (ROOT / "book" / "intro.md").read_text()
    assert "https://arxiv.org/abs/2510.04506" in intro
    answer = refresh_book.block("book/intro.md", "answer")
    assert "GRACE supervised" in answer and "[" in answer and "base + rationale" in answer


def test_every_notebook_links_the_paper_at_the_top():
    import json

    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        first = "".join(json.loads(path.read_text())["cells"][0]["source"])
        assert "https://arxiv.org/abs/2510.04506" in first, path.name


def numbers_in(value, found: set[str]) -> set[str]:
    """Every number in a JSON value, written as the book may write it (0-7 decimals, and ×100
    for scores kept in 0..1)."""
    if isinstance(value, dict):
        for item in value.values():
            numbers_in(item, found)
    elif isinstance(value, list):
        for item in value:
            numbers_in(item, found)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        for digits in range(8):
            found |= {f"{value:.{digits}f}", f"{100 * value:.{digits}f}"}
    return found


# Hand-written prose that reads results: the page, and the headings its part of it starts at
# and ends before (None: the end of the page).
READINGS = {
    "book/reproduce.md": ("## What the committed `cpu` run shows", "## int8"),
    "book/study.md": ("## Set-up", None),
}


@pytest.mark.parametrize("page", list(READINGS))
def test_prose_quotes_only_numbers_the_results_hold(page):
    """The sentences around the generated blocks are written by hand: every decimal number
    in them must be one the committed results hold (or the paper's), so a rerun that changes
    a result fails here until its sentence is read again."""
    import json
    import re

    from grace.evaluation.results import PAPER_ROWS
    from grace.evaluation.tasks import RTReviewPlotRetrieval, chance_level

    text = (ROOT / page).read_text()
    start, end = READINGS[page]
    section = text[text.index(start) : text.index(end) if end else None]
    section = re.sub(r"<!-- (\S+) -->.*?<!-- /\1 -->", "", section, flags=re.S)
    quoted = set(re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", section))
    known: set[str] = set()
    for path in (ROOT / "results").rglob("*.json"):
        numbers_in(json.loads(path.read_text()), known)
    numbers_in(PAPER_ROWS, known)
    numbers_in(chance_level(RTReviewPlotRetrieval()), known)
    assert len(quoted) > 5  # the section was found and holds its numbers
    assert sorted(quoted - known) == []


def test_legends_use_the_books_names_not_folder_names():
    from grace.book.notebooks import book_label

    assert book_label("contrastive") == "+CL" and book_label("simcse") == "SimCSE"
    assert book_label("grace-supervised") == "GRACE supervised"
    assert book_label("grace-contrastive-lr1e-4") == "GRACE, contrastive reward, lr 1e-4"
    assert book_label("grace-paper-lr1e-5-top6") == "GRACE, paper's reward, lr 1e-5, top 6 layers"
    assert book_label("cl-lr2e-5-150") == "+CL, lr 2e-5, 150 steps"
    assert book_label("study-cl") == "+CL" and book_label("study-kl-400") == "kl-400"


def test_the_tuning_sweep_leaves_the_study_and_other_tasks_out():
    from grace.validation import read_sweep, tuning_sweep

    folder = Path(__file__).resolve().parent.parent / "results" / "sweep"
    tuning = {r["variant"] for r in tuning_sweep(folder)}
    everything = {r["variant"] for r in read_sweep(folder)}
    assert tuning and tuning < everything
    assert not any(v.startswith(("study-", "task-")) for v in tuning)
    assert {v for v in everything - tuning} == {
        v for v in everything if v.startswith(("study-", "task-"))
    }


def executed_outputs(notebook: str) -> str:
    """Everything the committed executed copy of a notebook shows (markdown and plain text)."""
    import json

    cells = json.loads((ROOT / "book" / "executed" / notebook).read_text())["cells"]
    shown = []
    for cell in cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            for kind in ("text/markdown", "text/plain"):
                shown.append("".join(data.get(kind, "")))
            shown.append("".join(output.get("text", "")))
    return "\n".join(shown)


def sweep_views() -> dict[str, list]:
    """What the executed notebooks print about the committed sweep and study records."""
    from grace.book.study import describe_study, study_records
    from grace.evaluation import to_markdown
    from grace.validation import describe_sweep, sweep_table, tuning_sweep

    folder = ROOT / "results" / "sweep"
    tuning = tuning_sweep(folder)
    grace_tuning = [r for r in tuning if r["variant"].startswith("grace")]
    return {
        "05_grace_supervised.ipynb": [
            to_markdown(sweep_table(grace_tuning)),
            describe_study(study_records(folder)),
        ],
        "10_length_generation_tuning.ipynb": [
            to_markdown(sweep_table(tuning)),
            describe_sweep(tuning),
        ],
    }


@pytest.mark.parametrize("notebook", list(sweep_views()))
def test_executed_notebooks_show_the_records_results_holds_now(notebook):
    """A notebook that reads results/sweep was executed before the records changed: its page
    shows counts and tables that results/ no longer has. Rerun it (grace reproduce)."""
    shown = executed_outputs(notebook)
    for expected in sweep_views()[notebook]:
        assert expected in shown, f"{notebook} is staler than results/sweep:\n{expected[:400]}"


def test_a_generated_block_may_be_empty_and_a_missing_marker_is_named():
    page = "intro\n<!-- answer -->\n<!-- /answer -->\nrest"
    assert refresh_book.split_block(page, "answer") == ("intro\n", "", "\nrest")
    with pytest.raises(SystemExit, match="'<!-- results-table -->' line"):
        refresh_book.split_block(page, "results-table")
