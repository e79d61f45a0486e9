"""The cheaper GRPO step (grace.rollouts) computes what the plain path computes."""

import json

import pytest
import torch
from conftest import eos_biased
from trl.trainer.utils import add_fused_lm_head

from grace.config import load_config
from grace.models import build_tiny_random
from grace.prompts import SYSTEM_PROMPT, build_prompts, prompt_token_ids, system_prefix_length
from grace.rationale import (
    SamplingConfig,
    embed_rollouts,
    eos_token_ids,
    generate_rationales,
    rollouts_from_completions,
    row_seeds,
)
from grace.rewards import RewardConfig, group_advantages, supervised_rewards, supervised_terms
from grace.rollouts import capped_rows, rollout_seeds, sample_rollouts, shared_prefix_logps
from grace.train import build_grpo_trainer

TEXTS = [
    "The cat sat on the mat.",
    "Stocks fell sharply on Monday after the central bank raised rates again.",
    "hi",
]


def sampled_and_second_pass(model, tokenizer, max_new_tokens: int):
    """Three groups (3, 3 and 1 rows, the last greedy) sampled once; and the same rollouts
    embedded again by a second forward pass."""
    prompts = build_prompts(tokenizer, TEXTS, SYSTEM_PROMPT, 256)
    ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    rows = [0, 0, 0, 1, 1, 1, 2]
    prefix = system_prefix_length(tokenizer, SYSTEM_PROMPT)
    sampled = sample_rollouts(
        model,
        [ids[r] for r in rows],
        [1.0] * 6 + [0.0],
        max_new_tokens,
        eos_token_ids(model, tokenizer),
        tokenizer.pad_token_id,
        prefix,
        seeds=rollout_seeds([ids[r] for r in rows], seed=0, step=0),
    )
    rollouts = rollouts_from_completions(
        tokenizer, [prompts[r] for r in rows], sampled.completion_ids, model.device
    )
    return sampled, embed_rollouts(model, rollouts, prefix), [ids[r] for r in rows]


def test_embeddings_from_sampling_equal_a_second_pass(tiny):
    sampled, second_pass, _ = sampled_and_second_pass(*tiny, max_new_tokens=12)
    cosine = (sampled.embeddings * second_pass).sum(dim=-1)
    assert cosine.min() > 0.9999
    assert all(len(c) == 12 for c in sampled.completion_ids)  # random model: no EOS
    assert sampled.hit_cap.all()


@pytest.mark.smollm2
def test_embeddings_from_sampling_equal_a_second_pass_on_smollm2(smollm2):
    model, tokenizer = smollm2
    sampled, second_pass, _ = sampled_and_second_pass(model, tokenizer, max_new_tokens=24)
    cosine = (sampled.embeddings * second_pass).sum(dim=-1)
    assert cosine.min() > 0.9999
    # Some rollouts end early (EOS): their states after EOS stay out of the mean.
    lengths = [len(c) for c in sampled.completion_ids]
    assert sampled.hit_cap.tolist() == [
        n == 24 and 2 not in c for n, c in zip(lengths, sampled.completion_ids, strict=True)
    ]


def test_greedy_rows_match_generate(tiny):
    """The decoding loop (shared prefill, one cache per row) is generate's: greedy rows agree."""
    model, tokenizer = tiny
    prompts = build_prompts(tokenizer, TEXTS, SYSTEM_PROMPT, 256)
    ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    rows = [ids[0], ids[0], ids[1], ids[2]]
    eos, pad = eos_token_ids(model, tokenizer), tokenizer.pad_token_id
    sampled = sample_rollouts(model, rows, [0.0] * 4, 10, eos, pad, 0, seeds=[0] * 4)
    for row, completion in zip(rows, sampled.completion_ids, strict=True):
        out = model.generate(
            input_ids=torch.tensor([row]),
            max_new_tokens=10,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )
        assert out[0, len(row) :].tolist()[: len(completion)] == completion


