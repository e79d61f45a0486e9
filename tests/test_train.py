import json

import pytest
import torch
from transformers import TrainerCallback

from grace.cli import main
from grace.config import load_config
from grace.models import build_tiny_random, load_model
from grace.runs import is_finished, log_history
from grace.train import check_whole_groups, train, trained_model


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
    assert changed(tmp_path)  # the saved folder loads as the trained model
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


class Interrupt(TrainerCallback):
    """Stops a run as a crash would, at the start of step ``at + 1`` (checkpoint ``at`` saved),
    or with ``before_save`` at the end of step ``at``: after its samples, before its checkpoint."""

    def __init__(self, at: int, before_save: bool = False) -> None:
        self.at, self.before_save = at, before_save

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.before_save and state.global_step == self.at:
            raise KeyboardInterrupt

    def on_step_end(self, args, state, control, **kwargs):
        if self.before_save and state.global_step == self.at:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    config = load_config("tiny", [f"output_dir={tmp_path}", "max_steps=3", "save_steps=1"])
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Interrupt(at=2)])
    assert (tmp_path / "checkpoint-2").exists() and not (tmp_path / "log_history.json").exists()
    resumed_folder = trained_model(config)
    assert resumed_folder == tmp_path and is_finished(tmp_path, config)
    history = log_history(tmp_path)
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3]


class StopAtEnd(TrainerCallback):
    """Stops a run after its final checkpoint is saved, before it is marked finished."""

    def on_train_end(self, args, state, control, **kwargs):
        raise KeyboardInterrupt


@pytest.mark.parametrize("method", ["grace", "contrastive"])
def test_a_run_killed_after_its_last_checkpoint_ends_at_max_steps(tmp_path, method):
    settings = ["max_steps=3", "save_steps=1", f"run.method={method}", "baselines.steps=3"]
    whole = load_config("tiny", [f"output_dir={tmp_path / 'whole'}", *settings])
    stopped = load_config("tiny", [f"output_dir={tmp_path / 'stopped'}", *settings])
    trained_model(whole)
    with pytest.raises(KeyboardInterrupt):
        train(stopped, callbacks=[StopAtEnd()])
    assert (tmp_path / "stopped" / "checkpoint-3").exists()
    assert not is_finished(tmp_path / "stopped", stopped)
    trained_model(stopped)
    steps = [h["step"] for h in log_history(tmp_path / "stopped") if "loss" in h]
    assert steps == [h["step"] for h in log_history(tmp_path / "whole") if "loss" in h]
    assert steps[-1] == 3
    assert (tmp_path / "stopped" / "model.safetensors").read_bytes() == (
        tmp_path / "whole" / "model.safetensors"
    ).read_bytes()


def test_a_resumed_run_logs_each_sampled_step_once(tmp_path):
    config = load_config(
        "tiny", [f"output_dir={tmp_path}", "max_steps=4", "save_steps=2", "sample_every=1"]
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Interrupt(at=3, before_save=True)])
    samples = tmp_path / "rationales.jsonl"
    # Step 3 sampled with the weights of step 2 (label 2); the last checkpoint is step 2's.
    assert [json.loads(line)["step"] for line in samples.read_text().splitlines()] == [0, 1, 2]
    assert not (tmp_path / "checkpoint-3").exists()
    with samples.open("a") as handle:
        handle.write('{"step": 2, "te')  # and a line cut by the stop
    trained_model(config)
    steps = [json.loads(line)["step"] for line in samples.read_text().splitlines()]
    assert steps == [0, 1, 2, 3]


def test_a_finished_run_is_reused_only_under_equal_settings(tmp_path, monkeypatch):
    first = load_config("tiny", [f"output_dir={tmp_path}", "learning_rate=1e-3"])
    trained_model(first)
    weights = (tmp_path / "model.safetensors").read_bytes()

    # Equal training settings (evaluation and logging may differ): reused, nothing trains.
    import grace.train

    monkeypatch.setattr(grace.train, "build_grpo_trainer", lambda c: pytest.fail("retrained"))
    trained_model(first.with_changes(["evaluation.num_rationales=5", "sample_every=3"]))
    monkeypatch.undo()
    assert (tmp_path / "model.safetensors").read_bytes() == weights

    # Another learning rate in the same folder: trained again from scratch, never resumed
    # from the first run's checkpoints; the old run is kept aside.
    with pytest.warns(UserWarning, match="other settings"):
        folder = trained_model(first.with_changes(["learning_rate=5e-2"]))
    assert (tmp_path / "model.safetensors").read_bytes() != weights
    logged = [h for h in log_history(tmp_path) if "learning_rate" in h]
    assert logged[0]["learning_rate"] == pytest.approx(5e-2)
    (aside,) = tmp_path.parent.glob(f"{tmp_path.name}.previous-{first.settings_hash()}")
    assert (aside / "model.safetensors").read_bytes() == weights
    assert folder == tmp_path

    # The first settings again: their run, moved aside, is moved back and reused.
    monkeypatch.setattr(grace.train, "build_grpo_trainer", lambda c: pytest.fail("retrained"))
    with pytest.warns(UserWarning, match="moved it back"):
        assert trained_model(first) == tmp_path
    assert (tmp_path / "model.safetensors").read_bytes() == weights
    assert not aside.exists()


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
        "baselines.batch_size=4",
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


