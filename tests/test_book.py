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