@pytest.mark.parametrize("top_p", [1.0, 0.7])
def test_a_training_rollout_depends_on_its_prompt_seed_and_draw_only(tiny, top_p):
    """The trainer's sampler draws each row from its own stream: a rollout is the same alone
    or among other rows, and it is the rationale the encoder samples with that seed."""
    model, tokenizer = tiny
    model = eos_biased(model, tokenizer, 4.0)  # rows end at different steps
    prompts = build_prompts(tokenizer, TEXTS, SYSTEM_PROMPT, 256)
    ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    eos, pad = eos_token_ids(model, tokenizer), tokenizer.pad_token_id
    prefix = system_prefix_length(tokenizer, SYSTEM_PROMPT)

    def rollouts(rows: list[int], draws: list[int], temperature: float = 0.8) -> list[list[int]]:
        seeds = row_seeds([prompts[r] for r in rows], 7, draws)
        batch = [ids[r] for r in rows]
        temperatures = [temperature] * len(rows)
        return sample_rollouts(
            model, batch, temperatures, 10, eos, pad, prefix, seeds=seeds, top_p=top_p
        ).completion_ids

    together = rollouts([0, 0, 1, 2], [0, 1, 0, 0])
    assert together[0] != together[1]  # two draws of one prompt differ
    assert [rollouts([r], [d])[0] for r, d in [(0, 0), (0, 1), (1, 0), (2, 0)]] == together
    assert rollouts([2, 1, 0, 0], [0, 0, 1, 0])[::-1] == together  # other order, neighbours
    encoder = generate_rationales(
        model, tokenizer, [prompts[0], prompts[0], prompts[1], prompts[2]],
        SamplingConfig(temperature=0.8, top_p=top_p, max_new_tokens=10, seed=7),
        draws=[0, 1, 0, 0],
    )  # fmt: skip
    assert together == [
        row[mask].tolist()
        for row, mask in zip(encoder.completion_ids, encoder.completion_mask, strict=True)
    ]


def test_a_training_step_seeds_rows_by_run_seed_step_prompt_and_repeat():
    first = rollout_seeds([[1, 2], [1, 2], [3]], seed=0, step=5)
    assert first[0] != first[1]  # the second rollout of a group is another draw
    assert rollout_seeds([[3], [1, 2]], seed=0, step=5) == [first[2], first[0]]
    assert rollout_seeds([[1, 2]], seed=0, step=6) != first[:1]  # a new step, new draws
    assert rollout_seeds([[1, 2]], seed=1, step=5) != first[:1]


