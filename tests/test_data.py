import pytest

from grace.data import (
    DataError,
    drop_overlong,
    held_out,
    lee_documents,
    lee_sentences,
    load_sentences,
    load_triples,
    movie_triples,
    read_triples,
    rotten_tomatoes,
    train_validation_split,
)


def test_triples_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "triples.jsonl"
    path.write_text(
        '{"query": "q", "positive": "p", "negative": "n"}\n{"query": "q", "positive": "p"}\n'
    )
    with pytest.raises(DataError, match=r"triples.jsonl, line 2: missing field 'negative'"):
        read_triples(path)
    path.write_text('{"query": "q", "positive": "p", "negative": "n", "id": 3}\n')
    assert load_triples(str(path)) == [{"query": "q", "positive": "p", "negative": "n", "id": 3}]


def test_sentences_from_txt_and_jsonl(tmp_path):
    (tmp_path / "s.txt").write_text("first sentence\n\nsecond one\n")
    (tmp_path / "s.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n')
    assert load_sentences(str(tmp_path / "s.txt")) == ["first sentence", "second one"]
    assert load_sentences(str(tmp_path / "s.jsonl")) == ["a", "b"]


def test_unknown_source_fails_fast_offline():
    with pytest.raises(DataError, match="nor a loadable datasets id"):
        load_triples("no-such-user/no-such-dataset")


def test_overlong_rows_are_dropped(tiny):
    _, tokenizer = tiny  # byte-level: one token per character here
    rows = [
        {"query": "abc", "positive": "x" * 10, "negative": "n"},
        {"query": "abc", "positive": "p", "negative": "n"},
    ]
    assert drop_overlong(tokenizer, rows, max_tokens=5) == rows[1:]
    assert drop_overlong(tokenizer, ["short", "much too long"], max_tokens=5) == ["short"]


def test_split_is_deterministic_disjoint_and_order_free():
    rows = [f"sentence {i}" for i in range(1000)]
    train, validation = train_validation_split(rows, 0.2)
    assert not set(train) & set(validation) and len(train) + len(validation) == 1000
    assert 150 < len(validation) < 250
    again_train, again_validation = train_validation_split(rows[::-1], 0.2)
    assert set(again_validation) == set(validation)
    other_seed = train_validation_split(rows, 0.2, seed=1)[1]
    assert set(other_seed) != set(validation)


def test_movie_triples_keep_evaluation_movies_out():
    rows = rotten_tomatoes()
    movie_of_plot = {r["text"]: r["movie"] for r in rows if r["category"] == "plot"}
    train, validation = movie_triples(), movie_triples("validation")
    evaluation = movie_triples("test")
    train_movies = {movie_of_plot[t["positive"]] for t in train}
    eval_movies = {movie_of_plot[t["positive"]] for t in evaluation}
    assert train_movies and eval_movies and not train_movies & eval_movies
    assert all(not held_out(m) for m in train_movies) and all(held_out(m) for m in eval_movies)
    assert all(t["negative"] != t["positive"] for t in train)
    assert all(t["movie"] == movie_of_plot[t["positive"]] for t in train + evaluation)
    assert len(train) > 3000 and train == movie_triples()  # deterministic
    # Validation reviews come from the training movies but were never trained on.
    assert {t["movie"] for t in validation} <= {t["movie"] for t in train}
    assert not {t["query"] for t in validation} & {t["query"] for t in train}
    assert 0.07 < len(validation) / (len(train) + len(validation)) < 0.13


def test_lee_sentences_are_real_and_apart_from_the_sts_documents():
    sentences = lee_sentences()
    assert len(sentences) > 2000
    assert all(len(s.split()) >= 6 for s in sentences)
    evaluation = " ".join(lee_documents(background=False))
    assert not any(s in evaluation for s in sentences[:500])
