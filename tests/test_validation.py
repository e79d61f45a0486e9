import json

import numpy as np
import pytest

from grace.config import ConfigError, load_config
from grace.data import movie_triples
from grace.train import train
from grace.validation import (
    ValidationSet,
    curve_change,
    details_curve,
    query_scores,
    score,
    validation_curve,
    validation_encoder,
    validation_set,
    verdict,
)


def test_validation_set_uses_reviews_never_trained_or_tested_on():
    data = validation_set(movies=6, reviews_per_movie=2)
    assert len(data.queries) == 12 and data == validation_set(6, 2)  # fixed across runs
    trained = {t["query"] for t in movie_triples("train")}
    tested = {t["query"] for t in movie_triples("test")} | {
        t["positive"] for t in movie_triples("test")
    }
    assert not set(data.queries) & trained and not set(data.queries) & tested
    plot_of = {t["query"]: (t["positive"], t["negative"]) for t in movie_triples("validation")}
    for query, p, n in zip(data.queries, data.positive, data.negative, strict=True):
        assert (data.plots[p], data.plots[n]) == plot_of[query]


def test_every_training_movie_gives_the_study_its_240_queries():
    data = validation_set(movies=None, reviews_per_movie=3)
    per_movie: dict[int, int] = {}
    for positive in data.positive:
        per_movie[positive] = per_movie.get(positive, 0) + 1
    assert len(per_movie) == 102 and max(per_movie.values()) == 3
    assert len(data.queries) == len(set(data.queries)) >= 240


def test_score_by_hand():
    data = ValidationSet(["q0", "q1"], ["p0", "p1", "p2"], positive=[0, 1], negative=[1, 2])
    vectors = {
        "q0": [1.0, 0.0], "q1": [0.0, 1.0],
        "p0": [0.6, 0.8], "p1": [0.8, 0.6], "p2": [0.0, 1.0],
    }  # fmt: skip
    scores = score(lambda texts: np.array([vectors[t] for t in texts]), data)
    # q0: own plot .6 ranks after p1 (.8): 1/2; q1: own plot .6 after p0 (.8) and p2 (1): 1/3
    assert scores["mrr"][0] == pytest.approx((1 / 2 + 1 / 3) / 2)
    # margins: q0 .6 - .8 = -.2 ; q1 .6 - 1 = -.4
    assert scores["margin"][0] == pytest.approx(-0.3)
    assert scores["margin"][1] == pytest.approx(0.1)  # std .1414 / sqrt(2 queries)


def test_curve_verdict_needs_more_than_three_errors_and_says_when_it_cannot_tell():
    curve = {"steps": [0, 4], "values": [0.30, 0.40], "stderr": [0.02, 0.02]}
    assert verdict(curve) == "higher"  # gap .10 > 3 * .028
    assert verdict(curve | {"stderr": [0.03, 0.03]}) == "too noisy to tell"  # .10 < 3 * .042
    # With the paired change logged, its own standard error decides.
    paired = curve | {"stderr": [0.03, 0.03], "change": [0.0, 0.10], "change_stderr": [0, 0.02]}
    assert verdict(paired) == "higher"
    # ... and where the record has it, the error bootstrapped over movies decides instead.
    assert verdict(paired | {"change_stderr_clustered": [0, 0.04]}) == "too noisy to tell"
    assert verdict({**paired, "change": [0.0, -0.10]}) == "lower"
    # Inside a band narrower than a change that would matter (0.01 MRR): no measured difference.
    tight = {**paired, "change": [0.0, 0.002], "change_stderr": [0, 0.003]}
    assert verdict(tight) == "no measured difference"
    assert curve_change(tight).noise == pytest.approx(0.009)


