"""Feature distances and reward terms on tiny hand-built tensors with hand-computed answers."""
from __future__ import annotations

import pytest
import torch

from wm_gym.rewards import (METRICS, CombinedReward, DemoAlignedReward, GoalDistanceReward, ProgressReward,
                            SeqDeltaAlignmentReward, feature_distance, make_reward)

torch.set_num_threads(1)


def T(x) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


# B=2, N=2, C=2.
# row 0: a = (1,0),(0,2)  b = (0,1),(0,-1)  -> diffs (1,-1),(0,3)
#   l1: token means 1, 1.5 -> 1.25;  l2: sqrt2, 3 -> (sqrt2+3)/2;  cosine: 1-0, 1-(-1) -> (1+2)/2 = 1.5
# row 1: a = (3,4),(1,1)  b = (3,4),(2,2)  -> diffs (0,0),(-1,-1)
#   l1: 0, 1 -> 0.5;  l2: 0, sqrt2 -> sqrt2/2;  cosine: 1-1, 1-1 (parallel) -> 0
A = T([[[1, 0], [0, 2]], [[3, 4], [1, 1]]])
B = T([[[0, 1], [0, -1]], [[3, 4], [2, 2]]])
R2 = 2 ** 0.5
EXPECTED = {"l1": [1.25, 0.5], "l2": [(R2 + 3) / 2, R2 / 2], "cosine": [1.5, 0.0]}


@pytest.mark.parametrize("metric", METRICS)
def test_distance_hand_computed(metric):
    torch.testing.assert_close(feature_distance(A, B, metric), T(EXPECTED[metric]), atol=1e-5, rtol=0)


def test_distance_broadcasts_shared_goal():
    goal = B[0]  # [N, C]; row 1: a = (3,4),(1,1) vs (0,1),(0,-1) -> diffs (3,3),(1,2) -> l1 3, 1.5 -> 2.25
    torch.testing.assert_close(feature_distance(A, goal, "l1"), T([1.25, 2.25]))
    for metric in METRICS:
        torch.testing.assert_close(feature_distance(A, goal, metric), feature_distance(A, goal.expand(2, 2, 2), metric))


@pytest.mark.parametrize("metric", METRICS)
def test_distance_zero_on_identical_and_symmetric(metric):
    a, b = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)).unbind(0)
    torch.testing.assert_close(feature_distance(a, a, metric), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(feature_distance(a, b, metric), feature_distance(b, a, metric))
    assert (feature_distance(a, b, metric) > 0.1).all()


def test_l2_gradient_finite_at_identical_inputs():
    a = torch.randn(2, 3, 4, requires_grad=True)
    feature_distance(a, a.detach().clone(), "l2").sum().backward()
    assert torch.isfinite(a.grad).all()


def test_distance_bad_input():
    with pytest.raises(ValueError, match="metric"):
        feature_distance(A, B, "l3")
    with pytest.raises(ValueError, match="mismatch"):
        feature_distance(A, B[:, :1])
    with pytest.raises(ValueError, match="mismatch"):
        feature_distance(A, B[:1])
    with pytest.raises(ValueError, match=r"\[B, N, C\]"):
        feature_distance(A[0], B[0])


def test_goal_distance_reward():
    # s_next = (1,2), goal = (0,0): l1 = 1.5 -> r = -2 * 1.5; l2 = sqrt5 -> r = -2 * sqrt5
    s_prev, s_next, goal = T([[[5, 5]]]), T([[[1, 2]]]), T([[[0, 0]]])
    torch.testing.assert_close(GoalDistanceReward("l1", 2.0)(s_prev, s_next, goal), T([-3.0]))
    torch.testing.assert_close(GoalDistanceReward("l2", 2.0)(s_prev, s_next, goal), T([-2 * 5 ** 0.5]))
    # a demo [B, T+1, N, C] as target: its last frame is the goal
    demo = torch.stack([T([[[9, 9]]]), goal], dim=1)
    torch.testing.assert_close(GoalDistanceReward("l1", 2.0)(s_prev, s_next, demo), T([-3.0]))


# demo[b, k] = 10 b + k  (B=2, T+1=3, N=1, C=1); with s_next = 0, l1 = |demo[b, k]|
DEMO = (10 * torch.arange(2.0)[:, None] + torch.arange(3.0)).reshape(2, 3, 1, 1)
ZERO = torch.zeros(2, 1, 1)


@pytest.mark.parametrize("t, frames", [
    (0, [1, 11]),                          # t+1 = 1
    (1, [2, 12]),                          # t+1 = 2 = last frame
    (5, [2, 12]),                          # past the end: clamped to the last frame
    (torch.tensor([0, 1]), [1, 12]),       # per-row indices
    (torch.tensor([7, 0]), [2, 11]),       # per-row, row 0 clamped
])
def test_demo_aligned_reward_indexing(t, frames):
    r = DemoAlignedReward()(ZERO, ZERO, DEMO, t)  # default scale 5
    torch.testing.assert_close(r, -5 * torch.tensor(frames, dtype=torch.float32))


def test_demo_aligned_reward_needs_demo():
    assert DemoAlignedReward.needs_demo and not GoalDistanceReward.needs_demo
    with pytest.raises(ValueError, match="demo sequence"):
        DemoAlignedReward()(ZERO, ZERO, DEMO[:, 0], 0)
    with pytest.raises(ValueError, match="step index"):
        DemoAlignedReward()(ZERO, ZERO, DEMO, None)
    with pytest.raises(ValueError, match="t must be"):
        DemoAlignedReward()(ZERO, ZERO, DEMO, torch.tensor([0, 1, 2]))


def test_progress_reward_sign():
    # goal 0; l1 distance 2 -> 1 is one unit closer: r = +3 * 1; the reverse step: r = -3
    near, far, goal = T([[[1.0]]]), T([[[2.0]]]), T([[[0.0]]])
    progress = ProgressReward("l1", 3.0)
    torch.testing.assert_close(progress(far, near, goal), T([3.0]))
    torch.testing.assert_close(progress(near, far, goal), T([-3.0]))


def test_seq_delta_alignment():
    g = torch.Generator().manual_seed(1)
    s_prev, goal = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g)
    seq = SeqDeltaAlignmentReward(scale=2.0)
    torch.testing.assert_close(seq(s_prev, s_prev + 0.3 * (goal - s_prev), goal), torch.full((4,), 2.0))
    torch.testing.assert_close(seq(s_prev, s_prev - 0.5 * (goal - s_prev), goal), torch.full((4,), -2.0))
    # hand case: step (1,1) vs direction to goal (1,0): cos 45deg = 1/sqrt2
    torch.testing.assert_close(seq(T([[[0, 0]]]), T([[[1, 1]]]), T([[1, 0]])), T([2 / R2]))


