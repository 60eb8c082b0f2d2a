"""jaxca.loop.run_arm's budgets with a fake phased step (no model)."""

import numpy as np
import pytest

from jaxca import loop
from jaxca.lm import host as host_lib


def _arm(tokens_per_iter):
  def step(state, batch, key):
    del batch, key
    timing = host_lib.Timing(0.0, 0.0, 0.0, 0.0)
    return dict(state, n=state['n'] + 1), {'loss': 0.0}, {}, tokens_per_iter, timing

  step.compile_s = lambda: 0.0
  return loop.ArmSteps('fake', lambda p, s: {'params': p, 'n': 0}, step, phased=True)


@pytest.mark.parametrize('max_tokens, iters', [(25.0, 3), (30.0, 3), (31.0, 4), (float('inf'), 6)])
def test_max_tokens_stops_after_the_iteration_that_reaches_it(max_tokens, iters):
  train = {'prompts': np.zeros((8, 2), np.int32)}
  records, state, _ = loop.run_arm(
    _arm(10.0), np.zeros(()), 0, train, None, lambda p, b: {'exact_match': 0.0},
    iterations=6, prompts=2, eval_every=1, max_tokens=max_tokens, counters=('policy_tokens',),
  )  # fmt: skip
  assert records[-1]['iteration'] == iters == state['n']
  assert records[-1]['tokens'] == 10.0 * iters
