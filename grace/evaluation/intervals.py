"""How much a task score would move with other queries: 95 % bootstrap intervals.

A score over 44 queries or 1,225 pairs is itself a sample. For each offline task the main
score is recomputed here from the embeddings the encoder already made (nothing is encoded
again), then recomputed on ``resamples`` bootstrap resamples of the task's items (queries,
pairs, test reviews). The interval is the 2.5-97.5 % percentile range of those resamples,
moved by the difference between mteb's score and the recomputed one where the two differ
(classification re-fits its own classifier, pair classification uses the cosine's AP where
mteb takes the best of several distances). Clustering gets a t-interval over its sets.

Sampling a different rationale moves a score too; that spread is measured separately
(``grace.evaluation.noise``). Differences are read by the book's one rule, ``grace.decision``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import spearmanr, t
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, v_measure_score

from grace.validation import pessimistic_ranks

RESAMPLES = 1000
SEED = 0


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True).clip(min=1e-12)


class NotEmbedded(KeyError):
    """A task's texts were not embedded in this process (its score came from mteb's cache)."""


class Embeddings:
    """Unit vectors of the texts an encoder has seen (``TextEncoder.memory``)."""

    def __init__(self, memory) -> None:  # an EmbeddingMemory, or any text -> vector mapping
        self.memory = memory

    def __call__(self, texts: list[str]) -> np.ndarray:
        missing = [text for text in texts if text not in self.memory]
        if missing:
            raise NotEmbedded(f"{len(missing)} texts were not embedded here, e.g. {missing[0]!r}")
        if hasattr(self.memory, "stack"):  # EmbeddingMemory: one read for all rows
            return unit(self.memory.stack(texts))
        return unit(np.stack([self.memory[text] for text in texts]))


def ranks_of_relevant(split: dict, embed: Embeddings) -> np.ndarray:
    """Rank (1 = first) of each query's one relevant document among its candidates."""
    corpus = {row["id"]: row["text"] for row in split["corpus"]}
    doc_ids = list(corpus)
    docs = embed([corpus[i] for i in doc_ids])
    position = {doc: n for n, doc in enumerate(doc_ids)}
    ranks = []
    for query in split["queries"]:
        similarity = docs @ embed([query["text"]])[0]
        (relevant,) = split["relevant_docs"][query["id"]]
        candidates = (split["top_ranked"] or {}).get(query["id"], doc_ids)
        scores = similarity[[position[c] for c in candidates]]
        ranks.append(int(pessimistic_ranks(scores, similarity[position[relevant]])))
    return np.array(ranks)


def per_item_mean(values: np.ndarray) -> tuple[int, Callable]:
    return len(values), lambda idx: float(values[idx].mean())


def retrieval(task, embed: Embeddings) -> tuple[int, Callable]:
    """nDCG@10 with one relevant document: 1 / log2(1 + rank) inside the top 10."""
    ranks = ranks_of_relevant(task.dataset["default"]["test"], embed)
    return per_item_mean(np.where(ranks <= 10, 1 / np.log2(1 + ranks), 0.0))


def reranking(task, embed: Embeddings) -> tuple[int, Callable]:
    """MAP with one relevant candidate: 1 / its rank."""
    return per_item_mean(1.0 / ranks_of_relevant(task.dataset["default"]["test"], embed))


def sts(task, embed: Embeddings) -> tuple[int, Callable]:
    data = task.dataset["test"]
    cosine = (embed(data["sentence1"]) * embed(data["sentence2"])).sum(axis=1)
    gold = np.array(data["score"])
    return len(gold), lambda idx: float(spearmanr(cosine[idx], gold[idx]).statistic)


def pair_classification(task, embed: Embeddings) -> tuple[int, Callable]:
    data = task.dataset["test"]
    cosine = (embed(data["sentence1"]) * embed(data["sentence2"])).sum(axis=1)
    labels = np.array(data["labels"])
    return len(labels), lambda idx: float(average_precision_score(labels[idx], cosine[idx]))


def classification(task, embed: Embeddings) -> tuple[int, Callable]:
    train, test = task.dataset["train"], task.dataset["test"]
    classifier = LogisticRegression(max_iter=1000).fit(embed(train["text"]), train["label"])
    correct = classifier.predict(embed(test["text"])) == np.array(test["label"])
    return per_item_mean(correct.astype(float))


def clustering_interval(task, embed: Embeddings) -> tuple[float, float, float]:
    """V-measure of k-means on each clustered set; the interval is a t-interval over the
    sets (resampling reviews with replacement would duplicate them, and duplicates cluster
    together, so a bootstrap would overstate the score)."""
    data = task.dataset["test"]
    scores = []
    for sentences, labels in zip(data["sentences"], data["labels"], strict=True):
        k = len(set(labels))
        fitted = KMeans(n_clusters=k, n_init=10, random_state=SEED).fit(embed(sentences))
        scores.append(v_measure_score(labels, fitted.labels_))
    mean = float(np.mean(scores))
    half = t.ppf(0.975, len(scores) - 1) * np.std(scores, ddof=1) / np.sqrt(len(scores))
    return mean, float(mean - half), float(mean + half)


STATISTICS = {
    "Retrieval": retrieval,
    "Reranking": reranking,
    "STS": sts,
    "PairClassification": pair_classification,
    "Classification": classification,
}


def bootstrap_interval(
    size: int, statistic: Callable, resamples: int, seed: int = SEED
) -> tuple[float, float, float]:
    """(statistic on all items, 2.5 % and 97.5 % percentiles over resamples)."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, size, size)) for _ in range(resamples)]
    low, high = np.percentile(values, [2.5, 97.5])
    return statistic(np.arange(size)), float(low), float(high)


def task_intervals(tasks: list, records: list[dict], memory) -> dict:
    """``{task: {"recomputed": x, "ci95": [low, high]}}`` (scores 0..1) for the offline
    tasks among ``tasks``; tasks this module cannot recompute are left out, and so are tasks
    whose score was read from mteb's result cache (their embeddings are not in ``memory``)."""
    from grace.evaluation.tasks import OFFLINE_TASKS

    offline = {cls.metadata.name for cls in OFFLINE_TASKS}
    scores = {r["task"]: r["score"] for r in records}
    embed = Embeddings(memory)
    intervals = {}
    for task in tasks:
        name, kind = task.metadata.name, task.metadata.type
        if name not in offline or name not in scores:
            continue
        if not task.data_loaded:
            task.load_data()
        try:
            if kind == "Clustering":
                point, low, high = clustering_interval(task, embed)
            else:
                size, statistic = STATISTICS[kind](task, embed)
                point, low, high = bootstrap_interval(size, statistic, RESAMPLES)
        except NotEmbedded:
            continue
        shift = scores[name] - point
        intervals[name] = {"recomputed": point, "ci95": [low + shift, high + shift]}
    return intervals
