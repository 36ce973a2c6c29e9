"""Waypoint graphs: shortest paths follow recorded transitions, not straight lines in feature space."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wm_gym.agents.planners import PlannerConfig, make_planner
from wm_gym.agents.waypoints import WaypointGraph, WaypointPlanner
from wm_gym.imagine import WMImagineVectorEnv
from wm_gym.world_model import WorldModel

# A U-shaped corridor in 2-D "features": episode A goes down the left arm and along the bottom,
# episode B starts where A ends (a near-duplicate frame, 0.01 away) and goes up the right arm.
# The arms' tops, (0, 3) and (3, 3), are 3 apart in feature space but 6 transitions apart.
EPISODE_A = [(0, 3), (0, 2), (0, 1), (0, 0), (1, 0), (2, 0)]
EPISODE_B = [(2.01, 0), (3, 0), (3, 1), (3, 2), (3, 3)]


def u_graph(**kwargs) -> WaypointGraph:
    feats = torch.tensor(EPISODE_A + EPISODE_B, dtype=torch.float32)
    return WaypointGraph(feats, [len(EPISODE_A), len(EPISODE_B)], **kwargs)


def test_shortest_path_goes_around_the_u_not_across_it():
    graph = u_graph(neighbours=3)
    assert graph.transition_scale == pytest.approx(1.0)
    # the only merge within 0.25 × the median transition (1.0) is (2, 0) <-> (2.01, 0), both ways
    assert graph.merges == 2
    start, goal = 0, len(graph) - 1
    steps, _ = graph.steps_to(goal)
    # 5 transitions to A's end, a 0.01 merge, 4 transitions up B: 9.01 steps (the straight line would be 3)
    assert steps[start] == pytest.approx(9.01, abs=1e-4)
    # the waypoint 2 steps along from the top of the left arm is (0, 1): down the arm, away from the goal
    assert graph.path(start, goal, lookahead=2) == [0, 1, 2]
    targets, used = graph.waypoints(torch.tensor([[0.1, 2.9]]), torch.tensor([[3.0, 3.1]]), lookahead=2)
    assert used.tolist() == [True] and targets[0].tolist() == [0.0, 1.0]


def test_near_the_goal_or_without_a_path_the_goal_itself_is_the_target():
    graph = u_graph(neighbours=3)
    goal = torch.tensor([[3.0, 3.0]])
    targets, used = graph.waypoints(torch.tensor([[3.0, 2.0]]), goal, lookahead=2)  # 1 step away: reach it
    assert not used[0] and torch.equal(targets, goal)
    # without the merge (radius 0) episode B cannot be reached from episode A: no path, aim at the goal
    cut = u_graph(neighbours=3, merge_radius=0.0)
    assert cut.merges == 0 and np.isinf(cut.steps_to(len(cut) - 1)[0][0])
    targets, used = cut.waypoints(torch.tensor([[0.0, 3.0]]), goal, lookahead=2)
    assert not used[0] and torch.equal(targets, goal)


def test_paths_are_cached_per_goal_and_the_oldest_goal_is_forgotten():
    graph = u_graph(neighbours=3)
    graph.cached_goals = 2
    first = graph.steps_to(10)
    assert graph.steps_to(10) is first  # served from the cache
    graph.steps_to(9), graph.steps_to(8)
    assert list(graph._paths) == [9, 8]
    np.testing.assert_array_equal(graph.steps_to(10)[0], first[0])  # recomputed, the same


def test_a_wide_merge_radius_lets_the_graph_jump_across_the_u():
    """The radius is what keeps merges from cutting through walls: widen it and the path shortcuts."""
    graph = u_graph(neighbours=10, merge_radius=3.5)
    assert graph.steps_to(len(graph) - 1)[0][0] == pytest.approx(3.0, abs=1e-4)


def test_bad_graph_inputs_raise():
    with pytest.raises(ValueError, match="non-empty"):
        WaypointGraph(torch.zeros(0, 2), [])
    with pytest.raises(ValueError, match="sum to 3"):
        WaypointGraph(torch.zeros(3, 2), [2, 2])
    with pytest.raises(ValueError, match="NaN or inf"):
        WaypointGraph(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), [2])
    with pytest.raises(ValueError, match="no transitions"):
        WaypointGraph(torch.zeros(2, 2), [1, 1])
    graph = u_graph()
    with pytest.raises(ValueError, match="numbers per frame"):
        graph.nearest(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="lookahead"):
        graph.waypoints(torch.zeros(1, 2), torch.zeros(1, 2), lookahead=0)


@pytest.fixture(scope="module")
def world(tiny_imagine_world):
    torch.set_num_threads(1)
    model = WorldModel.load(tiny_imagine_world.path)
    graph = WaypointGraph.from_datasets(model, [tiny_imagine_world.random_dir, tiny_imagine_world.expert_dir],
                                        progress=False)
    return model, graph


def test_graph_from_datasets_has_a_node_per_model_step_of_every_episode(world, tiny_imagine_world):
    from wm_gym.data.dataset import load_episodes

    model, graph = world
    fs = model.config.frameskip
    frames = [f for d in (tiny_imagine_world.random_dir, tiny_imagine_world.expert_dir) for f in load_episodes(d).frames]
    assert graph.lengths.tolist() == [len(range(0, len(f), fs)) for f in frames]
    assert graph.features.shape == (sum(graph.lengths), model.n_tokens * model.dim)
    # node features are the model's own normalised encodings of those frames
    first = model.encode(torch.from_numpy(np.ascontiguousarray(frames[0][::fs]))).flatten(1).cpu()
    torch.testing.assert_close(graph.features[: len(first)], first, atol=2e-2, rtol=0)  # fp16 cache
    with pytest.raises(ValueError, match="at least one dataset"):
        WaypointGraph.from_datasets(model, [])


def test_waypoint_planner_hands_the_inner_planner_the_waypoint_as_goal(world):
    model, graph = world
    env = WMImagineVectorEnv(num_envs=3, model=model, device="cpu")
    obs, _ = env.reset(seed=0)
    inner = make_planner("gbp", model, PlannerConfig(gbp_steps=2, horizon=2))
    planner = WaypointPlanner(inner, graph, lookahead=1.0)
    seen = []
    inner_predict = inner.predict
    inner.predict = lambda o, *a, **k: (seen.append(np.array(o)), inner_predict(o, *a, **k))[1]
    before = obs.copy()
    actions, _ = planner.predict(obs)
    assert actions.shape == (3, model.config.action_dim) and np.array_equal(obs, before)  # caller's obs untouched
    n = model.n_tokens * model.dim
    hist = torch.as_tensor(obs[:, :-n])
    expected, used = graph.waypoints(hist.view(3, -1, n)[:, -1], torch.as_tensor(obs[:, -n:]), 1.0)
    np.testing.assert_array_equal(seen[0][:, :-n], obs[:, :-n])  # the history is passed through
    np.testing.assert_allclose(seen[0][:, -n:], expected.numpy())
    assert planner.waypoint_fraction == [float(used.mean())]
    assert planner.seconds_per_plan == inner.seconds_per_plan > 0 and planner.expected is inner.expected
    with pytest.raises(ValueError, match="obs must be"):
        planner.predict(obs[:, :10])
    with pytest.raises(ValueError, match="build it with this model"):
        WaypointPlanner(inner, u_graph())


def test_plan_cli_with_waypoints(tiny_imagine_world, capsys):
    import json

    from wm_gym.cli import main

    rc = main(["plan", "--model", str(tiny_imagine_world.path), "--planner", "gbp", "--mpc", "--gbp-steps", "2",
               "--horizon", "2", "--episodes", "2", "--max-steps", "2", "--device", "cpu",
               "--waypoints", str(tiny_imagine_world.random_dir), "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out["episodes"] == 2 and out["plans"] >= 1 and 0 <= out["waypoint_fraction"] <= 1