@pytest.mark.parametrize("method", ["grace", "contrastive", "simcse"])
def test_training_logs_validation_before_and_during_the_run(tmp_path, method):
    config = load_config("tiny", [f"output_dir={tmp_path}", f"method={method}", "max_steps=3"])
    trainer = train(config.with_changes({"validation.every": 2}))
    curve = validation_curve(trainer.state.log_history)
    assert curve["steps"] == [0, 2, 3]  # before training, every 2 steps, and the last step
    assert curve["change"][0] == 0 and curve["change_stderr"][0] == 0  # paired with itself
    details = [json.loads(line) for line in (tmp_path / "validation.jsonl").open()]
    assert len(details) == 3 and len(details[-1]["mrr"]) == len(validation_set(4, 2).queries)
    # The budget spent at each point: prompts (or pairs) and training seconds, validation
    # itself not counted.
    per_step = 2 if method == "grace" else 4  # 4 x 2 rollouts / groups of 4; batches of 4
    assert [d["prompts_seen"] for d in details] == [0, 2 * per_step, 3 * per_step]
    seconds = [d["seconds"] for d in details]
    assert seconds[0] == 0 and seconds[0] < seconds[1] < seconds[2]
    assert all(d["wall_seconds"] > 0 for d in details[1:])
    for point in details:
        diagnostics = point["diagnostics"]
        assert -1 <= diagnostics["mean_cosine"] <= 1
        # Rationale numbers for GRACE only: the baselines embed directly. (distinct-2 may be
        # None: 4 tokens of the random model rarely make two words.)
        written = [diagnostics[k] is not None for k in ("copy_share", "fence_share")]
        assert all(written) if method == "grace" else not any(written)
    assert all(0 < v <= 1 for v in curve["values"]) and all(e >= 0 for e in curve["stderr"])
    # The steps' own logging still happens at every step.
    assert [h["step"] for h in trainer.state.log_history if "loss" in h] == [1, 2, 3]
    assert trainer.model.training  # validation switched eval mode off again
    # The per-query file alone gives the same curve (a stopped run has no history file).
    from grace.validation import details_curve

    again = details_curve(tmp_path)
    for key in ("steps", "values", "stderr", "change", "change_stderr"):
        assert again[key] == pytest.approx(curve[key]), key
    # Each query's movie is kept, so the change's error can be bootstrapped over movies.
    assert details[0]["clusters"] == validation_set(4, 2).clusters
    logged = [
        h["validation/mrr_change_stderr_clustered"]
        for h in trainer.state.log_history
        if "validation/mrr" in h
    ]
    assert again["change_stderr_clustered"] == pytest.approx(logged)


def test_describe_says_up_down_or_no_difference():
    from grace.validation import describe

    up = {"steps": [0, 8], "values": [0.30, 0.40], "stderr": [0.02, 0.02]}
    assert "it learned" in describe(up, "+CL")
    down = up | {"values": [0.40, 0.30]}
    assert "got worse" in describe(down, "+CL")
    flat = up | {"values": [0.30, 0.32]}
    assert "too noisy to tell" in describe(flat, "+CL")
    tight = flat | {"change": [0.0, 0.001], "change_stderr": [0.0, 0.002]}
    assert "no measured difference" in describe(tight, "+CL")
    paired = flat | {"change": [0.0, 0.02], "change_stderr": [0.0, 0.005]}
    assert "it learned" in describe(paired, "+CL") and "+0.020 ± 0.005" in describe(paired, "x")
    assert "0.300 ± 0.020 at step 0" in describe(up, "x")


def test_describe_terms_compares_the_first_and_last_quarter():
    from grace.validation import describe_terms

    history = [{"grace/positive": v, "step": i} for i, v in enumerate([0.1, 0.2, 0.3, 0.4])]
    text = describe_terms(history, ("grace/positive",))
    assert "first 1 against last 1 steps: positive 0.100 → 0.400" in text


def test_paired_change_of_a_model_with_itself_is_zero():
    from grace.validation import paired_change, validation_set

    config = load_config("tiny")
    result = paired_change(config, "tiny-random", "tiny-random")
    assert result["before"] == result["after"] and result["change"] == (0.0, 0.0)
    assert result["queries"] == len(
        validation_set(config.validation.movies, config.validation.reviews_per_movie).queries
    )
    # Other settings for the after side only: the before side is the same measurement.
    echo = paired_change(config, "tiny-random", "tiny-random", after_changes={"mode": "echo"})
    assert echo["before"] == result["before"] and echo["after"] != result["after"]


def test_sweep_table_reads_each_record_as_its_validation_verdict(tmp_path):
    from grace.validation import read_sweep, sweep_table

    flat = {"steps": [0, 40], "values": [0.13, 0.14], "stderr": [0.03, 0.03]}
    runs = {
        "up": (flat | {"change": [0, 0.2], "change_stderr": [0, 0.05]}, {"lr": 2e-5}, True),
        "flat": (flat | {"change": [0, 0.01], "change_stderr": [0, 0.03]}, {}, False),
    }
    for name, (curve, overrides, finished) in runs.items():
        record = {"variant": name, "curve": curve, "overrides": overrides, "finished": finished}
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    table = sweep_table(read_sweep(tmp_path))
    assert list(table.index) == ["flat", "up"]
    assert list(table["verdict"]) == ["too noisy to tell", "higher"]
    assert list(table["changes"]) == ["the profile", "lr=2e-05"]
    assert list(table["steps"]) == ["40 (stopped)", "40"]
    assert table.loc["up", "paired change"] == "+0.200 ± 0.050"


