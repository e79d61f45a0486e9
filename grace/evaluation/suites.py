"""What a suite scores and how: its mteb tasks, subsets and splits, one mteb run of an encoder
over them, and a report kept on disk under the key of what decided it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from grace.data import DataError
from grace.evaluation.intervals import task_intervals
from grace.evaluation.model import TextEncoder
from grace.evaluation.results import summarize
from grace.evaluation.tasks import OFFLINE_TASKS
from grace.files import write_text_atomically
from grace.models import hub_offline

PAPER_TASKS = {
    "Retrieval": "ArguAna CQADupstackRetrieval FiQA2018 NFCorpus SCIDOCS SciFact ClimateFEVER "
    "DBPedia NQ FEVER HotpotQA MSMARCO QuoraRetrieval TRECCOVID Touche2020",
    "Reranking": "AskUbuntuDupQuestions MindSmallReranking SciDocsRR StackOverflowDupQuestions",
    "Clustering": "ArxivClusteringP2P ArxivClusteringS2S BiorxivClusteringP2P "
    "BiorxivClusteringS2S MedrxivClusteringP2P MedrxivClusteringS2S RedditClustering "
    "RedditClusteringP2P StackExchangeClustering StackExchangeClusteringP2P "
    "TwentyNewsgroupsClustering",
    "PairClassification": "SprintDuplicateQuestions TwitterSemEval2015 TwitterURLCorpus",
    "Classification": "AmazonCounterfactualClassification AmazonPolarityClassification "
    "AmazonReviewsClassification Banking77Classification EmotionClassification "
    "ImdbClassification ToxicConversationsClassification MTOPDomainClassification "
    "MassiveIntentClassification MassiveScenarioClassification MTOPIntentClassification "
    "TweetSentimentClassification",
    "STS": "BIOSSES SICK-R STS12 STS13 STS14 STS15 STS16 STS17 STSBenchmark STS22",
    "Summarization": "SummEval",
}
PAPER_TASKS = {category: names.split() for category, names in PAPER_TASKS.items()}
SUBSET_TASKS = (
    "Banking77Classification EmotionClassification MedrxivClusteringS2S TwitterSemEval2015 "
    "AskUbuntuDupQuestions BIOSSES STS17 STSBenchmark SummEval"
).split()
OFFLINE_BY_NAME = {task.metadata.name: task for task in OFFLINE_TASKS}


class HubRequired(DataError):
    """A suite needs task data from the Hugging Face hub, which cannot be reached."""


MTEB_ENG = "MTEB(eng, v1)"  # mteb's English benchmark, the `mteb-eng` suite
SUITE_HELP = "use offline, subset, paper, mteb-eng, or mteb task names separated by commas"


def suite_task_names(suite: str) -> list[str]:
    if suite == "paper":
        return [name for names in PAPER_TASKS.values() for name in names]
    if suite == "subset":
        return list(SUBSET_TASKS)
    if suite == "offline":
        return list(OFFLINE_BY_NAME)
    if suite == "mteb-eng":
        return [task.metadata.name for task in mteb_benchmark_tasks()]
    names = [name.strip() for name in suite.split(",") if name.strip()]
    if not names:
        raise DataError(f"Suite {suite!r} names no tasks; {SUITE_HELP}.")
    return list(dict.fromkeys(names))  # a task named twice is scored once


def mteb_benchmark_tasks() -> list:
    import mteb

    return list(mteb.get_benchmark(MTEB_ENG).tasks)


def suite_tasks(suite: str) -> list:
    """The mteb task objects of a suite, with the subsets and splits it scores (metadata only:
    no data is loaded).

    ``paper`` and ``subset`` score their names as the reference's ``eval_mteb.py`` does (mteb
    1.38, ``MTEB(tasks=names)``, ``eval_splits=["test"]``): the test split only (MSMARCO's
    too, where the benchmark scores dev) and every language subset a task has (STS17's 11
    pairs, MassiveIntentClassification's 51 languages), with the multilingual
    TweetSentimentClassification it lists. ``mteb-eng`` is mteb's own benchmark: its tasks,
    English subsets and splits. A list of names keeps each task's English subsets and all its
    evaluation splits. Unknown names fail here."""
    import mteb

    if suite == "mteb-eng":
        return mteb_benchmark_tasks()
    names = suite_task_names(suite)
    offline = [OFFLINE_BY_NAME[n]() for n in names if n in OFFLINE_BY_NAME]
    hub_names = [n for n in names if n not in OFFLINE_BY_NAME]
    scoring = {"eval_splits": ["test"]} if suite in ("paper", "subset") else {"languages": ["eng"]}
    try:
        hub = list(mteb.get_tasks(tasks=hub_names, **scoring)) if hub_names else []
    except KeyError as error:  # mteb: "'offlin' not found and no similar keys were found."
        found = str(error.args[0]).removeprefix("KeyError: ").rstrip(".")
        raise DataError(f"Unknown suite or task: {found}; {SUITE_HELP}.") from None
    return offline + hub


def resolve_tasks(suite: str) -> list:
    """``suite_tasks``, after checking that the hub tasks among them can be downloaded: unknown
    names, and hub tasks without a reachable hub, fail here, before any model is run."""
    tasks = suite_tasks(suite)
    hub = [task for task in tasks if task.metadata.name not in OFFLINE_BY_NAME]
    hub_names = [task.metadata.name for task in hub]
    listed = f"{', '.join(hub_names[:3])}{', ...' if len(hub_names) > 3 else ''}"
    if hub and hub_offline():
        raise HubRequired(
            f"Suite {suite!r} needs {len(hub)} tasks whose data lives on the Hugging Face hub "
            f"({listed}), but HF_HUB_OFFLINE is set. Unset it on a machine with internet, or "
            "use --suite offline."
        )
    if hub and (problem := hub_unreachable()):
        raise HubRequired(
            f"Suite {suite!r} needs {len(hub)} tasks from the Hugging Face hub ({listed}), "
            f"which cannot be reached ({problem}). Connect, or use --suite offline."
        )
    return tasks


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub (``HF_ENDPOINT``) cannot be reached, or None when it answers.

    One quick request here saves loading a model only to meet mteb's retries later.
    """
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    request = urllib.request.Request(endpoint, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # an HTTP answer, even an error status, means the hub is there
    except (urllib.error.URLError, OSError) as error:
        return f"{endpoint}: {getattr(error, 'reason', error)}"
    return None


def task_records(model_result, tasks: list) -> list[dict]:
    """``{"task", "type", "score"}`` for each task of an mteb result (main score, 0..1).

    Types come from the task objects: mteb looks names up in its registry, where our offline
    tasks are not.
    """
    types = {task.metadata.name: task.metadata.type for task in tasks}
    return [
        {"task": r.task_name, "type": types[r.task_name], "score": float(r.get_score())}
        for r in model_result.task_results
    ]


def score(
    model: TextEncoder,
    suite: str = "offline",
    label: str | None = None,
    results_cache: str | Path | None = None,
) -> dict:
    """One mteb run of an encoder over a suite: the report.

    The report holds the per-task main scores, the category summary, the wall time, and
    mteb's full results. ``results_cache`` is a folder for mteb's ``ResultCache``: each task's
    result is kept there as it finishes, under the model's name and revision (its weights and
    encoding settings), so a suite stopped midway resumes task by task.
    """
    import mteb

    tasks = resolve_tasks(suite)
    cache = mteb.ResultCache(cache_path=results_cache) if results_cache else None
    start = time.perf_counter()
    batch = {"batch_size": model.batch_size} if model.batch_size else {}  # else mteb's 32
    result = mteb.evaluate(model, tasks, cache=cache, encode_kwargs=batch, show_progress_bar=True)
    seconds = time.perf_counter() - start
    label = label or model.mteb_model_meta.name
    records = task_records(result, tasks)
    return {
        "label": label,
        "model": model.mteb_model_meta.name,
        "revision": model.mteb_model_meta.revision,
        "suite": suite,
        "seconds": round(seconds, 1),
        "tasks": records,
        "summary": summarize({label: records}).iloc[0].to_dict(),
        "intervals": task_intervals(tasks, records, getattr(model, "memory", {})),
        "mteb": [r.to_dict() for r in result.task_results],
    }


def kept_report(
    folder: str | Path | None,
    label: str,
    make_encoder: Callable[[], TextEncoder],
    suite: str,
    key: dict,
    results_cache: str | Path | None = None,
) -> dict:
    """The report of ``label`` kept in ``folder`` if it was made under ``key``, else a fresh
    ``score``, kept there (``folder=None``: always fresh, kept nowhere).

    ``key`` says what the scores depend on (``grace.runs.report_key``: model identity, encoder
    settings, suite); a report written under another key is measured again and replaced.
    ``make_encoder`` is only called when needed: loading a model costs seconds.
    """
    key = json.loads(json.dumps(key))
    if (kept := kept_under(folder, label, key)) is not None:
        return kept
    report = score(make_encoder(), suite, label, results_cache) | {"key": key}
    if folder is not None:
        write_report(report_path(folder, label), report)
    return report


def kept_under(folder: str | Path | None, label: str, key: dict) -> dict | None:
    """The report of ``label`` kept in ``folder`` if it was made under ``key``, else None (the
    file is read once)."""
    path = report_path(folder, label) if folder is not None else None
    if path is None or not path.exists():
        return None
    report = json.loads(path.read_text())
    return report if report.get("key") == json.loads(json.dumps(key)) else None


def write_report(path: str | Path, report: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(report, indent=2, default=str))


def report_path(folder: str | Path, label: str) -> Path:
    """``<folder>/<label>.json`` with the label made file-name safe."""
    name = label.replace(" ", "_").replace("+", "plus").replace("/", "-")
    name = "".join(c for c in name if c not in ",()")
    return Path(folder) / f"{name}.json"
