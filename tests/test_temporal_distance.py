"""The temporal-distance head: its value form, TD training on a hand-made graph, the reward, the success metric."""
from __future__ import annotations

import math
from pathlib import Path
from collections import deque

import numpy as np
import pytest
import torch

from wm_gym.rewards import TemporalProgressReward, make_reward
from wm_gym.temporal_distance import TemporalDistance, TemporalDistanceConfig
from wm_gym.train.temporal_distance import episode_rank_correlation, expectile_td_loss, make_sampler

# ----- a small graph: two 3x3 rooms joined by a one-cell door (Wall in miniature) ------------------
ROOM_A = [(x, y) for x in range(3) for y in range(3)]
DOOR = [(3, 1)]
ROOM_B = [(x, y) for x in range(4, 7) for y in range(3)]
NODES = ROOM_A + DOOR + ROOM_B
INDEX = {p: i for i, p in enumerate(NODES)}


def neighbours(i: int) -> list[int]:
    x, y = NODES[i]
    return [INDEX[q] for q in ((x + 1, y), (x - 1, y), (x, y + 1), (x, y - 1)) if q in INDEX]


def bfs(goal: int) -> np.ndarray:
    """Shortest-path steps from every node to ``goal``."""
    dist = np.full(len(NODES), -1)
    dist[goal], queue = 0, deque([goal])
    while queue:
        i = queue.popleft()
        for j in neighbours(i):
            if dist[j] < 0:
                dist[j] = dist[i] + 1
                queue.append(j)
    return dist