def test_shared_prefix_logps_equal_the_full_forward_pass(tiny):
    """Log-probabilities, entropies and gradients of trl's loss forward, each prompt run once."""
    model, tokenizer = tiny
    model = type(model)(model.config)  # a fresh copy to patch with trl's fused head
    model.load_state_dict(tiny[0].state_dict())
    add_fused_lm_head(model, outputs=("log_probs", "entropy"))
    prompts = build_prompts(tokenizer, TEXTS, SYSTEM_PROMPT, 256)
    ids = [prompt_token_ids(tokenizer, p) for p in prompts]
    rows = [0, 1, 0, 2, 1, 0]  # shuffled groups, as in trl's micro-batches
    width, completion = max(len(i) for i in ids), 7
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.full((len(rows), width + completion), tokenizer.pad_token_id)
    mask = torch.zeros_like(input_ids)
    for k, r in enumerate(rows):
        input_ids[k, width - len(ids[r]) : width] = torch.tensor(ids[r])
        mask[k, width - len(ids[r]) : width] = 1
        length = 3 + k % 5  # right-padded completions of several lengths
        tokens = torch.randint(10, model.config.vocab_size, (length,), generator=generator)
        input_ids[k, width : width + length] = tokens
        mask[k, width : width + length] = 1

    def gradients(logps):
        model.zero_grad()
        (logps * mask[:, -completion:]).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    labels = input_ids.masked_fill(mask == 0, -100)
    labels[:, :-completion] = -100
    full = model(input_ids=input_ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    full_logps = full.log_probs[:, -completion:]
    shared_logps, shared_entropy = shared_prefix_logps(model, input_ids, mask, completion, True)
    torch.testing.assert_close(shared_logps, full_logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared_entropy, full.entropy[:, -completion:], atol=1e-5, rtol=1e-5)
    full_grads = gradients(full_logps)
    shared_grads = gradients(shared_prefix_logps(model, input_ids, mask, completion, False)[0])
    for a, b in zip(full_grads, shared_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def unit(*shape):
    return torch.nn.functional.normalize(torch.randn(*shape), dim=-1)


def test_the_negative_rollout_does_not_change_paper_advantages():
    torch.manual_seed(0)
    query, positives, negative = unit(3, 8), unit(3, 4, 8), unit(3, 8)
    hit_cap = torch.zeros(3, 4, dtype=torch.bool)
    config = RewardConfig(length_penalty=None)
    with_negative = supervised_rewards(query, positives, negative, hit_cap, config)
    without = supervised_rewards(query, positives, None, hit_cap, config)
    assert not torch.allclose(with_negative.total, without.total)  # the rewards differ ...
    torch.testing.assert_close(  # ... by a constant per group: the advantages do not
        group_advantages(with_negative.total), group_advantages(without.total)
    )
    # The contrastive variant compares every rollout with the negative: it cannot do without.
    with pytest.raises(ValueError, match="needs the negative rollout"):
        supervised_terms(query, positives, None, hit_cap, RewardConfig(variant="contrastive"))


def test_negative_rollouts_are_skipped_only_where_nothing_trained_changes():
    assert not RewardConfig(length_penalty=None).negative_every_step
    assert RewardConfig(length_penalty=None, negative_rollouts="always").negative_every_step
    assert RewardConfig(length_penalty=None, variant="contrastive").negative_every_step
    # A capped rollout's fixed penalty does not move with its group's negative term.
    assert RewardConfig().negative_every_step
    with pytest.raises(ValueError, match="negative_rollouts"):
        RewardConfig(negative_rollouts="never")
    # Part of a run's identity: the advantages of given rollouts are the same either way, but
    # fewer rollouts draw fewer random numbers, so later rollouts (and weights) differ.
    config = load_config("tiny")
    assert (
        config.settings_hash() != config.with_changes(["negative_rollouts=always"]).settings_hash()
    )


def short_config(tmp_path, *overrides):
    return load_config(
        "tiny", [f"output_dir={tmp_path}", "validation.every=0", "max_steps=4", *overrides]
    )


def test_supervised_negatives_are_rolled_out_on_logging_steps_only(tmp_path):
    config = short_config(tmp_path, "logging_steps=2", "sample_every=0")
    trainer = build_grpo_trainer(config)
    reward = trainer.grace_reward
    batches = []
    original = reward.__call__

    def spy(*args, **kwargs):
        batches.append(trainer.grace_rollouts)
        return original(*args, **kwargs)

    trainer.reward_funcs[0] = spy
    trainer.train()
    groups = config.grpo.prompts_per_generation
    # Steps 1 and 3 (0-based) end at global steps 2 and 4, which log.
    assert [b.has_negatives for b in batches] == [False, True, False, True]
    assert [len(b.anchors) for b in batches] == [groups, 2 * groups, groups, 2 * groups]
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logged] == [2, 4]
    for entry in logged:  # each logged value comes from the steps that rolled the negative out
        assert {"grace/negative", "grace/total", "reward"} <= set(entry)


def test_the_contrastive_variant_rolls_the_negative_out_at_every_step(tmp_path):
    config = short_config(
        tmp_path, "max_steps=2", "logging_steps=2", "sample_every=0", "variant=contrastive"
    )
    trainer = build_grpo_trainer(config)
    seen = []
    original = trainer.grace_reward.__call__

    def spy(*args, **kwargs):
        seen.append(trainer.grace_rollouts.has_negatives)
        return original(*args, **kwargs)

    trainer.reward_funcs[0] = spy
    trainer.train()
    assert seen == [True, True]


def test_fast_and_reference_paths_score_the_same_rollouts_alike(tmp_path):
    """The new path's rollout embeddings against the reference's second pass over the same
    completions, with the same weights (inside the reward call, before the update)."""
    config = short_config(tmp_path, "max_steps=2")
    trainer = build_grpo_trainer(config)
    reward = trainer.grace_reward
    checked = []
    original = reward.__call__

    def spy(*args, **kwargs):
        batch = trainer.grace_rollouts
        second = trainer.embed_completions(trainer.model, kwargs["text"], kwargs["completion_ids"])
        eos, cap_length = trainer.eos_token_ids, trainer.max_completion_length
        cap = capped_rows(kwargs["completion_ids"], eos, cap_length, second.device)
        checked.append(((batch.embeddings * second).sum(dim=-1).min(), cap, batch.hit_cap))
        return original(*args, **kwargs)

    trainer.reward_funcs[0] = spy
    trainer.train()
    assert len(checked) == 2
    for cosine, cap, fast_cap in checked:
        assert cosine > 0.9999 and cap.tolist() == fast_cap.tolist()


def test_the_old_path_still_trains(tmp_path):
    trainer = build_grpo_trainer(short_config(tmp_path, "max_steps=1"), single_pass=False)
    trainer.train()
    assert trainer.grace_seconds["embed_rollouts"] and not trainer.grace_seconds["decode"]
    samples = [
        json.loads(line) for line in (tmp_path / "rationales.jsonl").read_text().splitlines()
    ]
    assert samples[0]["step"] == 0


@pytest.mark.parametrize("lora", [False, True])
def test_only_the_top_layers_train(tmp_path, lora):
    config = short_config(
        tmp_path, "max_steps=1", "train_top_layers=1", f"lora={str(lora).lower()}"
    )
    trainer = build_grpo_trainer(config)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(".layers.1." in n or "model.norm" in n for n in trainable)
    if lora:
        assert all("lora_" in n for n in trainable)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    for name, value in trainer.model.named_parameters():
        if name not in trainable:
            assert torch.equal(value, before[name]), name
    assert any(not torch.equal(trainer.model.get_parameter(n), before[n]) for n in trainable)


def test_training_only_the_top_layers_is_another_run():
    config = load_config("tiny")
    changed = config.with_changes(["train_top_layers=1"])
    assert changed.training_settings()["adaptation"]["train_top_layers"] == 1
    assert changed.settings_hash() != config.settings_hash()


def test_one_micro_batch_or_two_train_the_same_weights(tmp_path):
    """trl's loss (dapo) divides by the tokens of the whole generation batch, so the micro-batch
    layout only changes how much is computed at once (and how many prompts share a prefix)."""
    weights = []
    for layout in (
        ["per_device_train_batch_size=4", "gradient_accumulation_steps=2"],
        ["per_device_train_batch_size=8", "gradient_accumulation_steps=1"],
    ):
        trainer = build_grpo_trainer(short_config(tmp_path / layout[0], "max_steps=1", *layout))
        trainer.train()
        weights.append({n: p.detach().clone() for n, p in trainer.model.named_parameters()})
    first, second = weights
    untrained = dict(build_tiny_random()[0].named_parameters())
    assert any(not torch.allclose(value, untrained[name]) for name, value in first.items())
    # Two micro-batches sum the loss in another order. Adam's first step divides each gradient by
    # its own size, so where a gradient is near zero a 1e-7 reordering difference moves the weight
    # by ~1e-6 (seen once in a full-suite run: 1.1e-6); 1e-5 is 1 % of one step at lr 1e-3.
    for name, value in first.items():
        torch.testing.assert_close(value, second[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("single_pass", [True, False])
def test_rollouts_are_sampled_under_the_runs_mixed_precision(tmp_path, monkeypatch, single_pass):
    """accelerate wraps its autocast around the model's forward only, and GRACE's sampler and
    the reward's second pass (after trl's own sampling) call the decoder themselves: the
    trainer enters the run's autocast around them. CPU bf16 autocast stands in for a GPU's
    bf16 or fp16 (none here)."""
    import grace.rollouts

    trainer = build_grpo_trainer(short_config(tmp_path, "max_steps=1"), single_pass=single_pass)
    bf16 = lambda *args, **kwargs: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    monkeypatch.setattr(trainer.accelerator, "autocast", bf16)
    inside, dtypes = [], []

    def watched(function):
        def call(*args, **kwargs):
            inside.append(True)
            try:
                return function(*args, **kwargs)
            finally:
                inside.pop()

        return call

    if single_pass:
        monkeypatch.setattr(grace.rollouts, "sample_rollouts", watched(sample_rollouts))
    else:
        monkeypatch.setattr(trainer, "_second_pass", watched(trainer._second_pass))

    def record(module, args, output):
        if inside:  # a matrix product's output: the residual stream stays fp32 under autocast
            dtypes.append(output.dtype)

    hook = trainer.model.get_decoder().layers[0].mlp.register_forward_hook(record)
    try:
        trainer.train()
    finally:
        hook.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}
    pooled = trainer.grace_rollouts.embeddings
    assert pooled.dtype == torch.float32 and pooled.isfinite().all()  # pooled in fp32