def test_rewards_are_differentiable():
    s_prev, goal = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    demo = torch.randn(2, 4, 3, 4)
    for term in (GoalDistanceReward("l2"), DemoAlignedReward("cosine"), ProgressReward(), SeqDeltaAlignmentReward()):
        s_next = torch.randn(2, 3, 4, requires_grad=True)
        target = demo if term.needs_demo else goal
        term(s_prev, s_next, target, 1).sum().backward()
        assert torch.isfinite(s_next.grad).all() and s_next.grad.abs().sum() > 0


def test_combined_is_weighted_sum_and_mixes_demo_and_goal_terms():
    g = torch.Generator().manual_seed(2)
    s_prev, s_next = torch.randn(3, 2, 4, generator=g), torch.randn(3, 2, 4, generator=g)
    demo = torch.randn(3, 5, 2, 4, generator=g)
    demo_term, progress = DemoAlignedReward("l2"), ProgressReward("cosine", 2.0)
    combined = CombinedReward([(0.5, demo_term), (-1.5, progress)])
    assert combined.needs_demo
    expected = 0.5 * demo_term(s_prev, s_next, demo, 2) - 1.5 * progress(s_prev, s_next, demo[:, -1])
    torch.testing.assert_close(combined(s_prev, s_next, demo, 2), expected)


def test_make_reward():
    g = torch.Generator().manual_seed(3)
    s_prev, s_next = torch.randn(2, 2, 3, generator=g), torch.randn(2, 2, 3, generator=g)
    demo = torch.randn(2, 4, 2, 3, generator=g)
    r = make_reward("demo+progress", metric="l2")
    assert isinstance(r, CombinedReward) and r.needs_demo
    expected = DemoAlignedReward("l2")(s_prev, s_next, demo, 0) + ProgressReward("l2")(s_prev, s_next, demo[:, -1])
    torch.testing.assert_close(r(s_prev, s_next, demo, 0), expected)

    goal = make_reward("goal", metric="cosine", scale=4.0)
    assert isinstance(goal, GoalDistanceReward) and (goal.metric, goal.scale) == ("cosine", 4.0)
    assert make_reward("demo").scale == 5.0 and make_reward("seq-delta").scale == 1.0
    assert make_reward(goal) is goal


def test_make_reward_and_terms_reject_bad_input():
    with pytest.raises(ValueError, match="valid names: goal, demo, progress, seq-delta"):
        make_reward("demo+speed")
    with pytest.raises(ValueError, match="metric"):
        make_reward("seq-delta", metric="l3")
    with pytest.raises(ValueError, match="metric"):
        GoalDistanceReward("l3")
    with pytest.raises(ValueError, match="scale"):
        ProgressReward(scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        make_reward("goal", scale=-1.0)
    with pytest.raises(ValueError, match="mismatch"):
        GoalDistanceReward()(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="mismatch"):
        SeqDeltaAlignmentReward()(torch.zeros(2, 3, 4), torch.zeros(1, 3, 4), torch.zeros(2, 3, 4))
