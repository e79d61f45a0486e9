"""Batch reproduction: run the book's notebooks in order with papermill, for one profile.

Each notebook gets ``profile`` and ``output_dir`` injected into its ``parameters`` cell; the
executed copies and ``reproduce.json`` (status and wall time of each notebook) go to the
output folder. A failure stops the run with the failing cell's error; running again resumes
after the last notebook that succeeded. Notebooks share work through ``output_dir``
(checkpoints, results), so later ones reuse what earlier ones trained.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the checkout, when grace runs from one
IN_CHECKOUT = (ROOT / "notebooks").is_dir() and (ROOT / "pyproject.toml").is_file()
#: The checkout's notebooks, or the copies an installed wheel ships as package data
#: (``pyproject.toml`` maps ``notebooks/`` to ``grace.book.ipynb``).
NOTEBOOK_DIR = ROOT / "notebooks" if IN_CHECKOUT else Path(__file__).with_name("ipynb")
SUMMARY = "reproduce.json"


class ReproduceError(RuntimeError):
    """A notebook failed; the message names it, the cell and the error."""


def notebooks(only: list[int] | None = None, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """The numbered notebooks (``NN_name.ipynb``) in order, or just the numbers in ``only``.

    A number with no notebook is an error: running nothing would look like success.
    """
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise ReproduceError(
            f"No notebooks in {folder}: `grace reproduce` runs the book's notebooks from a "
            "checkout of the repository (git clone, then `pip install -e .` there); an "
            "installed wheel does not ship them."
        )
    if only is None:
        return found
    numbers = sorted({int(p.name[:2]) for p in found})
    unknown = sorted(set(only) - set(numbers))
    if not only or unknown:
        raise ReproduceError(
            f"No notebook numbered {', '.join(map(str, unknown)) or '(none given)'}; "
            f"the notebooks are {', '.join(map(str, numbers))}."
        )
    return [p for p in found if int(p.name[:2]) in only]


def read_summary(output: Path) -> dict:
    """The output folder's record of what ran (a new record when there is none)."""
    path = output / SUMMARY
    if not path.exists():
        return {"notebooks": {}}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(summary, dict) or not isinstance(summary.get("notebooks"), dict):
            raise ValueError("expected an object with a 'notebooks' mapping")
    except (ValueError, RecursionError) as error:  # RecursionError: JSON nested too deep
        raise ReproduceError(
            f"{path}: not a readable run record ({error}); delete it to run every notebook again."
        ) from error
    return summary


def reproduce(
    profile: str,
    output: str | Path | None = None,
    only: list[int] | None = None,
    resume: bool = True,
    folder: Path = NOTEBOOK_DIR,
    kernel: str = "python3",
) -> dict:
    """Execute the notebooks; returns the summary written to ``output/reproduce.json``."""
    from grace.config import load_config
    from grace.runs import folder_lock

    selected = notebooks(only, folder)  # before anything is written: refuses an empty folder
    load_config(profile)  # an unknown profile fails here, not inside the first notebook
    output = Path(output or workdir() / "runs" / profile).resolve()
    executed = output / "notebooks"
    if executed == folder.resolve():
        raise ReproduceError(
            f"--output {output} would write the executed notebooks over their sources in "
            f"{folder}: choose another folder."
        )
    executed.mkdir(parents=True, exist_ok=True)
    with folder_lock(output, output / ".lock"):  # one reproduce at a time writes its summary
        return _reproduce(profile, output, selected, resume, kernel)


