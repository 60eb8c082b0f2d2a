"""Records `multiturn.make_update` (the reduced multi-turn learner) after 2 iterations.

Run once, before that learner was deleted, to pin its result for the one learner
(tests/multiturn_test.py `OneLearnerTest.test_default_update_matches_the_old_multiturn_update`):
  JAX_PLATFORMS=cpu python -m tests.record_multiturn_fixture
"""

import jax
import numpy as np
import optax

from jaxca import estimators
from jaxca import lm
from jaxca.lm import multiturn
from tests import multiturn_test

PATH = 'tests/data/multiturn_update_2it.npz'


def main():
  env, policy, params, tasks = multiturn_test.fixture()
  est = estimators.make('gigpo_episode + gigpo_step', history=True)
  tx = optax.adam(1e-3)
  update = jax.jit(
    multiturn.make_update(policy, env, est, tx, group_size=multiturn_test.G, num_minibatches=2)
  )
  state = lm.init_from_params(params, tx)
  out = {}
  for i in range(2):
    state, m, _ = update(state, tasks, jax.random.fold_in(jax.random.key(5), i))
    out.update({f'metrics/{i}/{k}': np.asarray(v) for k, v in m.items()})
  for path, leaf in jax.tree_util.tree_leaves_with_path(state['params']):
    out['params' + jax.tree_util.keystr(path)] = np.asarray(leaf)
  np.savez_compressed(PATH, **out)
  print(f'{len(out)} arrays -> {PATH}')


if __name__ == '__main__':
  main()
