"""The GRPO objective written out: what trl's ``GRPOTrainer`` minimises, in a few lines of torch.

The trainer (``grace.train``) uses trl; this module is the same loss by hand, for the book's
"one GRPO step by hand" and for a test that keeps the two equal. With this project's settings
trl uses the ``dapo`` normalisation: the clipped per-token terms are summed over every
completion token of the generation batch and divided by their number.
"""

from __future__ import annotations

import torch


def completion_logps(
    model,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    completion_length: int,
    temperature: float = 1.0,
) -> torch.Tensor:
    """(B, T) log-probability of each of the last ``completion_length`` tokens given the
    tokens before it, from logits divided by the sampling temperature (as trl scores them)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    logits = logits[:, -completion_length - 1 : -1].float() / temperature  # position t predicts t+1
    targets = input_ids[:, -completion_length:]
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def clipped_grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    epsilon: float = 0.2,
    beta: float = 0.0,
    ref_logps: torch.Tensor | None = None,
) -> torch.Tensor:
    """The clipped policy-gradient loss of one batch of completions.

    Per token, with ratio ρ = π_θ / π_old and A the rollout's advantage::

        loss_t = -min(ρ A, clip(ρ, 1-ε, 1+ε) A) + β KL_t,
        KL_t = π_ref/π_θ - log(π_ref/π_θ) - 1          (an unbiased estimate, never < 0)

    averaged over the completion tokens (``mask``) of the batch. With one update per batch
    (as here) ρ = 1 and the gradient is plain REINFORCE with the group-relative advantage:
    -A ∇ log π_θ of every sampled token.
    """
    ratio = torch.exp(logps - old_logps)
    advantages = advantages.unsqueeze(1)  # one advantage per rollout, shared by its tokens
    per_token = -torch.min(ratio * advantages, ratio.clamp(1 - epsilon, 1 + epsilon) * advantages)
    if beta:
        if ref_logps is None:
            raise ValueError("beta > 0 needs the reference model's log-probabilities.")
        log_ref_ratio = ref_logps - logps
        per_token = per_token + beta * (torch.exp(log_ref_ratio) - log_ref_ratio - 1)
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
