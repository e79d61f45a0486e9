import json
from pathlib import Path

import nbformat
import pytest
import yaml

from grace.book.reproduce import NOTEBOOK_DIR, ROOT, ReproduceError, notebooks, reproduce


def write_notebook(path: Path, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "tiny"\noutput_dir = "nowhere"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


def test_parameters_failure_and_resume(tmp_path):
    source, output = tmp_path / "notebooks", tmp_path / "out"
    source.mkdir()
    write_notebook(
        source / "01_first.ipynb",
        "from pathlib import Path\nPath(output_dir, 'seen.txt').write_text(profile)",
    )
    write_notebook(source / "02_second.ipynb", "raise ValueError('broken on purpose')")

    # Cell 3 of the executed copy: papermill adds its injected-parameters cell after ours.
    with pytest.raises(ReproduceError, match=r"02_second.ipynb failed in cell 3 with ValueError"):
        reproduce("cpu", output, folder=source)
    assert (output / "seen.txt").read_text() == "cpu"  # parameters were injected
    summary = json.loads((output / "reproduce.json").read_text())
    assert summary["notebooks"]["01_first.ipynb"]["status"] == "ok"
    assert "broken on purpose" in summary["notebooks"]["02_second.ipynb"]["error"]

    (output / "seen.txt").unlink()
    write_notebook(source / "02_second.ipynb", "x = 1")
    summary = reproduce("cpu", output, folder=source)
    assert not (output / "seen.txt").exists()  # the finished notebook was not run again
    assert [r["status"] for r in summary["notebooks"].values()] == ["ok", "ok"]
    page = (output / "notebooks" / "run_summary.md").read_text()
    assert "--profile cpu" in page and "| 02_second.ipynb | ok |" in page

    # Rerunning a selection afresh keeps the other notebooks' records.
    summary = reproduce("cpu", output, only=[1], resume=False, folder=source)
    assert (output / "seen.txt").read_text() == "cpu"
    assert set(summary["notebooks"]) == {"01_first.ipynb", "02_second.ipynb"}

    summary = reproduce("tiny", output, only=[2], folder=source)  # another profile: no reuse
    assert set(summary["notebooks"]) == {"02_second.ipynb"}
    summary = reproduce("tiny", output, folder=source)
    assert (output / "seen.txt").read_text() == "tiny"


def test_only_selects_notebooks_by_number():
    assert [p.name[:2] for p in notebooks([5, 8])] == ["05", "08"]
    assert len(notebooks()) == 10


def test_no_notebooks_is_an_error_and_nothing_is_written(tmp_path):
    """Installed from a wheel there is no notebooks folder: reporting success for zero
    notebooks (and writing into site-packages) was the old behaviour."""
    empty = tmp_path / "site-packages-like"
    empty.mkdir()
    with pytest.raises(ReproduceError, match="checkout of the repository"):
        reproduce("tiny", tmp_path / "out", folder=empty)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_every_notebook_starts_with_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first_code.metadata.get("tags", [])
    assert "profile =" in first_code.source and "output_dir =" in first_code.source
    assert not any(
        c.get("outputs") for c in nb.cells if c.cell_type == "code"
    )  # sources stay clean


def executed_folders() -> list[Path]:
    return [
        p for p in (ROOT / "book" / "executed", ROOT / "runs" / "tiny" / "notebooks") if p.exists()
    ]


def test_executed_notebooks_end_with_a_figure_or_table():
    folders = executed_folders()
    assert folders, "no executed notebooks: run `make book` or `grace reproduce --profile tiny`"
    for folder in folders:
        for source in notebooks():
            nb = nbformat.read(folder / source.name, as_version=4)
            outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
            rich = {k for o in outputs for k in o.get("data", {})}
            assert rich & {"image/png", "text/html", "text/markdown"}, f"{folder}/{source.name}"


def test_publishing_workflow_parses():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    steps = [s.get("run", "") for s in workflow["jobs"]["build"]["steps"]]
    assert any("grace book" in s for s in steps)
    assert "deploy" in workflow["jobs"]
    assert NOTEBOOK_DIR.exists()


def test_page_check_finds_stderr_absolute_paths_and_tracebacks(tmp_path):
    from grace.book.reproduce import page_problems

    pages = tmp_path / "book" / "executed"
    pages.mkdir(parents=True)
    (pages / "clean.html").write_text('<div class="output stdout">output_dir=runs/cpu</div>')
    (pages / "dirty.html").write_text(
        '<div class="output stderr">50%|#####</div><pre>/work/main/runs/cpu</pre>'
        "<pre>Traceback (most recent call last):</pre>"
    )
    problems = page_problems(tmp_path)
    assert [p.split(":")[1].strip() for p in problems] == [
        "stderr output", "absolute path", "traceback"
    ]  # fmt: skip
    assert all(p.startswith("dirty.html") for p in problems)
    # URLs are not paths of the machine.
    (pages / "dirty.html").write_text('<a href="https://example.org/tmp/x">link</a>')
    assert page_problems(tmp_path) == []
    # Any page that loads a script from the internet (MathJax from a CDN) is a problem.
    cdn = '<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js">'
    (tmp_path / "book" / "method.html").write_text(cdn)
    (problem,) = page_problems(tmp_path)
    assert problem.startswith("method.html: a script from the internet")
    local = '<script defer="defer" src="../_static/mathjax/tex-chtml.js">'
    (tmp_path / "book" / "method.html").write_text(local)
    assert page_problems(tmp_path) == []


def test_notebook_check_reads_the_ipynb_files(tmp_path):
    from grace.book.reproduce import move_progress_to_log, notebook_problems

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "x = 1", outputs=[nbformat.v4.new_output("stream", name="stdout", text="ok")]
        ),
        nbformat.v4.new_code_cell(
            'out = "/work/main/runs"',
            outputs=[
                nbformat.v4.new_output("stream", name="stderr", text="50%|###"),
                nbformat.v4.new_output("error", ename="E", evalue="", traceback=[]),
            ],
        ),
        nbformat.v4.new_code_cell(
            "trainer.train()",
            outputs=[
                nbformat.v4.new_output(
                    "display_data", data={"text/html": "<progress value='2'></progress><table>"}
                ),
                nbformat.v4.new_output("display_data", data={"text/plain": "kept"}),
            ],
        ),
    ]
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert notebook_problems(tmp_path) == [
        "a.ipynb: cell 2: stderr output", "a.ipynb: cell 2: traceback",
        "a.ipynb: cell 2: absolute path", "a.ipynb: cell 3: progress display",
    ]  # fmt: skip
    move_progress_to_log(tmp_path / "a.ipynb", tmp_path / "a.log")
    assert notebook_problems(tmp_path) == [
        "a.ipynb: cell 2: traceback", "a.ipynb: cell 2: absolute path",
    ]  # fmt: skip
    assert nbformat.read(tmp_path / "a.ipynb", 4).cells[2].outputs[0].data == {"text/plain": "kept"}
    assert "<progress" in (tmp_path / "a.log").read_text()


