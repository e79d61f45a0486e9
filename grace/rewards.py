"""GRACE's rewards: contrastive similarities between embeddings, grouped by prompt.

All inputs are L2-normalised embeddings, so a dot product is a cosine. A *group* is the
``n`` rollouts of one prompt; ``G`` groups are scored together because the cross-group term
compares each group with the others. Every term is returned on its own (for logging and for
the book) as well as the total.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

VARIANTS = ("paper", "contrastive", "infonce")
NEGATIVE_ROLLOUTS = ("always", "logging_steps")
ANCHORS = ("policy", "frozen")


@dataclass(kw_only=True)
class RewardConfig:
    """Weights of the reward; defaults are the paper's."""

    tau: float = 0.1  # temperature: similarities are divided by it
    cluster_weight: float = 0.2  # w_c, pulls a group's rollouts together
    cross_weight: float = 0.2  # w_x, pushes away the best match from other groups
    # Reward of a rollout that hit the token cap without EOS; None switches the penalty off
    # (useful for a random test model, which practically never ends a rationale).
    length_penalty: float | None = -1.0
    # Supervised formula: "paper" as published; "contrastive", which keeps the negative and
    # the other groups inside each rollout's reward (see ``contrastive_rewards``); or
    # "infonce", a log-softmax over the batch's anchors that crowding cannot raise (see
    # ``infonce_rewards``; it reads neither weight).
    variant: str = "paper"
    # When the supervised negative is rolled out. In the paper's formula cos(q_g, d-_g) is the
    # same for every rollout of a group, so it cancels in the group-mean advantage: the rollout
    # only feeds the logged reward terms, and "logging_steps" samples it only on steps that log
    # or write sample rationales (same advantages, see ``supervised_rewards``). "always" is the
    # reference's behaviour. It is always sampled where it does change advantages: in the
    # contrastive variant, and under the length penalty (a capped rollout's fixed penalty does
    # not move with the group's negative term).
    negative_rollouts: str = "logging_steps"
    # Who writes the anchors' rationales (the query's and the negative's, or the unsupervised
    # sentence's): "policy", the model being trained, at every step (the paper), or "frozen",
    # the starting model, once per text (cached). Frozen rationale texts stand still while the
    # policy moves; they are embedded by the live model, in the space the rollouts are.
    anchors: str = "policy"

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}.")
        if self.variant not in VARIANTS:
            raise ValueError(f"Unknown reward variant {self.variant!r}; choose one of {VARIANTS}.")
        if self.anchors not in ANCHORS:
            raise ValueError(f"Unknown anchors {self.anchors!r}; choose one of {ANCHORS}.")
        if self.negative_rollouts not in NEGATIVE_ROLLOUTS:
            raise ValueError(
                f"Unknown negative_rollouts {self.negative_rollouts!r}; "
                f"choose one of {NEGATIVE_ROLLOUTS}."
            )

    @property
    def negative_every_step(self) -> bool:
        """True when every supervised reward needs the negative rollout; False when the
        logging steps alone do."""
        return (
            self.variant != "paper"
            or self.length_penalty is not None
            or self.negative_rollouts == "always"
        )


@dataclass
class RewardTerms:
    """Each term as a (G, n) tensor, before weighting; ``total`` is the reward itself."""

    positive: torch.Tensor
    negative: torch.Tensor
    cluster: torch.Tensor
    cross: torch.Tensor
    total: torch.Tensor

    def means(self) -> dict[str, float]:
        """Batch means of every term, for logging."""
        return {name: float(value.float().mean()) for name, value in vars(self).items()}


def cluster_term(samples: torch.Tensor) -> torch.Tensor:
    """(G, n) mean cosine of each rollout to the other rollouts of its group."""
    n = samples.shape[1]
    if n < 2:
        return samples.new_zeros(samples.shape[:2])
    similarity = samples @ samples.transpose(1, 2)  # (G, n, n)
    own = similarity.diagonal(dim1=1, dim2=2)
    return (similarity.sum(dim=2) - own) / (n - 1)