def test_an_empty_system_prompt_renders_the_same_for_trl_and_the_reward(tiny, tmp_path):
    from grace.prompts import chat_prompt
    from grace.train import grpo_dataset

    _, tokenizer = tiny
    for system in ("", "Be brief."):
        config = load_config("tiny", [f"output_dir={tmp_path}", f"policy.system_prompt={system}"])
        row = grpo_dataset(config, tokenizer)[0]
        trl_side = tokenizer.apply_chat_template(
            row["prompt"], tokenize=False, add_generation_prompt=True
        )
        assert trl_side == chat_prompt(tokenizer, row["text"], system)


def test_simcse_trains_with_dropout_but_saves_the_models_own_rate(tmp_path):
    from grace.baselines import build_contrastive_trainer

    config = load_config("tiny", [f"output_dir={tmp_path}", "method=simcse", "max_steps=1"])
    trainer = build_contrastive_trainer(config)
    rates = {
        m.attention_dropout for m in trainer.model.modules() if hasattr(m, "attention_dropout")
    }
    assert rates == {config.baselines.simcse_dropout}
    train(config)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["attention_dropout"] == 0.0  # a loaded checkpoint embeds without dropout


def test_info_nce_leaves_out_false_negatives():
    from grace.baselines import info_nce, text_keys

    # Two rows whose positives are the same plot: without keys each counts as the other's
    # negative (loss log 2 with identical embeddings); with keys neither is penalised.
    anchors = candidates = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    keys = text_keys(["the same plot", "the same plot"])
    assert float(info_nce(anchors, candidates, 1.0)) == pytest.approx(0.6931, abs=1e-4)
    assert float(info_nce(anchors, candidates, 1.0, keys, keys)) == pytest.approx(0.0, abs=1e-6)
    # A hard negative with another text stays in the loss.
    negatives = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    all_candidates = torch.cat([candidates, negatives])
    all_keys = torch.cat([keys, text_keys(["plot a", "plot b"])])
    masked = info_nce(anchors, all_candidates, 1.0, keys, all_keys)
    assert float(masked) == pytest.approx(float(torch.log(torch.tensor(3.0))), abs=1e-4)


def test_a_trained_folder_embeds_as_it_was_trained(tmp_path):
    from grace.encoder import GraceEncoder

    config = load_config(
        "tiny", [f"output_dir={tmp_path}", "method=contrastive", "max_steps=1", "max_new_tokens=3"]
    )
    train(config)
    saved = json.loads((tmp_path / "encoder_config.json").read_text())
    assert saved["mode"] == "direct" and saved["max_new_tokens"] == 3  # +CL embeds directly
    assert GraceEncoder.from_pretrained(str(tmp_path), device="cpu").config.mode == "direct"
    explicit = GraceEncoder.from_pretrained(str(tmp_path), device="cpu", mode="rationale")
    assert explicit.config.mode == "rationale" and explicit.config.max_new_tokens == 3


@pytest.mark.parametrize("setting", ["supervised", "unsupervised"])
def test_frozen_anchors_are_written_once_by_the_starting_model(tmp_path, setting):
    trainer = run(tmp_path, f"setting={setting}", "reward.anchors=frozen", "max_steps=3")
    reward, frozen_anchors = trainer.reward_funcs[0], trainer.frozen_anchors
    stored = [json.loads(line) for line in (tmp_path / "anchors.jsonl").open()]
    assert len(stored) == len({s["text"] for s in stored}) > 0  # one rationale per text
    # The frozen copy kept the starting weights while the policy trained.
    base, _ = build_tiny_random()
    frozen = frozen_anchors.model.state_dict()
    assert all(torch.equal(frozen[k], v) for k, v in base.state_dict().items())
    assert changed(tmp_path)
    # Every logged anchor rationale is a stored one, the same text at every step.
    tokenizer = trainer.processing_class
    written = {tokenizer.decode(s["completion_ids"], skip_special_tokens=True) for s in stored}
    logged = [json.loads(line) for line in (tmp_path / "rationales.jsonl").open()]
    assert {s["anchor_rationale"] for s in logged} <= written
    # The live policy embeds them: equal to embedding the stored rationale by hand.
    texts = [s["text"] for s in stored[:2]]
    embedded, _ = trainer.anchor_embeddings(trainer.model, texts)
    again, _ = frozen_anchors.embed(trainer.model, texts, reward.prefix_length)
    assert torch.allclose(embedded, again)
    by_frozen, _ = frozen_anchors.embed(frozen_anchors.model, texts, reward.prefix_length)
    assert not torch.allclose(embedded, by_frozen)


