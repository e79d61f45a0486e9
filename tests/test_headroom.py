import numpy as np
import pytest

from grace.data import OfflineTask
from grace.encoder import EncoderConfig, GraceEncoder
from grace.headroom import (
    draw_rewards,
    embed_task,
    headroom_markdown,
    headroom_parts_markdown,
    headroom_record,
    measure_headroom,
    task_scores,
)
from grace.validation import clustered_stderr, mean_and_stderr

DOCS = ["The cat sat on the mat.", "Stocks fell on Monday.", "Rain is expected.", "A long film."]
TRAIN = [
    ("a cat", 0, "stocks"),
    ("the mat", 0, "rain"),
    ("markets", 1, "a cat"),
    ("weather", 2, "film"),
    ("cinema", 3, "weather"),
]
HELD = [
    ("kitten", 0, "a"),
    ("shares", 1, "b"),
    ("clouds", 2, "c"),
    ("movie", 3, "d"),
    ("rug", 0, "a"),
]


def small_task(labels=None) -> OfflineTask:
    held = HELD if labels is None else [(q, labels[t], c) for q, t, c in HELD]
    return OfflineTask("toy", "a toy task", DOCS, TRAIN, held, labels=labels)


def test_retrieval_scores_count_ties_against_the_query():
    task = small_task()
    queries = np.eye(4)[[0, 1, 2, 3, 0]].astype(np.float32)
    documents = np.eye(4, dtype=np.float32)
    documents[1] = documents[0]  # document 1 ties with document 0
    scores = task_scores(task, queries, documents)
    # Query 1 is orthogonal to its document, as to all: a four-way tie ranks it last.
    assert scores.tolist() == [0.5, 0.25, 1.0, 1.0, 0.5]
    # Identical embeddings everywhere rank every query last, not first.
    assert task_scores(task, np.ones((5, 4)), np.ones((4, 4))).tolist() == [0.25] * 5


def test_classification_scores_are_the_vote_of_five_nearest_documents():
    labels = [1, 0, 1, 0]
    task = OfflineTask("toy", "", DOCS * 2, TRAIN, [("q", 1, "a"), ("r", 0, "b")], labels * 2)
    documents = np.eye(8, dtype=np.float32)
    queries = np.zeros((2, 8), dtype=np.float32)
    queries[0, [0, 2, 4, 6, 1]] = [5, 4, 3, 2, 1]  # nearest five: labels 1, 1, 1, 1, 0
    queries[1, [0, 2, 4, 1, 3]] = [5, 4, 3, 2, 1]  # 1, 1, 1, 0, 0: votes 1 but the label is 0
    assert task_scores(task, queries, documents).tolist() == [1.0, 0.0]
    assert task.chance == 0.5


def test_clustered_stderr_grows_when_queries_repeat_within_a_cluster():
    rng = np.random.default_rng(0)
    values = rng.normal(size=200)
    plain = mean_and_stderr(values)[1]
    assert clustered_stderr(values, list(range(200))) == pytest.approx(plain, rel=0.15)
    repeated = np.repeat(values[:50], 4)  # four copies per cluster: the same information
    clustered = clustered_stderr(repeated, np.repeat(np.arange(50), 4))
    assert clustered == pytest.approx(2 * mean_and_stderr(repeated)[1], rel=0.2)


@pytest.fixture(scope="module")
def embedded(tiny):
    model, tokenizer = tiny
    encoder = GraceEncoder(model, tokenizer, EncoderConfig(max_new_tokens=4, batch_size=8))
    return encoder, embed_task(encoder, small_task(), (2, 4), draws=3)


def test_draws_and_greedy_rationales_are_the_encoders(embedded):
    encoder, by_length = embedded
    for length, out in by_length.items():
        assert out.draws.shape[:2] == (4, 3)

        def alone(**settings):
            return GraceEncoder(encoder.model, encoder.tokenizer, encoder.config, **settings)

        greedy = alone(max_new_tokens=length, temperature=0).encode(DOCS, show_progress_bar=False)
        np.testing.assert_allclose(out.documents, greedy, atol=1e-5)
        sampled = alone(max_new_tokens=length, num_rationales=3).encode_draws(
            DOCS, show_progress_bar=False
        )[0]
        np.testing.assert_allclose(out.draws, sampled, atol=1e-5)
        assert 0 < out.rationale_share < 1


