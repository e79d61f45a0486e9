import json

import pytest
import torch

from grace.cli import main
from grace.config import load_config
from grace.models import build_tiny_random, load_model
from grace.train import check_whole_groups, train


def run(tmp_path, *overrides):
    return train(load_config("tiny", [f"output_dir={tmp_path}", *overrides]))


def changed(path) -> bool:
    """Whether the model saved at ``path`` differs from the untrained tiny model."""
    trained, _ = load_model(str(path), device="cpu")
    base, _ = build_tiny_random()
    return any(
        not torch.allclose(a, b)
        for a, b in zip(trained.state_dict().values(), base.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize(
    ("setting", "lora"),
    [("supervised", False), ("supervised", True), ("unsupervised", False), ("unsupervised", True)],
)
def test_grpo_steps_change_weights_and_log_reward_terms(tmp_path, setting, lora):
    trainer = run(tmp_path, f"setting={setting}", f"lora={str(lora).lower()}")
    assert trainer.state.global_step == 2
    assert changed(tmp_path)  # the saved folder is a plain (merged) model
    logged = [h for h in trainer.state.log_history if "grace/positive" in h]
    assert len(logged) == 2
    for name in ("positive", "negative", "cluster", "cross", "total", "hit_cap"):
        assert all(f"grace/{name}" in h for h in logged)
    # Groups arrived whole: 2 prompts x 4 rollouts per reward call.
    reward = trainer.reward_funcs[0]
    assert reward.last_terms.total.shape == (2, 4)
    samples = [
        json.loads(line) for line in (tmp_path / "rationales.jsonl").read_text().splitlines()
    ]
    assert [s["step"] for s in samples] == [0, 1] and len(samples[0]["rationales"]) == 4


def test_resume_continues_the_step_count(tmp_path):
    run(tmp_path, "max_steps=2", "save_steps=1")
    assert (tmp_path / "checkpoint-2").exists()
    resumed = run(tmp_path, "max_steps=3", "save_steps=1")
    assert resumed.state.global_step == 3
    assert len(resumed.reward_funcs[0].seconds["embed_rollouts"]) == 1  # one new step only
    assert [h["step"] for h in resumed.state.log_history if "loss" in h] == [1, 2, 3]


def test_split_groups_are_refused():
    assert check_whole_groups(["a"] * 4 + ["b"] * 4, 4) == 2
    with pytest.raises(RuntimeError, match="not a multiple of num_generations=4"):
        check_whole_groups(["a"] * 6, 4)
    with pytest.raises(RuntimeError, match="do not share one prompt"):
        check_whole_groups(["a", "a", "b", "b"], 4)


def losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


@pytest.mark.parametrize("method", ["contrastive", "simcse"])
def test_contrastive_baselines_lower_their_loss_on_a_toy_set(tmp_path, method):
    # One batch of 4 examples seen again and again: the loss must go down.
    trainer = run(
        tmp_path,
        f"method={method}",
        "max_examples=4",
        "contrastive_batch_size=4",
        "max_steps=12",
        "learning_rate=3e-3",
        "save_steps=100",
    )
    values = losses(trainer)
    assert len(values) == 12
    assert sum(values[-3:]) / 3 < values[0]
    assert changed(tmp_path)


def test_cli_train_saves_a_loadable_model(tmp_path, capsys):
    code = main(
        [
            "train",
            "--config",
            "tiny",
            "--method",
            "contrastive",
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "max_steps=1",
        ]
    )
    assert code == 0
    assert "Trained 1 steps" in capsys.readouterr().out
    load_model(str(tmp_path), device="cpu")


def test_cli_train_reports_bad_settings(capsys):
    assert main(["train", "--config", "tiny", "--set", "nope=1"]) == 2
    assert "Unknown configuration keys ['nope']" in capsys.readouterr().err


def test_finished_run_is_reused_unless_a_training_setting_changed(tmp_path, monkeypatch):
    from dataclasses import asdict

    import grace.train

    config = load_config("tiny", {"output_dir": str(tmp_path)})
    (tmp_path / "train_config.json").write_text(json.dumps(asdict(config)))
    (tmp_path / "log_history.json").write_text("[]")
    calls = []
    monkeypatch.setattr(grace.train, "train", lambda c: calls.append(c))

    grace.train.trained_model(load_config("tiny", {"output_dir": str(tmp_path), "eval_draws": 5}))
    assert calls == []  # scoring settings do not make a new run
    grace.train.trained_model(load_config("tiny", {"output_dir": str(tmp_path), "seed": 3}))
    assert len(calls) == 1
