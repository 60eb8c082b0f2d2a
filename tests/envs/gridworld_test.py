"""jaxca.envs.gridworld: the Bifurcated Gridworld layout, dynamics and table lookups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxca import envs
from jaxca.envs import gridworld

GAMMA = 0.9


@pytest.fixture(scope='module')
def env():
  return envs.make('bifurcated_gridworld')


def _cell(env, xy):
  cells = [tuple(c) for c in np.asarray(env.cells)]
  return cells.index(tuple(xy))


def _walk(env, actions):
  s = int(gridworld.reset(env))
  total, t = 0.0, 0
  for t, a in enumerate(actions):
    s2, r, term = (
      int(v) if i != 1 else float(v)
      for i, v in enumerate(gridworld.step(env, jnp.int32(s), jnp.int32(a)))
    )
    total += GAMMA**t * r
    if term:
      return s, total, True, t + 1
    s = s2
  return s, total, False, t + 1


def test_layout(env):
  # 14 free cells; walls at x in {0, 1}, y >= 1 and x = 3, 1 <= y <= 3 (official blocks set).
  walls = {(x, y) for x in (0, 1) for y in range(1, 5)} | {(3, 1), (3, 2), (3, 3)}
  free = {(x, y) for x in range(5) for y in range(5)} - walls
  assert env.num_states == 14 and env.num_actions == 4
  assert {tuple(c) for c in np.asarray(env.cells)} == free
  assert tuple(np.asarray(env.cells)[int(env.start_state)]) == (0, 0)
  goal = _cell(env, (4, 2))
  terminal = np.asarray(env.terminal)
  assert terminal[goal].all() and terminal.sum() == 4
  np.testing.assert_array_equal(np.asarray(env.reward)[goal], 1.0)
  assert np.asarray(env.reward).sum() == 4  # reward only for actions taken in the goal


def test_walls_and_borders_block(env):
  s0 = _cell(env, (0, 0))
  ns = np.asarray(env.next_state)
  assert ns[s0, gridworld.UP] == s0  # wall above the start
  assert ns[s0, gridworld.LEFT] == s0  # border
  assert ns[s0, gridworld.DOWN] == s0
  assert ns[s0, gridworld.RIGHT] == _cell(env, (1, 0))
  corridor = _cell(env, (2, 2))
  assert ns[corridor, gridworld.RIGHT] == corridor  # wall at (3, 2)
  assert ns[corridor, gridworld.LEFT] == corridor  # wall at (1, 2)
  assert ns[corridor, gridworld.UP] == _cell(env, (2, 3))


def test_shortest_and_long_route(env):
  assert gridworld.shortest_path_length(env) == 6
  short = [gridworld.RIGHT] * 4 + [gridworld.UP] * 2 + [gridworld.LEFT]
  _, ret, done, steps = _walk(env, short)
  assert done and steps == 7 and ret == pytest.approx(GAMMA**6)
  long_route = [gridworld.RIGHT] * 2 + [gridworld.UP] * 4 + [gridworld.RIGHT] * 2
  long_route += [gridworld.DOWN] * 2 + [gridworld.UP]
  _, ret, done, steps = _walk(env, long_route)
  assert done and steps == 11 and ret == pytest.approx(GAMMA**10)
  # Stopping next to the goal earns nothing.
  s, ret, done, _ = _walk(env, [gridworld.RIGHT] * 4 + [gridworld.UP])
  assert not done and ret == 0.0 and tuple(np.asarray(env.cells)[s]) == (4, 1)


def test_step_is_vmappable_and_jittable(env):
  states = jnp.arange(env.num_states)
  actions = jnp.full_like(states, gridworld.RIGHT)
  got = jax.jit(jax.vmap(lambda s, a: gridworld.step(env, s, a)))(states, actions)
  want = gridworld.step(env, states, actions)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g, w)


def test_bad_layouts_and_names_fail_clearly():
  with pytest.raises(ValueError, match='choices'):
    envs.make('nope')
  with pytest.raises(ValueError, match='exactly one S'):
    gridworld.from_layout('..\n.G\n')
  with pytest.raises(ValueError, match='unknown characters'):
    gridworld.from_layout('S?\n.G\n')
  with pytest.raises(ValueError, match='equal width'):
    gridworld.from_layout('S..\n.G\n')
