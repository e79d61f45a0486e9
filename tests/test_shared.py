"""One prefill per text, every draw and length from one generation: equal to the unshared way."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from conftest import eos_biased

from grace.cli import main
from grace.encoder import GraceEncoder, Variant
from grace.evaluation import evaluate, report_path
from grace.evaluation.noise import length_curve
from grace.prompts import SYSTEM_PROMPT, build_prompts, system_prefix_length
from grace.rationale import (
    Branch,
    SamplingConfig,
    embed_rollouts,
    generate_rationales,
    generate_shared,
    pooled_states,
    rollouts_from_completions,
    tokenize_prompts,
)
from grace.runs import report_key


def unshared(model, tokenizer, prompts, branch, length, prefix):
    """What ``generate_rationales`` samples for one branch capped at ``length``, embedded."""
    sampling = dataclasses.replace(branch.sampling, max_new_tokens=length)
    draws = [branch.draw] * len(prompts)
    rollouts = generate_rationales(model, tokenizer, prompts, sampling, True, draws)
    completions = [
        ids[mask].tolist()
        for ids, mask in zip(rollouts.completion_ids, rollouts.completion_mask, strict=True)
    ]
    return completions, embed_rollouts(model, rollouts, prefix), rollouts.hit_cap


@pytest.mark.parametrize("share_prefix", [False, True])
@pytest.mark.parametrize(
    ("bias", "top_p"),
    [(0.0, 1.0), (4.0, 1.0), (3.0, 0.7)],  # bias: rows end at different steps, some early
)
def test_every_branch_and_length_equals_its_own_generation(tiny, texts, bias, top_p, share_prefix):
    model, tokenizer = tiny
    model = eos_biased(model, tokenizer, bias)
    prefix = system_prefix_length(tokenizer, SYSTEM_PROMPT)
    prompts = build_prompts(tokenizer, texts, SYSTEM_PROMPT, 1024)
    branches = [
        Branch(
            SamplingConfig(temperature=1.0, top_p=top_p, max_new_tokens=10, seed=5),
            draw=0,
            lengths=(1, 3, 6),
        ),
        Branch(SamplingConfig(temperature=1.0, top_p=top_p, max_new_tokens=6, seed=5), draw=1),
        Branch(SamplingConfig(temperature=0.5, top_p=top_p, max_new_tokens=6, seed=5), draw=2),
        Branch(
            SamplingConfig(temperature=0.0, top_p=top_p, max_new_tokens=8, seed=5),
            draw=0,
            lengths=(4,),
        ),  # greedy
    ]
    shared = generate_shared(model, tokenizer, prompts, branches, prefix, share_prefix=share_prefix)
    ended_early = 0
    for b, branch in enumerate(branches):
        for j, length in enumerate(branch.points):
            completions, embeddings, hit_cap = unshared(
                model, tokenizer, prompts, branch, length, prefix
            )
            assert [c[:length] for c in shared.completions[b]] == completions
            assert torch.allclose(shared.embeddings[b][:, j], embeddings, atol=2e-6)
            assert torch.equal(shared.hit_cap[b][:, j], hit_cap)
            ended_early += int((~hit_cap).sum())
    if bias:
        assert ended_early and shared.hit_cap[0][:, 0].any()  # both kinds of rows were seen

    # The direct embedding from the same prefill is direct mode's.
    alone = rollouts_from_completions(tokenizer, prompts, [[]] * len(prompts), "cpu")
    assert torch.allclose(shared.prompt_embeddings, embed_rollouts(model, alone, prefix), atol=1e-6)


@pytest.mark.parametrize("share_prefix", [False, True])
def test_prefill_in_parts_stacks_into_the_same_batch(tiny, texts, monkeypatch, share_prefix):
    from grace import rationale

    model, tokenizer = tiny
    prefix = system_prefix_length(tokenizer, SYSTEM_PROMPT)
    prompts = build_prompts(tokenizer, texts, SYSTEM_PROMPT, 1024)
    branches = [
        Branch(SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=6, seed=8), 0, (2,)),
        Branch(SamplingConfig(temperature=0.0, top_p=1.0, max_new_tokens=4, seed=8)),
    ]
    whole = generate_shared(model, tokenizer, prompts, branches, prefix, share_prefix=share_prefix)
    monkeypatch.setattr(rationale, "PREFILL_ROWS", 2)  # 5 prompts: parts of 2, 2 and 1
    parts = generate_shared(model, tokenizer, prompts, branches, prefix, share_prefix=share_prefix)
    assert parts.completions == whole.completions
    assert torch.allclose(parts.prompt_embeddings, whole.prompt_embeddings, atol=1e-6)
    for b in range(len(branches)):
        assert torch.allclose(parts.embeddings[b], whole.embeddings[b], atol=1e-6)


def test_long_generation_grows_the_cache_and_still_agrees(tiny, texts):
    model, tokenizer = tiny
    prefix = system_prefix_length(tokenizer, SYSTEM_PROMPT)
    prompts = build_prompts(tokenizer, texts[:3], SYSTEM_PROMPT, 1024)
    branch = Branch(
        SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=40, seed=4), 0, (33,)
    )  # room 32, then grown
    shared = generate_shared(model, tokenizer, prompts, [branch], prefix)
    for j, length in enumerate(branch.points):
        completions, embeddings, _ = unshared(model, tokenizer, prompts, branch, length, prefix)
        assert [c[:length] for c in shared.completions[0]] == completions
        assert torch.allclose(shared.embeddings[0][:, j], embeddings, atol=2e-6)


def test_known_completions_fed_at_once_equal_sampled_ones(tiny, texts):
    model, tokenizer = tiny
    model = eos_biased(model, tokenizer, 4.0)
    prefix = system_prefix_length(tokenizer, SYSTEM_PROMPT)
    prompts = build_prompts(tokenizer, texts, SYSTEM_PROMPT, 1024)
    branches = [
        Branch(SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=9, seed=1), 0, (2, 5)),
        Branch(SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=9, seed=1), 1),
    ]
    sampled = generate_shared(model, tokenizer, prompts, branches, prefix)
    known = [
        [completion if (i + b) % 2 else None for i, completion in enumerate(column)]
        for b, column in enumerate(sampled.completions)
    ]
    mixed = generate_shared(model, tokenizer, prompts, branches, prefix, known=known)
    assert mixed.completions == sampled.completions
    for b in range(len(branches)):
        assert torch.allclose(mixed.embeddings[b], sampled.embeddings[b], atol=1e-6)
        assert torch.equal(mixed.hit_cap[b], sampled.hit_cap[b])


def test_last_token_pooling_follows_the_same_rule(tiny, texts):
    model, tokenizer = tiny
    prefix = system_prefix_length(tokenizer, SYSTEM_PROMPT)
    prompts = build_prompts(tokenizer, texts[:3], SYSTEM_PROMPT, 1024)
    branch = Branch(SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=5, seed=2), 0, (2,))
    shared = generate_shared(model, tokenizer, prompts, [branch], prefix, pooling="last")
    for j, length in enumerate(branch.points):
        sampling = SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=length, seed=2)
        rollouts = generate_rationales(model, tokenizer, prompts, sampling, keep_hidden=True)
        expected = embed_rollouts(model, rollouts, prefix, pooling="last")
        assert torch.allclose(shared.embeddings[0][:, j], expected, atol=1e-6)


def separate(tiny, variant, **settings):
    """The unshared reference: an encoder of the variant's own settings, one row per draw."""
    changes = (
        {"mode": "direct"}
        if variant.max_new_tokens == 0
        else {
            "max_new_tokens": variant.max_new_tokens,
            "num_rationales": variant.draw + 1,
        }
    )
    if variant.temperature is not None:
        changes["temperature"] = variant.temperature
    encoder = GraceEncoder(*tiny, **(settings | changes))
    encoder.share_work = False
    return encoder