def test_export_curves_writes_one_file_per_finished_run(tmp_path):
    from grace.validation import export_curves

    done = tmp_path / "contrastive"
    done.mkdir()
    history = [
        {"step": 0, "validation/mrr": 0.1, "validation/mrr_stderr": 0.02},
        {"step": 1, "loss": 2.0},
        {"step": 4, "validation/mrr": 0.3, "validation/mrr_stderr": 0.03},
    ]
    (done / "log_history.json").write_text(json.dumps(history))
    target = tmp_path / "results" / "validation"
    export_curves({"contrastive": done, "simcse": tmp_path / "simcse"}, target)
    assert [p.name for p in target.iterdir()] == ["contrastive.json"]  # simcse never trained
    curve = json.loads((target / "contrastive.json").read_text())
    assert (curve["steps"], curve["values"], curve["stderr"]) == ([0, 4], [0.1, 0.3], [0.02, 0.03])
    assert "mrr" in curve["metric"]


def test_describe_sweep_reads_the_committed_records_verdicts():
    """Notebook 10 once read a key the records do not have and counted 0 variants."""
    from pathlib import Path

    from grace.validation import describe_sweep, read_sweep, verdict

    records = read_sweep(Path(__file__).resolve().parent.parent / "results" / "sweep")
    learned = [r["variant"] for r in records if verdict(r["curve"]) == "higher"]
    assert "cl-lr2e-5-150" in learned  # +0.229 ± 0.056
    text = describe_sweep(records)
    assert text.startswith(f"{len(learned)} of {len(records)} recorded variants rose")
    assert "cl-lr2e-5-150" in text
    assert describe_sweep([]) == "No validation sweep recorded."


def test_a_resumed_run_counts_its_budget_from_the_checkpoint_it_resumes(tmp_path):
    """Stopped after step 3 with checkpoints every 2 steps and points every 3: the resumed run
    restarts at step 2, so its seconds must continue from step 2's, not from step 3's point."""
    from transformers import TrainerCallback

    from grace.train import trained_model

    class Stop(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    config = load_config(
        "tiny", [f"output_dir={tmp_path}", "max_steps=4", "save_steps=2"]
    ).with_changes({"validation.every": 3})
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Stop()])
    saved = json.loads((tmp_path / "checkpoint-2" / "grace_budget.json").read_text())
    with (tmp_path / "validation.jsonl").open("a") as handle:
        handle.write('{"step": 3, "queri')  # a line cut by the stop: dropped, not glued onto
    trained_model(config)
    points = [json.loads(line) for line in (tmp_path / "validation.jsonl").open()]
    assert details_curve(tmp_path)["steps"] == [0, 3, 4]
    assert [p["step"] for p in points] == [0, 3, 3, 4]  # step 3 measured again after resuming
    assert saved["seconds"] < points[2]["seconds"] < points[3]["seconds"]
    assert points[1]["queries"] == points[2]["queries"]


def test_resuming_with_another_validation_set_is_refused(tmp_path):
    from grace.config import ConfigError

    config = load_config("tiny", [f"output_dir={tmp_path}", "max_steps=2", "save_steps=1"])
    train(config.with_changes({"validation.every": 1}))
    (tmp_path / "log_history.json").unlink()  # as if stopped
    changed = config.with_changes({"validation.every": 1, "validation.movies": 5})
    with pytest.raises(ConfigError, match="another validation set"):
        train(changed)


def test_ties_and_nan_rank_the_positive_last():
    data = ValidationSet(["q0", "q1"], ["p0", "p1", "p2"], positive=[0, 2], negative=[1, 1])
    same = query_scores(np.ones((2, 4)), np.ones((3, 4)), data)  # crowded: all alike
    assert same["mrr"].tolist() == [1 / 3, 1 / 3]
    diverged = query_scores(np.full((2, 4), np.nan), np.full((3, 4), np.nan), data)
    assert diverged["mrr"].tolist() == [1 / 3, 1 / 3]
    # Without ties, the rank counts the candidates strictly ahead, plus one.
    queries = np.array([[1.0, 0.0], [0.0, 1.0]])
    plots = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.9]])
    assert query_scores(queries, plots, data)["mrr"].tolist() == [1.0, 1.0]


def test_a_retrieval_task_validates_on_its_held_out_queries_never_trained_on():
    from grace.data import load_triples

    data = validation_set(None, 1, task="lee-topic")
    assert len(data.plots) == 100 and len(data.queries) == 200
    trained = {t["query"] for t in load_triples("lee-topic")}
    assert not set(data.queries) & trained
    assert all(p != n for p, n in zip(data.positive, data.negative, strict=True))
    assert data.clusters == data.positive  # two sentences of each article
    test = validation_set(None, 1, task="lee-topic", split="test")
    assert test.plots == data.plots and len(test.queries) > 100
    assert not set(test.queries) & (trained | set(data.queries))
    with pytest.raises(ConfigError, match="offline suite"):
        validation_set(None, 1, split="test")


def test_validation_refuses_a_classification_task():
    from grace.config import ConfigError

    with pytest.raises(ConfigError, match="validation.task must be a retrieval task"):
        load_config("tiny", ["validation.task=sentiment"])