def test_a_resumed_run_reuses_its_frozen_anchors(tmp_path):
    config = load_config(
        "tiny", [f"output_dir={tmp_path}", "max_steps=3", "save_steps=1", "reward.anchors=frozen"]
    )
    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Interrupt(at=2)])
    before = (tmp_path / "anchors.jsonl").read_text().splitlines()
    trained_model(config)
    after = (tmp_path / "anchors.jsonl").read_text().splitlines()
    assert after[: len(before)] == before  # kept, only new texts appended
    assert len(after) == len({json.loads(line)["text"] for line in after})
    # A last line cut by a crash is sampled again, not a JSONDecodeError.
    from grace.train import FrozenAnchors

    (tmp_path / "anchors.jsonl").write_text("\n".join([*before, before[-1][:20]]) + "\n")
    model, tokenizer = build_tiny_random()
    kept = FrozenAnchors(config, tokenizer, model)
    assert len(kept.completions) == len(before)


def test_a_lora_run_saves_its_adapters_and_loads_them_at_the_base_precision(tmp_path):
    """A LoRA run on a bf16 base saves its adapters alone, naming the base as the run named
    it. Loaded in bf16 (as on a bf16 GPU) the base stays bf16 and the adapters keep their
    trained fp32 values, unmerged (merged into bf16, a small update mostly rounds away); in
    fp32 they are merged, and embed as the model that trained."""
    from peft import PeftModel

    from grace.encoder import EncoderConfig, GraceEncoder

    trainer = run(tmp_path, "lora=true", "adaptation.dtype=bfloat16", "learning_rate=5e-2")
    assert (tmp_path / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "model.safetensors").exists()  # the base is not copied
    assert (
        json.loads((tmp_path / "adapter_config.json").read_text())["base_model_name_or_path"]
        == "tiny-random"
    )
    trained = {
        name.replace(".default", ""): weight.detach().clone()
        for name, weight in trainer.model.named_parameters()
        if "lora_" in name
    }
    assert {w.dtype for w in trained.values()} == {torch.float32}

    in_bf16, tokenizer = load_model(str(tmp_path), device="cpu", dtype=torch.bfloat16)
    assert isinstance(in_bf16, PeftModel)
    weights = dict(in_bf16.named_parameters())
    assert {w.dtype for n, w in weights.items() if "lora_" not in n} == {torch.bfloat16}
    loaded = {n.replace(".default", ""): w for n, w in weights.items() if "lora_" in n}
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(loaded[n], trained[n]) for n in trained)

    in_fp32, _ = load_model(str(tmp_path), device="cpu")
    assert not isinstance(in_fp32, PeftModel)  # merged: a plain model
    texts = ["a chef opens a restaurant", "the war drags on", "two friends fall out"]
    settings = EncoderConfig(mode="direct")
    reference = trainer.model.to(torch.float32)  # unmerged: base + adapters, in fp32
    ours = GraceEncoder(in_fp32, tokenizer, settings).encode(texts)
    theirs = GraceEncoder(reference, tokenizer, settings).encode(texts)
    assert (ours * theirs).sum(axis=1).min() >= 0.9999
    base = GraceEncoder(load_model("tiny-random", device="cpu")[0], tokenizer, settings)
    assert (ours * base.encode(texts)).sum(axis=1).min() < 0.9999  # the update is there


def test_a_kl_to_the_starting_model_trains_with_a_model_built_in_memory(tmp_path):
    """beta > 0: trl loads the reference from the policy's path, which the tiny model lacks."""
    trainer = run(tmp_path, "grpo.beta=0.1", "learning_rate=5e-2")
    logged = [h["kl"] for h in trainer.state.log_history if "kl" in h]
    assert len(logged) == 2 and logged[-1] > 0  # the policy moved away from the reference
    reference, _ = load_model(str(tmp_path / "reference"), device="cpu")
    base, _ = build_tiny_random()
    assert all(
        torch.equal(a, b)
        for a, b in zip(reference.state_dict().values(), base.state_dict().values(), strict=True)
    )