def test_a_shared_prefix_gives_the_same_embeddings_and_gradients_for_less_work(tiny, texts):
    model, tokenizer = tiny
    model.train()  # the baselines train through it: the gradients must agree too
    prefix = system_prefix_length(tokenizer, SYSTEM_PROMPT)
    prompts = build_prompts(tokenizer, texts, SYSTEM_PROMPT, 1024)
    ids, mask = tokenize_prompts(tokenizer, prompts, torch.device("cpu"))
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    tokens_seen = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda module, args, out: tokens_seen.append(args[0].numel())
    )
    found = {}
    try:
        for share in (False, True):
            model.zero_grad()
            tokens_seen.clear()
            embeddings = pooled_states(model, ids, mask, prefix, share_prefix=share)
            (embeddings @ direction).sum().backward()
            grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
            found[share] = embeddings.detach(), grads, sum(tokens_seen)
    finally:
        hook.remove()
        model.zero_grad()
        model.eval()
    (alone, grads_alone, work_alone), (shared, grads_shared, work_shared) = found[0], found[1]
    torch.testing.assert_close(shared, alone, atol=1e-5, rtol=1e-4)
    for a, b in zip(grads_shared, grads_alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    rows, width = ids.shape
    assert work_alone == rows * width
    assert work_shared == prefix + rows * (width - prefix)


def test_encode_variants_equal_separate_encoders_and_fill_the_cache(tiny, texts, tmp_path):
    settings = dict(max_new_tokens=4, num_rationales=3, seed=3, batch_size=6)
    variants = [Variant(4, None, j) for j in range(3)]
    variants += [Variant(4, 0, 0), Variant(0), Variant(2), Variant(7), Variant(7, 0.5, 1)]
    encoder = GraceEncoder(*tiny, cache_dir=str(tmp_path), **settings)
    encoded = encoder.encode_variants(texts, variants)
    assert encoder.generated == 5 * len(texts)  # draws 0-2, greedy and draw 1 at T 0.5
    for variant in variants:
        reference = separate(tiny, variant, **settings)
        draws, rationales = reference.encode_draws(texts)
        assert np.allclose(encoded.embeddings[variant], draws[:, variant.draw], atol=2e-6)
        assert encoded.rationales[variant] == [r[variant.draw] for r in rationales]
    assert encoded.hit_cap[Variant(7)].dtype == bool and not encoded.hit_cap[Variant(0)].any()
    assert all(encoded.seconds[v] >= encoded.prefill_seconds > 0 for v in variants)

    # Each length was stored under its own key: a plain encoder at 2 tokens samples nothing.
    again = GraceEncoder(
        *tiny, cache_dir=str(tmp_path), **(settings | dict(max_new_tokens=2, num_rationales=1))
    )
    cached = again.encode_draws(texts)[0][:, 0]
    assert again.generated == 0 and np.allclose(cached, encoded.embeddings[Variant(2)], atol=2e-6)
    # A longer cap than any stored samples again, and still continues the stored prefix.
    longer = GraceEncoder(*tiny, cache_dir=str(tmp_path), **settings)
    out = longer.encode_variants(texts, [Variant(2), Variant(7), Variant(9)])
    assert longer.generated == len(texts)
    for variant in (Variant(2), Variant(7)):
        assert np.allclose(out.embeddings[variant], encoded.embeddings[variant], atol=2e-6)


def test_encode_draws_shares_one_prefill_per_text(tiny, texts, monkeypatch):
    from grace import rationale

    calls = []
    original = rationale._prefill
    monkeypatch.setattr(
        rationale, "_prefill", lambda m, ids, *a: calls.append(ids.shape[0]) or original(m, ids, *a)
    )
    encoder = GraceEncoder(*tiny, max_new_tokens=3, num_rationales=4, batch_size=8)
    draws, _ = encoder.encode_draws(texts)
    assert sum(calls) == len(texts)  # not 4 * len(texts)
    reference = GraceEncoder(*tiny, max_new_tokens=3, num_rationales=4, batch_size=8)
    reference.share_work = False
    assert np.allclose(draws, reference.encode_draws(texts)[0], atol=2e-6)


SUITE = "LeeSTS"
ROW = dict(max_new_tokens=3, num_rationales=2, seed=0, batch_size=64, max_input_tokens=12)


@pytest.mark.filterwarnings("ignore:.*exceed max_input_tokens")
def test_evaluate_keys_each_report_by_what_decides_it(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(
        GraceEncoder,
        "from_pretrained",
        classmethod(lambda cls, name, device=None, **s: cls(*tiny, **s)),
    )
    row = evaluate(
        "tiny-random", SUITE, label="tiny", folder=tmp_path, greedy=True, lengths=[0, 1, 3], **ROW
    )
    key = report_key("tiny-random", SUITE, **ROW)
    assert row.main["key"] == key and row.main["label"] == "tiny"
    assert set(row.draws) == {"tiny (draw 1)", "tiny (draw 2)", "tiny (mean of 2)"}
    # The model's own embedding is the mean of its two draws: scored once, reported twice.
    assert row.main["tasks"] == row.draws["tiny (mean of 2)"]["tasks"]
    assert row.draws["tiny (draw 2)"]["key"] == key | {"variant": "draw 2"}
    assert row.greedy["key"] == report_key("tiny-random", SUITE, **(ROW | {"temperature": 0}))
    assert row.lengths[0]["key"] == report_key("tiny-random", SUITE, **(ROW | {"mode": "direct"}))
    one = ROW | {"mode": "rationale", "max_new_tokens": 1, "num_rationales": 1}
    assert row.lengths[1]["key"] == report_key("tiny-random", SUITE, **one)
    assert row.lengths[3] is row.draws["tiny (draw 1)"]  # the evaluation length is draw 1
    assert all("cost_seconds" in r for r in [row.main, *row.variants().values()])

    # Scores equal those of an encoder with each report's own settings, measured alone.
    from grace.evaluation.model import GraceMTEBModel

    for variant, report in [
        (Variant(1), row.lengths[1]),
        (Variant(0), row.lengths[0]),
        (Variant(3, 0, 0), row.greedy),
    ]:
        alone = GraceMTEBModel(separate(tiny, variant, **ROW))
        alone.encoder.share_work = False
        scores = [r["score"] for r in evaluate(alone, SUITE).main["tasks"]]
        assert scores == pytest.approx([r["score"] for r in report["tasks"]], abs=1e-5)

    # Everything is read back now: no model is loaded, nothing is generated.
    monkeypatch.setattr(GraceEncoder, "from_pretrained", None)
    again = evaluate("tiny-random", SUITE, label="tiny", folder=tmp_path, lengths=[0, 1, 3], **ROW)
    assert again.main["tasks"] == row.main["tasks"] and again.main["key"] == row.main["key"]
    table = length_curve({"tiny": again})
    assert list(table.index) == ["tiny, 0", "tiny, 1", "tiny, 3"]
    assert (table["eval seconds"] > 0).all()
    saved = json.loads(report_path(tmp_path, "tiny, 1 tokens").read_text())
    assert saved["cost_seconds"] == row.lengths[1]["cost_seconds"]


def test_cli_eval_scores_every_variant_from_one_pass(tmp_path, capsys):
    output = tmp_path / "report.json"
    args = ["eval", "--model", "tiny-random", "--suite", SUITE, "--device", "cpu"]
    args += ["--max-new-tokens", "2", "--num-rationales", "2", "--batch-size", "64"]
    assert main([*args, "--lengths", "0,1,2", "--greedy", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(output.read_text())
    label = "grace/tiny-random-rationale"
    assert report["label"] == label  # the mean of the two draws
    names = ["(draw 1)", "(draw 2)", "(greedy)", ", direct", ", 1 tokens"]
    assert list(report["variants"]) == [label + " " * name.startswith("(") + name for name in names]
    # The cap (2 tokens) is draw 1 itself, not a second report of it.
    assert "5 variants from the same pass" in printed and "| tiny-random" not in printed
    assert main([*args, "--mode", "direct", "--lengths", "0,4"]) == 2
    assert "this model embeds with direct mode" in capsys.readouterr().err


@pytest.mark.smollm2
def test_smollm2_shared_pass_equals_separate_generation(smollm2, texts):
    model, tokenizer = smollm2
    prefix = system_prefix_length(tokenizer, SYSTEM_PROMPT)
    prompts = build_prompts(tokenizer, texts[:3], SYSTEM_PROMPT, 1024)
    branches = [
        Branch(SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=24, seed=0), 0, (8,)),
        Branch(SamplingConfig(temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0), 1),
        Branch(SamplingConfig(temperature=0.0, top_p=1.0, max_new_tokens=8, seed=0), 0),
    ]
    shared = generate_shared(model, tokenizer, prompts, branches, prefix)
    for b, branch in enumerate(branches):
        for j, length in enumerate(branch.points):
            completions, embeddings, _ = unshared(model, tokenizer, prompts, branch, length, prefix)
            assert [c[:length] for c in shared.completions[b]] == completions
            assert (shared.embeddings[b][:, j] * embeddings).sum(-1).min() > 0.99999
    alone = rollouts_from_completions(tokenizer, prompts, [[]] * len(prompts), "cpu")
    direct = embed_rollouts(model, alone, prefix)
    assert (shared.prompt_embeddings * direct).sum(-1).min() > 0.99999


def test_a_cached_encoder_gives_the_direct_variant_alone(tiny, texts, tmp_path):
    encoder = GraceEncoder(*tiny, cache_dir=str(tmp_path), max_new_tokens=4)
    direct = encoder.encode_variants(texts, [Variant(0)]).embeddings[Variant(0)]
    plain = GraceEncoder(*tiny, mode="direct").encode(texts)
    assert np.allclose(direct, plain, atol=1e-5) and encoder.generated == 0
