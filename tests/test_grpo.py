import pytest
import torch

from grace.config import load_config
from grace.grpo import clipped_grpo_loss, completion_logps
from grace.prompts import build_prompts
from grace.rationale import tokenize_prompts
from grace.train import build_grpo_trainer


def test_the_loss_by_hand_equals_trls_on_the_same_batch(tmp_path):
    """The book's GRPO step by hand must not drift from what the trainer minimises."""
    trainer = build_grpo_trainer(load_config("tiny", [f"output_dir={tmp_path}"]))
    model, tokenizer = trainer.model, trainer.processing_class
    texts = ["a chef opens a restaurant in Paris", "a war drags on", "two friends"] * 2
    prompt_ids, prompt_mask = tokenize_prompts(
        tokenizer, build_prompts(tokenizer, texts, trainer.grace_reward.policy.system_prompt, 64),
        model.device,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    completion_ids = torch.randint(5, 100, (len(texts), 7), generator=generator)
    lengths = torch.tensor([7, 3, 5, 7, 1, 6])
    completion_mask = (torch.arange(7)[None] < lengths[:, None]).long()
    advantages = torch.randn(len(texts), generator=generator)
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    model.eval()
    with torch.no_grad():
        current = completion_logps(model, input_ids, attention_mask, 7)
    # An older policy, so that some ratios leave [0.8, 1.2] and the clip binds.
    old = current + 0.4 * torch.randn(current.shape, generator=generator)
    inputs = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "advantages": advantages,
        "old_per_token_logps": old,
        "num_items_in_batch": completion_mask.sum(),
    }
    with torch.no_grad():
        by_trl = trainer._compute_loss(model, inputs)
        by_hand = clipped_grpo_loss(current, old, advantages, completion_mask, epsilon=0.2)
    ratio = torch.exp(current - old)[completion_mask.bool()]
    assert ((ratio < 0.8) | (ratio > 1.2)).any()  # the comparison exercises the clip
    assert by_hand.item() == pytest.approx(by_trl.item(), rel=1e-4, abs=1e-6)


def test_with_one_update_per_batch_the_loss_is_reinforce_with_the_advantage():
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    advantages = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    loss = clipped_grpo_loss(logps, logps.detach(), advantages, mask)
    assert loss.item() == pytest.approx(-(1 + 1 - 2) / 3)  # ratio 1: -mean of A per token
    loss.backward()
    # d loss / d log pi = -A / (number of tokens), zero on padding
    assert torch.allclose(logps.grad, torch.tensor([[-1 / 3, -1 / 3], [2 / 3, 0.0]]))


def test_the_kl_term_is_zero_at_the_reference_and_positive_away_from_it():
    logps = torch.log(torch.tensor([[0.5, 0.2]]))
    mask = torch.ones(1, 2)
    zero_advantage = torch.zeros(1)
    at_ref = clipped_grpo_loss(logps, logps, zero_advantage, mask, beta=0.1, ref_logps=logps)
    assert at_ref.item() == pytest.approx(0.0)
    ref = torch.log(torch.tensor([[0.25, 0.4]]))
    away = clipped_grpo_loss(logps, logps, zero_advantage, mask, beta=0.1, ref_logps=ref)
    by_hand = 0.1 * sum(r / p - torch.log(torch.tensor(r / p)) - 1 for r, p in [(0.5, 1), (2, 1)])
    assert away.item() == pytest.approx(float(by_hand) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="reference model"):
        clipped_grpo_loss(logps, logps, zero_advantage, mask, beta=0.1)