def _reproduce(profile: str, output: Path, selected: list[Path], resume: bool, kernel: str) -> dict:
    import papermill

    executed = output / "notebooks"
    summary = read_summary(output)
    if summary.get("profile") not in (None, profile):
        summary["notebooks"] = {}  # results of another profile are not ours to reuse
    summary["profile"] = profile
    if not resume:  # forget the selected notebooks' records only: the others still stand
        chosen = {source.name for source in selected}
        summary["notebooks"] = {
            name: record for name, record in summary["notebooks"].items() if name not in chosen
        }

    for source in selected:
        record = summary["notebooks"].get(source.name, {})
        if resume and record.get("status") == "ok" and (executed / source.name).exists():
            print(f"[reproduce] {source.name}: done before ({record['seconds']} s), skipped")
            continue
        print(f"[reproduce] {source.name} with profile {profile!r}")
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(source),
                str(executed / source.name),
                parameters={"profile": profile, "output_dir": shown_path(output)},
                kernel_name=kernel,
                cwd=str(workdir()),
                progress_bar=False,
            )
        except papermill.PapermillExecutionError as error:
            summary["notebooks"][source.name] = {
                "status": "failed",
                "seconds": round(time.perf_counter() - start, 1),
                "error": f"cell {error.exec_count}: {error.ename}: {error.evalue}",
            }
            write_summary(output, summary)
            raise ReproduceError(
                f"{source.name} failed in cell {error.exec_count} with {error.ename}: "
                f"{error.evalue}\nExecuted copy with the traceback: {executed / source.name}\n"
                "Fix it and run again: finished notebooks are skipped."
            ) from error
        move_progress_to_log(executed / source.name, output / "logs" / f"{source.stem}.stderr.txt")
        summary["notebooks"][source.name] = {
            "status": "ok",
            "seconds": round(time.perf_counter() - start, 1),
        }
        write_summary(output, summary)
    write_summary(output, summary)  # also when every notebook was done before
    return summary


def workdir() -> Path:
    """Where the notebooks run and relative paths start: the checkout, or (grace installed
    from a wheel) the current folder."""
    return ROOT if IN_CHECKOUT else Path.cwd()


def shown_path(path: Path) -> str:
    """``path`` relative to where papermill runs the notebooks, also when it lies outside
    (``../../data/run``), so executed notebooks never print the machine's absolute folders."""
    return os.path.relpath(path, workdir())


def is_progress(output: dict) -> bool:
    """A stderr stream (tqdm bars, library warnings naming the machine's paths) or the Trainer's
    HTML progress display (a bar and one table row per logged step)."""
    html = "".join(output.get("data", {}).get("text/html", ""))
    return output.get("name") == "stderr" or "<progress" in html


