import pytest
import torch
from conftest import eos_biased

from grace.prompts import SYSTEM_PROMPT, build_prompts, system_prefix_length
from grace.rationale import SamplingConfig, completion_mask, embed_rollouts, generate_rationales


def test_completion_mask_keeps_tokens_up_to_first_eos():
    ids = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 2, 0, 0]])
    assert completion_mask(ids, [2]).tolist() == [
        [True, True, False, False],
        [True, True, True, True],
        [True, False, False, False],
    ]


def test_rollouts_have_aligned_ids_masks_and_texts(tiny, texts):
    model, tokenizer = tiny
    prompts = build_prompts(tokenizer, texts[:3], SYSTEM_PROMPT, 1024)
    rollouts = generate_rationales(model, tokenizer, prompts, SamplingConfig(max_new_tokens=6))
    assert rollouts.completion_ids.shape == (3, 6)
    assert rollouts.input_ids.shape == rollouts.attention_mask.shape
    assert rollouts.hit_cap.all()  # a random model almost never samples EOS in 6 tokens
    decoded = tokenizer.batch_decode(rollouts.completion_ids, skip_special_tokens=True)
    assert rollouts.texts == decoded


def test_seed_makes_sampling_reproducible(tiny, texts):
    model, tokenizer = tiny
    prompts = build_prompts(tokenizer, texts[:2], SYSTEM_PROMPT, 1024)

    def sample(seed):
        config = SamplingConfig(max_new_tokens=8, seed=seed)
        return generate_rationales(model, tokenizer, prompts, config).completion_ids

    assert torch.equal(sample(1), sample(1))
    assert not torch.equal(sample(1), sample(2))


def test_eos_ends_completion_and_is_not_a_cap_hit(tiny, texts):
    model, tokenizer = tiny
    model = eos_biased(model, tokenizer, bias=100.0)
    prompts = build_prompts(tokenizer, texts[:2], SYSTEM_PROMPT, 1024)
    rollouts = generate_rationales(model, tokenizer, prompts, SamplingConfig(max_new_tokens=5))
    assert not rollouts.hit_cap.any()
    assert rollouts.completion_mask[:, 0].all() and not rollouts.completion_mask[:, 1:].any()
    assert rollouts.texts == ["", ""]


@pytest.mark.parametrize("bias", [0.0, 6.0])  # 6.0: some rows stop early, others run on
def test_single_pass_states_equal_a_second_forward_pass(tiny, texts, bias):
    model, tokenizer = tiny
    model = eos_biased(model, tokenizer, bias)
    prefix = system_prefix_length(tokenizer, SYSTEM_PROMPT)
    prompts = build_prompts(tokenizer, texts, SYSTEM_PROMPT, 1024)
    config = SamplingConfig(max_new_tokens=12, seed=3)
    rollouts = generate_rationales(model, tokenizer, prompts, config, keep_hidden=True)
    single = embed_rollouts(model, rollouts, prefix)
    rollouts.hidden = None
    second = embed_rollouts(model, rollouts, prefix)
    assert (single * second).sum(-1).min() > 0.9999


def test_the_second_pass_in_parts_equals_one_pass(tiny, texts, monkeypatch):
    import grace.rationale

    model, tokenizer = tiny
    prefix = system_prefix_length(tokenizer, SYSTEM_PROMPT)
    prompts = build_prompts(tokenizer, texts, SYSTEM_PROMPT, 1024)
    rollouts = generate_rationales(model, tokenizer, prompts, SamplingConfig(max_new_tokens=6))
    assert rollouts.hidden is None and len(texts) > 2
    whole = embed_rollouts(model, rollouts, prefix)
    monkeypatch.setattr(grace.rationale, "PREFILL_ROWS", 2)  # parts of 2 rows and a remainder
    parts = embed_rollouts(model, rollouts, prefix)
    assert parts.shape == whole.shape and torch.allclose(parts, whole, atol=1e-6)


@pytest.mark.smollm2
def test_smollm2_single_pass_matches_second_pass(smollm2, texts):
    model, tokenizer = smollm2
    prefix = system_prefix_length(tokenizer, SYSTEM_PROMPT)
    prompts = build_prompts(tokenizer, texts[:3], SYSTEM_PROMPT, 1024)
    config = SamplingConfig(max_new_tokens=16, seed=0)
    rollouts = generate_rationales(model, tokenizer, prompts, config, keep_hidden=True)
    single = embed_rollouts(model, rollouts, prefix)
    rollouts.hidden = None
    second = embed_rollouts(model, rollouts, prefix)
    assert (single * second).sum(-1).min() > 0.9999


@pytest.mark.parametrize(
    ("bias", "top_p"),
    [(0.0, 1.0), (0.0, 0.7), (4.0, 1.0)],  # bias 4: rows stop at different steps
)
def test_a_rationale_depends_on_its_prompt_seed_and_draw_only(tiny, texts, bias, top_p):
    model, tokenizer = tiny
    model = eos_biased(model, tokenizer, bias)
    prompts = build_prompts(tokenizer, texts, SYSTEM_PROMPT, 1024)
    config = SamplingConfig(max_new_tokens=10, top_p=top_p, seed=7)

    def completions(rows, draws=None):
        rollouts = generate_rationales(model, tokenizer, rows, config, draws=draws)
        return [
            ids[mask].tolist()
            for ids, mask in zip(rollouts.completion_ids, rollouts.completion_mask, strict=True)
        ]

    together = completions(prompts)
    assert together == [completions([p])[0] for p in prompts]  # alone
    assert together == completions(prompts[::-1])[::-1]  # another order, other neighbours
    assert together[1:3] == completions(prompts[1:3])  # another batch size
    assert together[0] == completions(prompts[:2] + prompts[:1], draws=[0, 0, 1])[0]
    other_draw = completions(prompts[:1], draws=[1])[0]
    assert other_draw != together[0]  # draw j of a text has its own seed


def test_temperature_zero_is_greedy_and_negative_is_refused(tiny, texts):
    model, tokenizer = tiny
    prompts = build_prompts(tokenizer, texts[:2], SYSTEM_PROMPT, 1024)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=6)
    greedy = generate_rationales(model, tokenizer, prompts, sampling)
    mask = greedy.attention_mask[:, :-1]
    logits = model(
        input_ids=greedy.input_ids[:, :-1],
        attention_mask=mask,
        position_ids=(mask.long().cumsum(dim=1) - 1).clamp(min=0),
    ).logits
    start = greedy.prompt_ids.shape[1] - 1
    assert torch.equal(logits[:, start:].argmax(-1), greedy.completion_ids)  # each step's argmax
    for bad in (
        dict(temperature=-1.0),
        dict(temperature=float("nan")),
        dict(top_p=0.0),
        dict(max_new_tokens=0),
    ):
        with pytest.raises(ValueError):
            SamplingConfig(**bad)