def test_a_damaged_earlier_line_of_a_run_log_is_named(tmp_path):
    from grace.data import DataError
    from grace.files import appended_records

    path = tmp_path / "validation.jsonl"
    path.write_text('{"step": 0}\n{"st\n{"step": 2}\n')
    with pytest.raises(DataError, match=r"validation.jsonl:2 is not a JSON record"):
        appended_records(path)
    path.write_text('{"step": 0}\n{"step": 1}')  # whole, but no line end: repaired
    assert appended_records(path, repair=True) == [{"step": 0}, {"step": 1}]
    assert path.read_text() == '{"step": 0}\n{"step": 1}\n'


def test_swap_test_cells_are_the_encoders_own_paths(tiny):
    import copy

    import torch

    from grace.encoder import EncoderConfig, GraceEncoder
    from grace.validation import swap_test

    model, tokenizer = tiny
    config = EncoderConfig(max_new_tokens=4, temperature=0.0, batch_size=4, max_input_tokens=32)
    base = GraceEncoder(model, tokenizer, config)
    data = validation_set(3, 1)
    texts = data.queries + data.plots
    # A model's own rationales, embedded by itself, are what it encodes; [] is direct mode.
    np.testing.assert_allclose(
        base.embed_written(texts, base.write(texts)), base.encode(texts), atol=1e-4
    )
    direct = GraceEncoder(model, tokenizer, config, mode="direct").encode(texts)
    np.testing.assert_allclose(base.embed_written(texts, [[]] * len(texts)), direct, atol=1e-4)
    echo = GraceEncoder(model, tokenizer, config, mode="echo").encode(texts)
    echoed = base.embed_written(texts, [base.echo_ids(t, 4) for t in texts])
    np.testing.assert_allclose(echoed, echo, atol=1e-4)

    same = swap_test(base, GraceEncoder(copy.deepcopy(model), tokenizer, config), data)
    assert all(row["change"] == 0 for name, row in same["rows"].items() if "writes" in name)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in moved.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    result = swap_test(base, GraceEncoder(moved, tokenizer, config), data)
    assert result["rows"]["base writes, base embeds"]["change"] == 0
    assert len(result["rows"]) == 8 and result["queries"] == len(data.queries)
    embedded = {n: r["mrr"][0] for n, r in result["rows"].items()}
    assert embedded["base, direct"] == pytest.approx(same["rows"]["base, direct"]["mrr"][0])


def test_run_swap_test_pairs_a_run_folder_with_its_base(tmp_path):
    from grace.runs import saved_config
    from grace.train import trained_model
    from grace.validation import paired_change, run_swap_test

    with pytest.raises(ConfigError, match="not a run folder"):
        saved_config(tmp_path)
    config = load_config(
        "tiny",
        [
            f"output_dir={tmp_path / 'cl'}",
            "run.method=contrastive",
            "baselines.steps=2",
            "baselines.lr=0.01",  # large enough that two steps move the ranks
        ],
    )
    folder = trained_model(config)
    assert saved_config(folder).to_dict() == config.to_dict()
    result = run_swap_test(folder)
    rows = result["rows"]
    assert result["method"] == "contrastive" and result["task"] == config.validation.task
    assert rows["base writes, base embeds"]["change"] == 0
    # The direct rows are the two models as the run validates them (direct, for +CL).
    paired = paired_change(config, config.run.model, str(folder))
    assert rows["base, direct"]["mrr"][0] == pytest.approx(paired["before"][0])
    assert rows["trained, direct"]["mrr"][0] == pytest.approx(paired["after"][0])
    assert paired["before"][0] != paired["after"][0]


def test_validation_with_sampled_draws_averages_them_and_is_its_own_measurement(tmp_path):
    """validation.draws k: each text is the mean of k rationales sampled at the policy's
    temperature (greedy when 0); a run validated one way does not resume validated another."""
    config = load_config("tiny", [f"output_dir={tmp_path}", "max_steps=2", "save_steps=1"])
    assert validation_encoder(config).temperature == 0.0
    sampled = validation_encoder(config.with_changes({"validation.draws": 3}))
    assert (sampled.temperature, sampled.num_rationales) == (config.policy.temperature, 3)
    assert sampled.draws == 3
    with pytest.raises(ConfigError, match="validation.draws must be >= 0"):
        config.with_changes({"validation.draws": -1})
    train(config.with_changes({"validation.every": 1, "validation.draws": 2}))
    points = [json.loads(line) for line in (tmp_path / "validation.jsonl").open()]
    assert [p["draws"] for p in points] == [2, 2, 2]
    (tmp_path / "log_history.json").unlink()  # as if stopped
    with pytest.raises(ConfigError, match="with other rationales"):
        train(config.with_changes({"validation.every": 1}))
