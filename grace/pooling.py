"""Turn last-layer hidden states into one unit vector per sequence.

GRACE mean-pools every real token after the system prefix (user text, template tokens and the
generated rationale). Padding may sit on the left (generation) or the right (training
batches); masks are built from the attention mask, so both work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pooling_mask(attention_mask: torch.Tensor, prefix_length: int) -> torch.Tensor:
    """Attention mask with the first ``prefix_length`` real tokens of each row switched off.

    The position of a token among its row's real tokens is the running count of ones, which
    is the same whether the padding is on the left or on the right.
    """
    real = attention_mask.bool()
    position = attention_mask.long().cumsum(dim=-1) - 1
    return real & (position >= prefix_length)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of ``hidden`` (B, L, H) over the positions where ``mask`` (B, L) is true.

    Sums run in fp32 (bf16 sums over thousands of tokens lose digits). A row with no
    selected position gives a zero vector rather than NaN.
    """
    weights = mask.float().unsqueeze(-1)
    total = (hidden.float() * weights).sum(dim=1)
    count = weights.sum(dim=1).clamp(min=1.0)
    return total / count


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The hidden state of the last selected position in each row (a common LLM-embedding
    alternative to mean pooling, kept for comparison)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, -1).max(dim=1).values.clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def l2_normalize(embeddings: torch.Tensor) -> torch.Tensor:
    """Unit length, so that a dot product is a cosine similarity; zero rows stay zero."""
    return F.normalize(embeddings.float(), p=2, dim=-1)


POOLERS = {"mean": mean_pool, "last": last_token_pool}


def pool(
    hidden: torch.Tensor, attention_mask: torch.Tensor, prefix_length: int, method: str = "mean"
) -> torch.Tensor:
    """Pool (B, L, H) states to (B, H) unit vectors, skipping padding and the system prefix."""
    if method not in POOLERS:
        raise ValueError(f"Unknown pooling {method!r}; choose one of {sorted(POOLERS)}.")
    return l2_normalize(POOLERS[method](hidden, pooling_mask(attention_mask, prefix_length)))
