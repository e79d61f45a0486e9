import math

import pytest
import torch
import torch.nn.functional as F

from grace.rewards import (
    RewardConfig,
    contrastive_rewards,
    group_advantages,
    infonce_rewards,
    supervised_rewards,
    supervised_terms,
    unsupervised_rewards,
)

# Two groups of two rollouts in 2-D, chosen so every cosine is a round number.
Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
POSITIVES = torch.tensor([[[1.0, 0.0], [0.6, 0.8]], [[0.0, 1.0], [0.8, 0.6]]])
NEGATIVE = torch.tensor([[0.0, 1.0], [0.6, 0.8]])
NO_CAP = torch.zeros(2, 2, dtype=torch.bool)


def test_supervised_terms_by_hand():
    terms = supervised_rewards(Q, POSITIVES, NEGATIVE, NO_CAP)
    # cos(q_g, d+_gi): q0.(1,0)=1, q0.(.6,.8)=.6 ; q1.(0,1)=1, q1.(.8,.6)=.6
    assert torch.allclose(terms.positive, torch.tensor([[1.0, 0.6], [1.0, 0.6]]))
    # cos(q_g, d-_g): q0.(0,1)=0 ; q1.(.6,.8)=.8, the same for every rollout of the group
    assert torch.allclose(terms.negative, torch.tensor([[0.0, 0.0], [0.8, 0.8]]))
    # the other rollout of the group: (1,0).(.6,.8)=.6 ; (0,1).(.8,.6)=.6
    assert torch.allclose(terms.cluster, torch.full((2, 2), 0.6))
    # best match of q0 in group 1: max(q0.(0,1)=0, q0.(.8,.6)=.8)=.8 ; of q1 in group 0: .8
    assert torch.allclose(terms.cross, torch.full((2, 2), 0.8))
    # (pos - neg + 0.2*0.6 - 0.2*0.8) / 0.1:
    # g0: (1 - 0 + .12 - .16)/.1 = 9.6, (.6 - 0 + .12 - .16)/.1 = 5.6
    # g1: (1 - .8 + .12 - .16)/.1 = 1.6, (.6 - .8 + .12 - .16)/.1 = -2.4
    assert torch.allclose(terms.total, torch.tensor([[9.6, 5.6], [1.6, -2.4]]), atol=1e-5)


def test_length_penalty_replaces_the_reward():
    hit_cap = torch.tensor([[False, False], [False, True]])
    terms = supervised_rewards(Q, POSITIVES, NEGATIVE, hit_cap, RewardConfig(length_penalty=-1))
    assert terms.total[1, 1] == -1.0
    assert torch.allclose(terms.total[0], torch.tensor([9.6, 5.6]))


def test_unsupervised_terms_by_hand():
    terms = unsupervised_rewards(Q, POSITIVES, NO_CAP)
    assert torch.allclose(terms.positive, torch.tensor([[1.0, 0.6], [1.0, 0.6]]))
    assert torch.equal(terms.negative, torch.zeros(2, 2))
    # cos(s_gi, q_other): g0 vs q1: (1,0).(0,1)=0, (.6,.8).(0,1)=.8 ; g1 vs q0: 0, .8
    assert torch.allclose(terms.cross, torch.tensor([[0.0, 0.8], [0.0, 0.8]]))
    # g0: (1 + .12 - 0)/.1 = 11.2, (.6 + .12 - .16)/.1 = 5.6 ; g1 likewise
    assert torch.allclose(terms.total, torch.tensor([[11.2, 5.6], [11.2, 5.6]]), atol=1e-5)


def random_unit(*shape):
    return F.normalize(torch.randn(*shape), dim=-1)


def test_cross_term_matches_explicit_loops_with_three_groups():
    torch.manual_seed(0)
    q, d, neg = random_unit(3, 5), random_unit(3, 4, 5), random_unit(3, 5)
    terms = supervised_rewards(q, d, neg, torch.zeros(3, 4, dtype=torch.bool))
    for g in range(3):
        others = [max(float(q[g] @ d[k, j]) for j in range(4)) for k in range(3) if k != g]
        assert terms.cross[g, 0] == pytest.approx(sum(others) / 2, abs=1e-6)
        for i in range(4):
            mates = [float(d[g, i] @ d[g, j]) for j in range(4) if j != i]
            assert terms.cluster[g, i] == pytest.approx(sum(mates) / 3, abs=1e-6)


def test_single_group_has_no_cross_term():
    terms = supervised_rewards(Q[:1], POSITIVES[:1], NEGATIVE[:1], NO_CAP[:1])
    assert torch.equal(terms.cross, torch.zeros(1, 2))


def test_negative_and_cross_terms_cancel_in_supervised_advantages():
    torch.manual_seed(1)
    q, d, neg = random_unit(4, 16), random_unit(4, 8, 16), random_unit(4, 16)
    config = RewardConfig()
    terms = supervised_rewards(q, d, neg, torch.zeros(4, 8, dtype=torch.bool), config)
    without = (terms.positive + config.cluster_weight * terms.cluster) / config.tau
    assert torch.allclose(group_advantages(terms.total), group_advantages(without), atol=1e-5)
    # ... whereas the raw rewards do differ, and in the unsupervised reward the cross term
    # varies within a group, so it does steer training there.
    assert not torch.allclose(terms.total, without)
    unsup = unsupervised_rewards(q, d, torch.zeros(4, 8, dtype=torch.bool), config)
    assert unsup.cross.std(dim=1).min() > 0


