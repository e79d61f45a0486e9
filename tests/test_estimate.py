from dataclasses import replace

import pytest

from grace.config import load_config
from grace.estimate import Rates, estimate, measure_rates, rollout_rows


def test_the_estimate_scales_with_steps_caps_and_draws():
    config = load_config("cpu")
    training, evaluation = Rates(24, 2.0, 0.5, 3.0), Rates(64, 4.0, 1.0, 0.0)
    base = estimate(config, training, evaluation)
    # 16 steps x (2 s + 32 tokens x 0.5 s + 2 micro-batches x 3 s) = 16 x 24 s
    assert base.training_minutes == pytest.approx(16 * 24 / 60)
    # (4 s + 32 x 1 s) x 2 draws / 64 rows = 1.125 s a text
    assert base.evaluation_minutes_per_1000_texts == pytest.approx(1.125 * 1000 / 60)
    longer = replace(config, optim=replace(config.optim, max_steps=32))
    assert estimate(longer, training, evaluation).training_minutes == pytest.approx(
        2 * base.training_minutes
    )
    assert "16 steps x 24.0 s = 6.4 min." in base.arithmetic
    assert max(len(line) for line in str(base).splitlines()) <= 88  # no sideways scrolling
    assert rollout_rows(config) == 16 + 2 * 4  # completions and each prompt's two anchors


def test_rates_are_measured_on_the_profiles_model():
    training, evaluation = measure_rates(load_config("tiny"))
    assert training.rows == rollout_rows(load_config("tiny"))
    assert training.batch_seconds >= 0 and training.step_seconds > 0
    assert training.update_seconds > 0 and evaluation.step_seconds > 0


def test_a_grace_run_that_must_train_prints_its_estimate_then_its_time(tmp_path, capsys):
    from grace.book.notebooks import run_config, trained_with_estimate
    from grace.config import load_config

    config = run_config(load_config("tiny"), "grace-supervised", tmp_path)
    trained_with_estimate(config)
    printed = capsys.readouterr().out
    assert "GRACE training: at most" in printed and "Training took" in printed
    trained_with_estimate(config)  # finished: reused, nothing timed
    assert "GRACE training" not in capsys.readouterr().out