@pytest.fixture(scope="module")
def graph_head():
    """A head trained by expectile TD on random walks over the graph (features: a fixed random code per node)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    codes = torch.randn(len(NODES), 1, 8)  # [nodes, N=1 token, C=8]
    walks = []
    for _ in range(300):  # random walks: suboptimal paths; TD has to stitch shortest ones
        node, walk = int(rng.integers(len(NODES))), []
        for _ in range(12):
            walk.append(node)
            node = int(rng.choice(neighbours(node)))
        walks.append(walk)
    features = codes[torch.as_tensor(np.concatenate(walks))]
    lengths = np.full(len(walks), 12)
    config = TemporalDistanceConfig(embed_dim=16, hidden=64, gamma=0.9, batch_size=128, steps=1000, lr=1e-3,
                                    ema=0.02, p_future=0.5)
    head, target = TemporalDistance(1, 8, config), TemporalDistance(1, 8, config)
    target.load_state_dict(head.state_dict())
    untrained = TemporalDistance(1, 8, config)
    untrained.load_state_dict(head.state_dict())
    target.requires_grad_(False)
    sample, gen = make_sampler(features, lengths, config), torch.Generator().manual_seed(0)
    optim = torch.optim.Adam(head.parameters(), lr=config.lr)
    losses = []
    for _ in range(config.steps):
        loss, _ = expectile_td_loss(head, target, sample(gen))
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
    return head.eval(), codes, untrained.eval(), features, lengths


def shortest_path_report(head: TemporalDistance, codes: torch.Tensor, goal: int) -> tuple[float, int]:
    """(correlation of steps(node, goal) with the true steps, shortest-path moves that did not lower the cost)."""
    truth = bfs(goal)
    with torch.no_grad():
        steps = head.steps(codes, codes[goal].expand(len(NODES), -1, -1)).numpy()
    violations = 0
    for node in range(len(NODES)):  # walk every hand-made shortest path to the goal
        while node != goal:
            nxt = min(neighbours(node), key=lambda j: truth[j])
            violations += int(steps[nxt] >= steps[node])
            node = nxt
    return float(np.corrcoef(steps, truth)[0, 1]), violations


GOALS = (0, INDEX[(6, 2)], INDEX[(3, 1)], INDEX[(1, 1)])


def test_value_is_zero_at_the_goal_and_negative_elsewhere():
    head = TemporalDistance(4, 3, TemporalDistanceConfig(hidden=16, embed_dim=8))
    s = torch.randn(5, 4, 3)
    with torch.no_grad():
        assert torch.allclose(head.value(s, s), torch.zeros(5), atol=1e-6)
        assert torch.allclose(head.steps(s, s), torch.zeros(5), atol=1e-4)
        g = torch.randn(4, 3)  # one goal for the whole batch
        assert (head.value(s, g) < 0).all()
        assert torch.equal(head.steps(s, g), head.steps(s, g[None].expand(5, -1, -1)))


def test_steps_invert_the_discounted_value():
    """V = -(1 - γ^k)/(1 - γ) ⇔ k steps: check the inversion against a hand-set value."""
    head = TemporalDistance(1, 2, TemporalDistanceConfig(gamma=0.9))
    k = 7
    v = -(1 - 0.9 ** k) / (1 - 0.9)
    head.value = lambda s, g: torch.full((s.shape[0],), v)  # the inversion only reads value()
    assert head.steps(torch.zeros(2, 1, 2), torch.zeros(1, 2)).tolist() == pytest.approx([k, k], abs=1e-4)
    assert head.max_steps == pytest.approx(math.log(1e-6) / math.log(0.9))


def test_config_rejects_bad_values():
    for bad in (dict(gamma=1.0), dict(gamma=0.0), dict(expectile=1.0), dict(p_future=1.5)):
        with pytest.raises(ValueError):
            TemporalDistanceConfig(**bad)


def test_sampler_never_crosses_an_episode_and_goals_are_future_frames():
    # feature = (episode, time): then every sampled triple can be checked by hand
    lengths = np.array([4, 6, 3])
    rows = [(e, t) for e, n in enumerate(lengths) for t in range(n)]
    features = torch.tensor(rows, dtype=torch.float32)[:, None, :]  # [F, 1, 2]
    config = TemporalDistanceConfig(p_future=1.0, batch_size=500, gamma=0.8)
    s, s_next, g = make_sampler(features, lengths, config)(torch.Generator().manual_seed(1))
    assert torch.equal(s[:, 0, 0], s_next[:, 0, 0]) and torch.equal(s[:, 0, 0], g[:, 0, 0])  # same episode
    assert torch.equal(s_next[:, 0, 1], s[:, 0, 1] + 1)       # the successor
    assert (g[:, 0, 1] > s[:, 0, 1]).all()                    # a later frame
    assert ((g[:, 0, 1] - s[:, 0, 1]) == 1).any() and ((g[:, 0, 1] - s[:, 0, 1]) > 1).any()


def test_td_training_learns_monotone_shortest_paths(graph_head):
    head, codes, untrained, features, lengths = graph_head
    for goal in GOALS:
        correlation, violations = shortest_path_report(head, codes, goal)
        assert correlation > 0.9 and violations == 0, (goal, correlation, violations)
    # the same network before training fails the check: it is the TD fit that orders the states
    assert any(shortest_path_report(untrained, codes, goal)[1] > 0 for goal in GOALS)
    assert episode_rank_correlation(head, features, lengths) > 0.2  # random walks: only loosely ordered


def crosses_the_door(steps: np.ndarray) -> bool:
    """Steps to goal (4, 0) [nodes] order room A's corner (2, 0) as a path through the door does: farther than
    room B's (5, 2) and (6, 1) (4 steps against 3, though only 2 grid cells across the gap against 3), and
    falling along the path (2, 0) → (2, 1) → door → (4, 1) → goal."""
    at = lambda *cells: [steps[INDEX[c]] for c in cells]  # noqa: E731
    path = at((2, 0), (2, 1), (3, 1), (4, 1), (4, 0))
    return bool(at((2, 0))[0] > max(at((5, 2), (6, 1))) and all(a > b for a, b in zip(path, path[1:])))


def test_the_head_crosses_the_door_not_the_gap(graph_head):
    head, codes, untrained, _, _ = graph_head
    goal = INDEX[(4, 0)]
    truth = bfs(goal)
    assert truth[INDEX[(2, 0)]] == 4 and truth[INDEX[(5, 2)]] == truth[INDEX[(6, 1)]] == 3
    assert crosses_the_door(truth.astype(float))
    gap = np.array([abs(x - 4) + abs(y - 0) for x, y in NODES], float)  # grid cells, straight across the gap
    assert not crosses_the_door(gap)
    with torch.no_grad():
        read = lambda h: h.steps(codes, codes[goal].expand(len(NODES), -1, -1)).numpy()  # noqa: E731
        assert crosses_the_door(read(head))
        assert not crosses_the_door(read(untrained))  # the same network before TD training does not


def test_temporal_progress_reward_matches_hand_computed_values():
    distance = lambda s, g: (s - g).abs().sum((1, 2))  # noqa: E731  (a stand-in "steps to go")
    reward = TemporalProgressReward(distance, scale=2.0)
    goal = torch.zeros(1, 2)
    s_prev = torch.tensor([[[3.0, 1.0]], [[1.0, 0.0]]])
    s_next = torch.tensor([[[1.0, 1.0]], [[2.0, 0.0]]])
    # row 0: 4 -> 2 steps to go (+2, x2 = 4); row 1: 1 -> 2 (-1, x2 = -2)
    assert reward(s_prev, s_next, goal).tolist() == [4.0, -2.0]
    demo = torch.stack([s_prev, torch.zeros_like(s_prev)], dim=1)  # a demo sequence: its last frame is the goal
    assert reward(s_prev, s_next, demo).tolist() == [4.0, -2.0]


def test_make_reward_temporal_needs_a_head():
    with pytest.raises(ValueError, match="train-distance"):
        make_reward("temporal")
    head = TemporalDistance(2, 3, TemporalDistanceConfig(hidden=8, embed_dim=4))
    term = make_reward("temporal", distance=head.steps)
    s = torch.randn(3, 2, 3)
    with torch.no_grad():
        assert torch.allclose(term(s, s, s), torch.zeros(3), atol=1e-5)  # no move, no progress
    with pytest.raises(ValueError):
        TemporalProgressReward("not callable")


# ----- on a world model: fit, save/load, imagination reward and success, calibration ------------------
@pytest.fixture(scope="module")
def tiny_model_with_head(tiny_imagine_world, tmp_path_factory):
    from wm_gym.cli import main

    out = tmp_path_factory.mktemp("td") / "wm-td.pt"
    code = main(["train-distance", "--model", str(tiny_imagine_world.path), "--data", str(tiny_imagine_world.random_dir),
                 "--data", str(tiny_imagine_world.expert_dir), "--steps", "60", "--batch-size", "64",
                 "--device", "cpu", "--out", str(out), "--json"])
    assert code == 0
    return out


def test_train_distance_saves_the_head_inside_the_model(tiny_model_with_head, tiny_imagine_world):
    from wm_gym.world_model import WorldModel

    plain, model = WorldModel.load(tiny_imagine_world.path), WorldModel.load(tiny_model_with_head)
    assert plain.temporal_distance is None and model.temporal_distance is not None
    assert model.config.distance_config["steps"] == 60
    assert model.meta.train_info["temporal_distance"]["episodes"] == 24
    assert not Path(str(tiny_model_with_head) + ".distance-state").exists()  # the resume state is cleaned up
    s = torch.zeros(4, model.n_tokens, model.dim)
    s[1], s[2], s[3, 0] = 1.0, -2.0, 3.0  # l1 to s[0]: the mean |difference| over tokens and channels
    with torch.no_grad():
        assert torch.equal(model.goal_distance(s, s[0], "temporal"), model.temporal_distance.steps(s, s[0]))
        assert model.goal_distance(s, s[0], "l1").tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0 / model.n_tokens])
    with pytest.raises(ValueError, match="train-distance"):
        plain.goal_distance(s, s[0], "temporal")


def test_imagination_pays_temporal_progress_and_ends_on_temporal_success(tiny_model_with_head, tiny_imagine_world):
    from wm_gym.imagine.vector_env import WMImagineVectorEnv
    from wm_gym.world_model import WorldModel

    model = WorldModel.load(tiny_model_with_head)
    model.meta.success_metric, model.meta.success_threshold = "temporal", 0.5
    env = WMImagineVectorEnv(4, model=model, reward="temporal", device="cpu")
    env.reset(seed=0)
    s_prev, goal = env.s_hist[:, -1].clone(), env._goal().clone()
    actions = np.stack([env.single_action_space.sample() for _ in range(4)])
    _, reward, terminated, _, info = env.step(actions)
    s_next = torch.as_tensor(info["final_obs"][:, :model.n_tokens * model.dim]).view_as(s_prev) \
        if "final_obs" in info else env.s_hist[:, -1]
    with torch.no_grad():
        steps = model.temporal_distance.steps
        expected = (steps(s_prev, goal) - steps(s_next, goal)).numpy()
        assert np.allclose(reward, expected, atol=1e-4)
        assert np.allclose(info["distance"], steps(s_next, goal).numpy(), atol=1e-4)
    assert np.array_equal(terminated, info["distance"] < 0.5)
    with pytest.raises(ValueError, match="train-distance"):
        WMImagineVectorEnv(2, model=str(tiny_imagine_world.path), reward="temporal", device="cpu")  # no head


def test_calibration_with_the_temporal_metric(tiny_model_with_head, tiny_imagine_world):
    from wm_gym.calibrate import calibrate_success
    from wm_gym.world_model import WorldModel

    from wm_gym.calibrate import best_threshold, labelled_pairs, precision_recall
    from wm_gym.data.dataset import load_episodes

    model = WorldModel.load(tiny_model_with_head)
    report = calibrate_success(model, tiny_imagine_world.random_dir, metric="temporal", max_episodes=6)
    assert report["metric"] == "temporal" and model.meta.success_metric == "temporal"
    assert model.meta.success_threshold == report["threshold"]
    # the pairs' distances are the head's steps: episode 0's real frame pairs, recomputed by hand
    data = load_episodes(tiny_imagine_world.random_dir, cache=False)
    frames = data.frames[0][::model.config.frameskip]
    k, j = np.triu_indices(len(frames), 1)
    with torch.no_grad():
        feats = model.encode(torch.from_numpy(np.ascontiguousarray(frames)))
        by_hand = model.temporal_distance.steps(feats[k], feats[j]).numpy()
    real = labelled_pairs(model, tiny_imagine_world.random_dir, "temporal", max_episodes=1)
    np.testing.assert_allclose(real["distance"][:len(k)], by_hand, rtol=1e-5, atol=1e-5)
    # the threshold is the F1-best on even episodes, precision and recall are read on the odd ones
    for kind, imagined in (("imagined", True), ("real", False)):
        pairs = labelled_pairs(model, tiny_imagine_world.random_dir, "temporal", max_episodes=6, imagined=imagined)
        odd = pairs["episode"] % 2 == 1
        assert report[kind]["threshold"] == pytest.approx(best_threshold(pairs["distance"][~odd], pairs["success"][~odd]))
        again = precision_recall(pairs["distance"][odd], pairs["success"][odd], report[kind]["threshold"])
        assert report[kind]["precision"] == pytest.approx(again["precision"])
        assert report[kind]["recall"] == pytest.approx(again["recall"])
        assert report[kind]["positives"] == int(pairs["success"][odd].sum()) > 0
    assert (report["precision"], report["recall"]) == (report["imagined"]["precision"], report["imagined"]["recall"])


def test_sampler_swaps_in_imagined_states_at_the_configured_rate():
    lengths = np.array([5, 5])
    features = torch.arange(10, dtype=torch.float32)[:, None, None]
    imagined = -features - 100  # recognisable stand-ins for the model's predictions
    gen = torch.Generator().manual_seed(0)
    for fraction, expected in ((0.0, 0.0), (1.0, 1.0), (0.5, 0.5)):
        config = TemporalDistanceConfig(imagined_fraction=fraction, batch_size=4000)
        s, s_next, g = make_sampler(features, lengths, config, imagined)(gen)
        swapped = (s < -50).float().mean().item()
        assert swapped == pytest.approx(expected, abs=0.03)
        assert (s_next >= 0).all() and (g >= 0).all()  # the TD target and the goal stay real


def test_batched_open_loop_matches_one_episode_at_a_time(tiny_imagine_world):
    from wm_gym.calibrate import imagined_states
    from wm_gym.data.dataset import load_episodes
    from wm_gym.train.temporal_distance import open_loop_from_first
    from wm_gym.world_model import WorldModel

    model, data = WorldModel.load(tiny_imagine_world.path), load_episodes(tiny_imagine_world.random_dir)
    fs = model.config.frameskip
    with torch.no_grad():
        feats = [model.encode(torch.from_numpy(np.ascontiguousarray(f[::fs]))) for f in data.frames[:3]]
        batched = open_loop_from_first(model, feats, list(data.actions[:3]), batch=2)  # 2 batches: 2 + 1
        for f, actions, got in zip(feats, data.actions[:3], batched):
            one = imagined_states(model, f[:1], actions, len(f) - 1)
            assert torch.allclose(got, one, atol=1e-5)
            assert torch.equal(got[0], f[0]) and not torch.allclose(got[1:], f[1:])  # real start, then predictions


def test_success_metric_option_ends_imagined_episodes_by_the_heads_steps_without_calibration(tiny_model_with_head,
                                                                                                tiny_imagine_world):
    """`train-agent --success-metric temporal --success-threshold K`: a success test with no labels. The model's own
    calibration (l1) is overridden: the same step reports the head's steps to go and ends exactly where they are < K;
    a threshold above every distance ends every episode, and a model without a head is refused."""
    from wm_gym.imagine.vector_env import WMImagineVectorEnv
    from wm_gym.world_model import WorldModel

    model = WorldModel.load(tiny_model_with_head)
    model.meta.success_metric, model.meta.success_threshold = "l1", 1e-9  # a calibration that never fires
    actions = None
    for threshold in (1.5, 1e6):
        env = WMImagineVectorEnv(4, model=model, success_metric="temporal", success_threshold=threshold,
                                 reward="demo", device="cpu")
        env.reset(seed=0)
        goal = env._goal().clone()
        actions = actions if actions is not None else np.stack([env.single_action_space.sample() for _ in range(4)])
        _, _, terminated, _, info = env.step(actions)
        with torch.no_grad():
            assert np.allclose(info["distance"], model.temporal_distance.steps(
                env.s_hist[:, -1] if "final_obs" not in info else
                torch.as_tensor(info["final_obs"][:, :model.n_tokens * model.dim]).view_as(env.s_hist[:, -1]),
                goal).numpy(), atol=1e-4)
        assert np.array_equal(terminated, info["distance"] < threshold)
    assert terminated.all()  # 1e6 steps: every episode succeeds
    with pytest.raises(ValueError, match="success_metric 'temporal' needs a temporal-distance head"):
        WMImagineVectorEnv(2, model=str(tiny_imagine_world.path), success_metric="temporal", device="cpu")
    with pytest.raises(ValueError, match="success_metric must be one of"):
        WMImagineVectorEnv(2, model=model, success_metric="steps", device="cpu")