def test_group_advantages_subtract_group_mean_only():
    rewards = torch.tensor([[1.0, 3.0], [10.0, 10.0]])
    assert torch.equal(group_advantages(rewards), torch.tensor([[-1.0, 1.0], [0.0, 0.0]]))
    scaled = group_advantages(rewards, scale_by_std=True)
    assert scaled[0, 1] == pytest.approx(1 / (2**0.5 + 1e-4))


def test_contrastive_variant_terms_by_hand():
    terms = contrastive_rewards(Q, POSITIVES, NEGATIVE, NO_CAP)
    assert torch.allclose(terms.positive, torch.tensor([[1.0, 0.6], [1.0, 0.6]]))
    # cos(d-_g, d+_gi), per rollout: g0 (0,1).(1,0)=0, (0,1).(.6,.8)=.8 ;
    # g1 (.6,.8).(0,1)=.8, (.6,.8).(.8,.6)=.96
    assert torch.allclose(terms.negative, torch.tensor([[0.0, 0.8], [0.8, 0.96]]))
    # cos(d+_gi, q_other): g0 rollouts vs q1=(0,1): 0, .8 ; g1 rollouts vs q0=(1,0): 0, .8
    assert torch.allclose(terms.cross, torch.tensor([[0.0, 0.8], [0.0, 0.8]]))
    # g0: (1 - 0 + .12 - 0)/.1 = 11.2 ; (.6 - .8 + .12 - .16)/.1 = -2.4
    expected = torch.tensor(
        [[11.2, -2.4], [(1 - 0.8 + 0.12) / 0.1, (0.6 - 0.96 + 0.12 - 0.16) / 0.1]]
    )
    assert torch.allclose(terms.total, expected, atol=1e-5)


def unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# One group of four rollouts of a positive document, and a second group for the cross term.
# Axes: 0 = the query's topic, 1 = the negative's, 2 = the other group's query, 3 = detail
# found only in this document. A generic rationale leans to the query but is also close to
# the negative and to the other query; a discriminative one is close to its query only.
QUERIES = unit([1, 0, 0, 0], [0, 0, 1, 0])
NEGATIVES = unit([0, 1, 0, 0], [0, 0, 0, 1])
GENERIC, SPECIFIC = [2, 1, 1, 0], [1, 0, 0, 1]
GROUPS = torch.stack([unit(GENERIC, GENERIC, GENERIC, SPECIFIC), unit(*[[0, 0, 1, 0]] * 4)])
NO_CAP_4 = torch.zeros(2, 4, dtype=torch.bool)


def test_under_the_papers_formula_the_generic_rollout_wins():
    advantages = group_advantages(supervised_rewards(QUERIES, GROUPS, NEGATIVES, NO_CAP_4).total)
    assert advantages[0, 0] > advantages[0, 3]


def test_the_contrastive_variant_prefers_the_discriminative_rollout():
    advantages = group_advantages(contrastive_rewards(QUERIES, GROUPS, NEGATIVES, NO_CAP_4).total)
    assert advantages[0, 3] > advantages[0, 0]


def test_infonce_matches_a_loop_over_the_formula():
    torch.manual_seed(2)
    q, d, neg = random_unit(3, 6), random_unit(3, 4, 6), random_unit(3, 6)
    config = RewardConfig(tau=0.05, variant="infonce")
    terms = supervised_terms(q, d, neg, torch.zeros(3, 4, dtype=torch.bool), config)
    anchors = [*q, *neg]
    for g in range(3):
        for i in range(4):
            logits = [float(a @ d[g, i]) / config.tau for a in anchors]
            expected = logits[g] - math.log(sum(math.exp(x) for x in logits))
            assert terms.total[g, i] == pytest.approx(expected, abs=1e-4)
            assert terms.positive[g, i] == pytest.approx(float(q[g] @ d[g, i]), abs=1e-6)
    assert torch.equal(terms.cluster, torch.zeros(3, 4))


def test_infonce_gives_nothing_for_being_close_to_every_anchor():
    # Orthonormal anchors (2 queries, 2 negatives): a rollout equally close to all four earns
    # log(1/4) whether it is close (the normalised sum) or far (orthogonal to all), while the
    # paper's positive term pays the close one more.
    q, neg = torch.eye(5)[:2], torch.eye(5)[2:4]
    close = F.normalize(torch.ones(5) - torch.eye(5)[4], dim=0)
    far = torch.eye(5)[4]
    rollouts = torch.stack([torch.stack([close, far])] * 2)
    terms = infonce_rewards(q, rollouts, neg, NO_CAP)
    assert torch.allclose(terms.total, torch.full((2, 2), math.log(0.25)), atol=1e-5)
    assert (terms.positive[:, 0] > terms.positive[:, 1]).all()


@pytest.mark.parametrize(
    ("formula", "invariant"), [(supervised_rewards, True), (contrastive_rewards, False)]
)
def test_only_the_variants_advantages_depend_on_the_negative(formula, invariant):
    other_negatives = unit([0, 1, 1, 0], [1, 0, 0, 1])
    first = group_advantages(formula(QUERIES, GROUPS, NEGATIVES, NO_CAP_4).total)
    second = group_advantages(formula(QUERIES, GROUPS, other_negatives, NO_CAP_4).total)
    assert torch.allclose(first, second, atol=1e-5) == invariant


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="Unknown reward variant"):
        RewardConfig(variant="mine")