def test_the_committed_notebooks_are_clean():
    from grace.book.reproduce import notebook_problems

    assert notebook_problems(ROOT / "book" / "executed") == []


def test_parameters_cells_are_hidden_from_the_page(tmp_path):
    from grace.book.reproduce import prepare_for_the_book

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell('profile = "tiny"', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell('profile = "cpu"', metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(1)"),
    ]
    path = tmp_path / "n.ipynb"
    nbformat.write(nb, path)
    prepare_for_the_book(path)
    tags = [c.metadata.get("tags", []) for c in nbformat.read(path, as_version=4).cells]
    assert ["remove-cell" in t for t in tags] == [True, True, False]


def test_stderr_leaves_the_executed_notebook_for_a_log(tmp_path):
    source, output = tmp_path / "notebooks", tmp_path / "out"
    source.mkdir()
    write_notebook(
        source / "01_noisy.ipynb", "import sys\nprint('kept')\nsys.stderr.write('/work/x warning')"
    )
    reproduce("cpu", output, folder=source)
    executed = nbformat.read(output / "notebooks" / "01_noisy.ipynb", as_version=4)
    streams = [o for cell in executed.cells for o in cell.get("outputs", [])]
    assert [o["name"] for o in streams if o.get("output_type") == "stream"] == ["stdout"]
    assert "/work/x warning" in (output / "logs" / "01_noisy.stderr.txt").read_text()


def test_a_notebook_that_needs_a_trained_model_runs_alone(tmp_path):
    """Notebook 9 opened alone (Colab, a fresh folder): the run layer trains what it needs."""
    summary = reproduce("tiny", tmp_path, only=[9])
    assert summary["notebooks"]["09_interpretability.ipynb"]["status"] == "ok"
    assert (tmp_path / "grace-supervised" / "log_history.json").exists()


def test_an_output_folder_outside_the_checkout_is_shown_relative(tmp_path):
    """`grace reproduce --output /elsewhere` then `grace book --executed /elsewhere/notebooks`:
    the pages must not print the machine's absolute folder (the book build refuses those)."""
    import os

    from grace.book.reproduce import PAGE_PROBLEMS, shown_path

    shown = shown_path(tmp_path / "run")
    assert not os.path.isabs(shown) and (ROOT / shown).resolve() == (tmp_path / "run").resolve()
    assert not PAGE_PROBLEMS["absolute path"].search(f"output_dir={shown}")