def mean_over_other_groups(values: torch.Tensor) -> torch.Tensor:
    """For a (G, G, ...) tensor indexed [g, g'], the mean over g' != g (zero when G == 1)."""
    groups = values.shape[0]
    if groups < 2:
        return values.new_zeros(values.shape[:1] + values.shape[2:])
    others = ~torch.eye(groups, dtype=torch.bool, device=values.device)
    others = others.view(groups, groups, *([1] * (values.dim() - 2)))
    return (values * others).sum(dim=1) / (groups - 1)


def apply_length_penalty(
    total: torch.Tensor, hit_cap: torch.Tensor, config: RewardConfig
) -> torch.Tensor:
    if config.length_penalty is None:
        return total
    # The mask may come from anywhere (token lists on the CPU): follow the rewards' device.
    capped = hit_cap.to(device=total.device, dtype=torch.bool)
    return torch.where(capped, torch.full_like(total, config.length_penalty), total)


def supervised_rewards(
    query: torch.Tensor,
    positives: torch.Tensor,
    negative: torch.Tensor | None,
    hit_cap: torch.Tensor,
    config: RewardConfig | None = None,
) -> RewardTerms:
    """Rewards of the ``n`` positive-document rollouts of ``G`` (query, positive, negative) triples.

    ``query`` (G, H) and ``negative`` (G, H) are one rollout each; ``positives`` is (G, n, H).
    The reward of rollout i of group g is::

        [cos(q_g, d+_gi) - cos(q_g, d-_g) + w_c * mean_{j!=i} cos(d+_gi, d+_gj)
         - w_x * mean_{g'!=g} max_j cos(q_g, d+_g'j)] / tau

    ``negative=None`` (no negative rollout this step) leaves cos(q_g, d-_g) out: every reward
    of group g moves by the same amount, so the group-mean advantages are unchanged, unless
    the length penalty replaces some of them by a constant (``RewardConfig.negative_every_step``).
    """
    config = config or RewardConfig()
    groups, n, _ = positives.shape
    positive = torch.einsum("gh,gnh->gn", query, positives)
    if negative is None:
        negative_sim = positive.new_zeros(groups, n)
    else:
        negative_sim = (query * negative).sum(dim=-1, keepdim=True).expand(groups, n)
    cluster = cluster_term(positives)
    # [g, g'] = max_j cos(q_g, d+_g'j): how well group g's query matches group g' at best.
    best_other = torch.einsum("gh,knh->gkn", query, positives).max(dim=2).values
    cross = mean_over_other_groups(best_other).unsqueeze(1).expand(groups, n)
    total = (
        positive - negative_sim + config.cluster_weight * cluster - config.cross_weight * cross
    ) / config.tau
    total = apply_length_penalty(total, hit_cap, config)
    return RewardTerms(positive, negative_sim, cluster, cross, total)


def contrastive_rewards(
    query: torch.Tensor,
    positives: torch.Tensor,
    negative: torch.Tensor,
    hit_cap: torch.Tensor,
    config: RewardConfig | None = None,
) -> RewardTerms:
    """A supervised variant whose contrast survives the group-mean advantage.

    In the paper's formula cos(q_g, d-_g) and the cross-group term are the same for all the
    rollouts of a group, so subtracting the group mean removes them: nothing in training pushes
    a rollout away from the negative or from other groups, and a generic rationale that is
    close to everything scores as well as a specific one. Here both terms are per rollout::

        [cos(q_g, d+_gi) - cos(d-_g, d+_gi) + w_c * mean_{j!=i} cos(d+_gi, d+_gj)
         - w_x * mean_{g'!=g} cos(d+_gi, q_g')] / tau

    (the last term as in the unsupervised reward), so a rollout gains by being like its query
    and unlike the negative and the other queries.
    """
    config = config or RewardConfig()
    positive = torch.einsum("gh,gnh->gn", query, positives)
    negative_sim = torch.einsum("gh,gnh->gn", negative, positives)
    cluster = cluster_term(positives)
    cross = mean_over_other_groups(torch.einsum("gnh,kh->gkn", positives, query))
    total = (
        positive - negative_sim + config.cluster_weight * cluster - config.cross_weight * cross
    ) / config.tau
    total = apply_length_penalty(total, hit_cap, config)
    return RewardTerms(positive, negative_sim, cluster, cross, total)