WORKER = """
import sys, torch
from accelerate import Accelerator
from grace.config import load_config
from grace.train import terms_over_processes

accelerator = Accelerator(cpu=True)
config = load_config("tiny", {"run.setting": sys.argv[1]})
groups, n, width = 2, 3, 8  # per process
torch.manual_seed(0)  # the same batch of 4 groups in every process
samples = torch.nn.functional.normalize(torch.randn(4, n, width), dim=-1)
anchors = torch.nn.functional.normalize(torch.randn(2, 4, width), dim=-1)  # queries, negatives
hit_cap = torch.zeros(4, n, dtype=torch.bool)
hit_cap[3, 1] = True
mine = slice(accelerator.process_index * groups, (accelerator.process_index + 1) * groups)
local_anchors = anchors[:, mine].reshape(-1, width)
if sys.argv[1] == "unsupervised":
    local_anchors = anchors[0, mine]
_, rewards = terms_over_processes(
    config, local_anchors, samples[mine], hit_cap[mine], True, accelerator
)
torch.save(rewards, f"{sys.argv[2]}/rank{accelerator.process_index}.pt")
"""


@pytest.mark.parametrize("setting", ["supervised", "unsupervised"])
def test_two_processes_reward_their_groups_as_one_process_would(tmp_path, setting):
    """Under `accelerate launch`/torchrun (gloo, 2 CPU processes) each process scores its own
    slice of the batch; the cross-group term must still compare all groups."""
    import subprocess
    import sys

    from grace.train import terms_over_processes

    (tmp_path / "worker.py").write_text(WORKER)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launch, str(tmp_path / "worker.py"), setting, str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    together = torch.cat([torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)])

    torch.manual_seed(0)
    samples = torch.nn.functional.normalize(torch.randn(4, 3, 8), dim=-1)
    anchors = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
    hit_cap = torch.zeros(4, 3, dtype=torch.bool)
    hit_cap[3, 1] = True
    config = load_config("tiny", {"run.setting": setting})
    anchors = anchors.reshape(-1, 8) if setting == "supervised" else anchors[0]
    _, alone = terms_over_processes(config, anchors, samples, hit_cap, True)
    torch.testing.assert_close(together, alone)
    halves = [terms_over_processes(config, *part, True)[1] for part in (
        (anchors.view(-1, 4, 8)[:, :2].reshape(-1, 8), samples[:2], hit_cap[:2]),
        (anchors.view(-1, 4, 8)[:, 2:].reshape(-1, 8), samples[2:], hit_cap[2:]),
    )]  # fmt: skip
    assert not torch.allclose(torch.cat(halves), alone)  # scored apart, the cross term differs


def test_a_two_process_job_trains_one_run(tmp_path):
    """`ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 -m grace.cli train` (what
    `accelerate launch --cpu` does): one lock, one folder, one validation curve, and each step
    learns from both processes' prompts."""
    import os
    import subprocess
    import sys

    from grace.validation import DETAILS, prompts_per_step

    run = tmp_path / "run"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command = ["-m", "grace.cli", "train", "--config", "tiny", "--set", f"output_dir={run}"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [*launch, *command, "--set", "max_steps=2"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert is_finished(run, load_config("tiny", {"run.output_dir": str(run), "max_steps": 2}))
    points = [json.loads(line) for line in (run / DETAILS).read_text().splitlines()]
    assert [p["step"] for p in points] == [0, 1, 2]
    assert points[1]["prompts_seen"] == 2 * prompts_per_step(load_config("tiny"))


def test_only_the_main_process_writes_the_frozen_anchors(tmp_path, monkeypatch):
    import grace.train
    from grace.train import FrozenAnchors

    config = load_config("tiny", [f"output_dir={tmp_path}", "reward.anchors=frozen"])
    model, tokenizer = build_tiny_random()
    monkeypatch.setattr(grace.train, "is_main_process", lambda: False)
    other_rank = FrozenAnchors(config, tokenizer, model)
    ids = other_rank.completion_ids(["a first text", "a second text"])
    assert not (tmp_path / "anchors.jsonl").exists()  # sampled and kept in memory only
    monkeypatch.setattr(grace.train, "is_main_process", lambda: True)
    main_rank = FrozenAnchors(config, tokenizer, model)
    assert main_rank.completion_ids(["a first text", "a second text"]) == ids  # same seed
    assert len((tmp_path / "anchors.jsonl").read_text().splitlines()) == 2


def test_several_gpus_without_a_launcher_are_one_line_before_anything_is_touched(
    tmp_path, monkeypatch, capsys
):
    from grace.cli import main
    from grace.train import check_machine

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--set", f"output_dir={run}"]) == 2
    err = capsys.readouterr().err
    assert "4 GPUs are visible" in err and "accelerate launch --num_processes 4" in err
    assert "Traceback" not in err and not run.exists()
    monkeypatch.setenv("WORLD_SIZE", "4")  # under the launcher: one GPU per process
    check_machine(load_config("tiny"))