def test_paper_reward_per_draw_is_the_formula_averaged_over_the_documents_triples(embedded):
    _, by_length = embedded
    out = by_length[4]
    values = draw_rewards(small_task(), out, "paper", tau=0.1)
    groups = len(TRAIN)
    for doc in range(4):
        triples = [t for t, (_, d, _) in enumerate(TRAIN) if d == doc]
        for i in range(3):
            total = 0.0
            for t in triples:
                q, d = out.queries[t], out.draws[doc]
                cluster = np.mean([d[i] @ d[j] for j in range(3) if j != i])
                others = [
                    max(q @ out.draws[TRAIN[k][1], j] for j in range(3))
                    for k in range(groups)
                    if k != t
                ]
                reward = q @ d[i] - q @ out.negatives[t] + 0.2 * cluster - 0.2 * np.mean(others)
                total += reward / 0.1
            assert values[doc, i] == pytest.approx(total / len(triples), abs=1e-4)


def test_record_rows_and_table(embedded, tiny):
    _, by_length = embedded
    record = headroom_record(small_task(), by_length[4], 4, ("paper", "infonce"))
    assert record["rows"]["greedy rationale"]["change"] == 0.0
    best = record["rows"]["best of 3 by paper"]
    assert set(best) == {"score", "change", "change_stderr", "change_stderr_clustered"}
    assert record["reward_spread"]["infonce"]["cosine"] >= 0
    table = headroom_markdown([record]).splitlines()
    assert table[0].startswith("| task | tokens |") and "best by infonce" in table[0]
    # Two rewards' best-of-3 and the oracle (a retrieval task has one), each with its error.
    assert table[2].startswith("| toy | 4 |") and table[2].count("±") == 3
    model, tokenizer = tiny
    encoder = GraceEncoder(model, tokenizer, EncoderConfig(max_new_tokens=2, batch_size=8))
    records = measure_headroom(encoder, small_task([1, 0, 1, 0]), (2,), draws=2, rewards=("paper",))
    assert records[0]["metric"] == "knn-accuracy" and "seconds" in records[0]


def test_the_parts_of_the_papers_choice(embedded):
    """The draw nearest the mean of a document's draws, and the paper's reward without its
    cluster term (the formula less 0.2 x the cluster term), each choose a draw per document."""
    _, by_length = embedded
    out = by_length[4]
    task = small_task()
    record = headroom_record(task, out, 4, ("paper",))
    with_cluster = draw_rewards(task, out, "paper", tau=0.1)
    without = draw_rewards(task, out, "paper", tau=0.1, cluster_weight=0.0)
    for doc in range(4):
        d = out.draws[doc]
        cluster = [np.mean([d[i] @ d[j] for j in range(3) if j != i]) for i in range(3)]
        assert with_cluster[doc] - without[doc] == pytest.approx(0.2 * np.array(cluster) / 0.1)
    mean = out.draws.mean(axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    nearest = out.draws[np.arange(4), np.einsum("nkh,nh->nk", out.draws, mean).argmax(axis=1)]
    expected = task_scores(task, out.held_out, nearest) - task_scores(
        task, out.held_out, out.documents
    )
    assert record["rows"]["nearest the mean of 3"]["change"] == pytest.approx(expected.mean())
    assert "best of 3 by paper without its cluster term" in record["rows"]
    table = headroom_parts_markdown([record]).splitlines()
    assert table[0] == (
        "| task | tokens | mean of draws | nearest their mean | best by paper | best by paper "
        "without its cluster term |"
    )
    assert table[2].startswith("| toy | 4 |") and table[2].count("±") == 4
    assert headroom_parts_markdown([{**record, "rows": {}}]).splitlines()[2].count("–") == 4