def move_progress_to_log(notebook: Path, log: Path) -> None:
    """Take the progress output (``is_progress``) out of an executed notebook and append it to
    ``log``: the page keeps what the notebook means to show, the log keeps the rest."""
    data = json.loads(notebook.read_text())
    moved = []
    for cell in data["cells"]:
        if "outputs" in cell:
            kept = []
            for output in cell["outputs"]:
                (moved if is_progress(output) else kept).append(output)
            cell["outputs"] = kept
    if moved:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as handle:
            for output in moved:
                handle.write("".join(output.get("text") or output["data"]["text/html"]) + "\n")
    notebook.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def prepare_for_the_book(notebook: Path) -> None:
    """Hide the parameters cells of an executed copy from its page: the notebook's first
    printed line states the profile and output folder it ran with."""
    data = json.loads(notebook.read_text())
    for cell in data["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            cell["metadata"]["tags"] = [*tags, "remove-cell"]
    notebook.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


# What a rendered notebook page must not show: a stream written to stderr (progress bars,
# library warnings), an absolute path of the machine that ran it, a traceback.
PAGE_PROBLEMS = {
    "stderr output": re.compile(r'class="[^"]*\bstderr\b'),
    "absolute path": re.compile(r"(?<![\w.:/])/(?:work|tmp|home|root|usr|opt)/[\w.-]+"),
    "traceback": re.compile(r"Traceback \(most recent call last\)"),
}


# Any page: a script fetched from the internet (MathJax from a CDN) fails for an offline reader.
REMOTE_SCRIPT = re.compile(r'<script[^>]+src="(?:https?:)?//[^"]+"')


def page_problems(html_dir: Path) -> list[str]:
    """Problems on the rendered notebook pages (``book/executed/*.html``), and scripts loaded
    from the internet on any page, one line each."""
    problems = []
    for page in sorted((html_dir / "book" / "executed").glob("*.html")):
        text = page.read_text(encoding="utf-8")
        for name, pattern in PAGE_PROBLEMS.items():
            found = pattern.search(text)
            if found:
                problems.append(f"{page.name}: {name}: {found.group(0)[:80]!r}")
    for page in sorted(html_dir.rglob("*.html")):
        found = REMOTE_SCRIPT.search(page.read_text(encoding="utf-8"))
        if found:
            problems.append(f"{page.name}: a script from the internet: {found.group(0)[:100]!r}")
    return problems


def notebook_problems(folder: Path) -> list[str]:
    """The same problems in the executed ``.ipynb`` files themselves (what GitHub and the
    Colab links show, where the page's stderr filter does not reach), one line each."""
    problems = []
    for notebook in sorted(Path(folder).glob("*.ipynb")):
        for number, cell in enumerate(json.loads(notebook.read_text())["cells"], 1):
            outputs = cell.get("outputs", [])
            texts = ["".join(cell["source"]), *(json.dumps(o) for o in outputs)]
            found = {
                "stderr output": any(o.get("name") == "stderr" for o in outputs),
                "progress display": any(is_progress(o) and "data" in o for o in outputs),
                "traceback": any(o.get("output_type") == "error" for o in outputs),
                "absolute path": any(PAGE_PROBLEMS["absolute path"].search(t) for t in texts),
            }
            where = f"{notebook.name}: cell {number}"
            problems += [f"{where}: {name}" for name, hit in found.items() if hit]
    return problems


def write_summary(output: Path, summary: dict) -> None:
    """``reproduce.json``, and the book page ``notebooks/run_summary.md`` beside the notebooks."""
    summary["total_seconds"] = round(sum(r["seconds"] for r in summary["notebooks"].values()), 1)
    summary["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (output / SUMMARY).write_text(json.dumps(summary, indent=2))
    lines = [
        "# Run summary",
        "",
        f"The notebooks of this book were executed by `grace reproduce --profile "
        f"{summary['profile']}` (last update {summary['finished']}); total "
        f"{summary['total_seconds']} s of notebook wall time.",
        "",
        "| notebook | status | wall time (s) |",
        "|---|---|---|",
    ]
    for name, record in sorted(summary["notebooks"].items()):
        lines.append(f"| {name} | {record['status']} | {record['seconds']} |")
    if summary.get("note"):
        lines += ["", summary["note"]]
    (output / "notebooks" / "run_summary.md").write_text("\n".join(lines) + "\n")


def build_book(executed: str | Path | None = None, output: str | Path | None = None) -> Path:
    """Build the Jupyter Book (warnings are errors) from the executed notebooks in ``executed``.

    The book's sources are copied to a staging folder whose ``book/executed`` is replaced by
    ``executed`` (default: the committed ``book/executed``), so a CI run can build the book
    from freshly executed tiny-profile notebooks without touching the committed ones.
    """
    if not IN_CHECKOUT:
        raise ReproduceError(
            "grace book builds the book from a checkout of the repository (its book/ pages and "
            "_config.yml are not in the wheel): git clone it and run `make book` there."
        )
    output = Path(output or ROOT).resolve()  # the HTML lands in output/_build/html
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    with tempfile.TemporaryDirectory() as staging:
        stage = Path(staging)
        for name in ("_config.yml", "_toc.yml", "book"):
            source = ROOT / name
            copy = shutil.copytree if source.is_dir() else shutil.copy
            copy(source, stage / name)
        if executed is not None:
            expected = [source.name for source in notebooks()]
            missing = [name for name in expected if not (Path(executed) / name).exists()]
            if len(missing) == len(expected):
                raise ReproduceError(
                    f"{executed} holds no executed notebooks: run `grace reproduce` first."
                )
            if missing:
                raise ReproduceError(
                    f"{executed} lacks executed copies of {', '.join(missing)}: the book shows "
                    "every notebook; run `grace reproduce` (without --only) first."
                )
            shutil.rmtree(stage / "book" / "executed", ignore_errors=True)
            shutil.copytree(Path(executed), stage / "book" / "executed")
        problems = notebook_problems(stage / "book" / "executed")
        for notebook in (stage / "book" / "executed").glob("*.ipynb"):
            prepare_for_the_book(notebook)
        build = subprocess.run(
            [
                str(jupyter_book),
                "build",
                str(stage),
                "--path-output",
                str(output),
                "-W",
                "-n",
                "--keep-going",
            ],
        )
        if build.returncode != 0:
            raise ReproduceError(
                f"jupyter-book stopped with status {build.returncode}; its messages are above."
            )
    problems += page_problems(output / "_build" / "html")
    if problems:
        raise ReproduceError("The executed notebooks are not clean:\n" + "\n".join(problems))
    return output / "_build" / "html" / "index.html"