def infonce_rewards(
    query: torch.Tensor,
    positives: torch.Tensor,
    negative: torch.Tensor,
    hit_cap: torch.Tensor,
    config: RewardConfig | None = None,
) -> RewardTerms:
    """A supervised variant that a rationale cannot win by moving towards everything.

    Each rollout picks its own query out of all the batch's anchors, the G queries and the G
    negatives; its reward is the log-probability of the right pick::

        s(q_g, d+_gi) / tau - log sum_{a in {q_k} + {d-_k}} exp(s(a, d+_gi) / tau)

    A rationale that raises every cosine by the same amount leaves it unchanged. Logged as
    terms: ``positive`` is s(q_g, d+_gi), ``negative`` the soft maximum over the anchors
    (tau times the log-sum-exp, a cosine); there is no cluster or cross-group term.
    """
    config = config or RewardConfig()
    anchors = torch.cat([query, negative])  # (2G, H)
    scaled = torch.einsum("gnh,ah->gna", positives, anchors) / config.tau
    positive = torch.einsum("gh,gnh->gn", query, positives)
    soft_max = config.tau * torch.logsumexp(scaled, dim=2)
    total = apply_length_penalty((positive - soft_max) / config.tau, hit_cap, config)
    zero = torch.zeros_like(positive)
    return RewardTerms(positive, soft_max, zero, zero, total)


FORMULAS = {
    "paper": supervised_rewards,
    "contrastive": contrastive_rewards,
    "infonce": infonce_rewards,
}


def supervised_terms(
    query: torch.Tensor,
    positives: torch.Tensor,
    negative: torch.Tensor | None,
    hit_cap: torch.Tensor,
    config: RewardConfig,
) -> RewardTerms:
    """The supervised reward of ``config.variant`` (``FORMULAS``)."""
    if negative is None and config.variant != "paper":
        raise ValueError(
            f"The {config.variant!r} reward compares each rollout with the negative: it needs "
            "the negative rollout at every step."
        )
    return FORMULAS[config.variant](query, positives, negative, hit_cap, config)


def unsupervised_rewards(
    query: torch.Tensor,
    samples: torch.Tensor,
    hit_cap: torch.Tensor,
    config: RewardConfig | None = None,
) -> RewardTerms:
    """Rewards when the only data is sentences: the "query" is another rollout of the same one.

    The reward of rollout i of group g is::

        [cos(q_g, s_gi) + w_c * mean_{j!=i} cos(s_gi, s_gj)
         - w_x * mean_{g'!=g} cos(s_gi, q_g')] / tau
    """
    config = config or RewardConfig()
    positive = torch.einsum("gh,gnh->gn", query, samples)
    cluster = cluster_term(samples)
    # [g, g', i] = cos(s_gi, q_g'): rollout i of group g against another group's query.
    to_queries = torch.einsum("gnh,kh->gkn", samples, query)
    cross = mean_over_other_groups(to_queries)
    total = (positive + config.cluster_weight * cluster - config.cross_weight * cross) / config.tau
    total = apply_length_penalty(total, hit_cap, config)
    return RewardTerms(positive, torch.zeros_like(positive), cluster, cross, total)


def group_advantages(rewards: torch.Tensor, scale_by_std: bool = False) -> torch.Tensor:
    """GRPO advantages of (G, n) rewards: minus the group mean (the paper does not divide by
    the group std; ``scale_by_std`` gives standard GRPO for comparison)."""
    advantages = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_by_std:
        advantages = advantages / (rewards.std(dim=1, keepdim=True) + 1e-4)
    return advantages
