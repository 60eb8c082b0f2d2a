"""Host providers: Trajectory fields filled on the host between `collect` and `update`.

Some fields cannot be computed inside one jitted iteration: Monte-Carlo step values
(VinePPO, arXiv 2410.01679; SPO, arXiv 2505.23564) de-duplicate the states of the batch and
sample a data-dependent number of completions; HICRA-FAI's planning set (arXiv 2509.03646,
2510.13554) needs one extra forward with attention maps. A `HostProvider` declares the fields
it fills and how: `fill(params, data, key) -> (fields, stats)`, with `data` the
`lm.RolloutData` of `collect`. `make_iteration` runs collect, every host provider and update,
so the loops (`jaxca.loop`) and experiments never fill fields themselves.

`HOST_PROVIDERS` maps a field to its builder, `builder(policy, task, **options)`; an
experiment picks the builder of each field its estimator requires and no in-jit provider
fills (`host_fields`). Host-side code: it jits its own pieces (ahead of time, with the
compile seconds counted, `bench.Aot`) and moves arrays to the host; kernels never import it.
"""

import functools
import time
from typing import Callable
from typing import Dict
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxca import bench
from jaxca import prefixes
from jaxca.credit import mc
from jaxca.lm import providers as providers_lib


class HostProvider(NamedTuple):
  """A host-side provider of Trajectory fields.

  Attributes:
    fields: the Trajectory fields it fills.
    fill: `fill(params, data, key) -> (dict of [B, ...] arrays, dict of float stats)`; `key`
      is None unless `needs_key`.
    needs_key: whether `fill` draws random numbers (its key is split from the iteration's).
    compile_s: `() -> float`, seconds spent compiling its jitted pieces so far.
  """

  fields: tuple
  fill: Callable
  needs_key: bool = True
  compile_s: Callable[[], float] = lambda: 0.0


def mc_values(
  policy,
  task,
  *,
  num_samples: int,
  kind: str = 'steps',
  temperature=1.0,
  prob_threshold=0.9,
  cut_interval=1.0,
  min_bucket: int = 16,
) -> HostProvider:
  """Monte-Carlo values of the states before each step (`kind='steps'`, VinePPO) or each SPO
  cut (`kind='spo'`): `prefixes.mc_step_values` over the batch's unique states, each completed
  `num_samples` times by `providers.mc_complete_and_score` (one prefill per prefix, jitted once
  per power-of-two bucket of at least `min_bucket` states).

  Stats: mc_states (unique states), mc_bucket, mc_tokens_iter (generated tokens),
  mc_state_slots (states before de-duplication).
  """
  if kind not in ('steps', 'spo'):
    raise ValueError(f"mc_values: `kind` must be 'steps' or 'spo'; got {kind!r}.")
  if num_samples < 1:
    raise ValueError(f'mc_values: `num_samples` must be >= 1; got {num_samples}.')

  def states(data):
    if kind == 'spo':
      ids = mc.spo_segments(data.log_probs, data.mask, prob_threshold, cut_interval)
    else:
      ids = task.parse_steps(data.responses, data.mask).step_ids
    prompts = data.tokens[:, : task.prompt_len]
    pmask = data.valid[:, : task.prompt_len]
    n = data.mask.shape[-1]
    return mc.step_prefixes(prompts, pmask, data.responses, data.mask, ids, n)

  def complete(params, key, tokens, mask, rows):
    return providers_lib.mc_complete_and_score(
      policy,
      task,
      params,
      key,
      tokens,
      mask,
      rows,
      num_samples=num_samples,
      max_new_tokens=task.response_len,
      temperature=temperature,
    )

  states_aot, complete_aot = bench.Aot(states), bench.Aot(complete)

  def fill(params, data, key):
    tokens, smask, exists = jax.device_get(states_aot(data))
    rows = jax.device_get(data.batch)

    def run(t, m, r):
      return jax.device_get(complete_aot(params, key, t, m, r))

    res = prefixes.mc_step_values(
      run, tokens, smask, exists, rows, num_samples=num_samples, minimum_bucket=min_bucket
    )
    stats = dict(
      mc_states=float(res.num_unique),
      mc_bucket=float(res.bucket),
      mc_tokens_iter=float(res.samples['generated']),
      mc_state_slots=float(np.asarray(exists).sum()),
    )
    return {'mc_values': jnp.asarray(res.values)}, stats

  return HostProvider(
    ('mc_values',), fill, True, lambda: states_aot.compile_s + complete_aot.compile_s
  )


def fai_planning(policy, task, *, fraction=0.2) -> HostProvider:
  """HICRA-FAI's planning set: `providers.fai_planning` on the batch (one extra forward)."""
  fn = functools.partial(providers_lib.fai_planning, policy)
  aot = bench.Aot(lambda p, t, v, f: fn(p, t, v, task.prompt_len, f))
  frac = jnp.float32(fraction)

  def fill(params, data, key):
    del key
    return {'planning': aot(params, data.tokens, data.valid, frac)}, {}

  return HostProvider(('planning',), fill, False, lambda: aot.compile_s)


HOST_PROVIDERS: Dict[str, Callable[..., HostProvider]] = {
  'mc_values': mc_values,
  'planning': fai_planning,
}


def host_fields(hosts) -> tuple:
  """The fields a sequence of `HostProvider`s fills (for `lm.make_rl_phases(host_fields=)`)."""
  out = []
  for h in hosts:
    for f in h.fields:
      if f in out:
        raise ValueError(f'Two host providers fill the field {f!r}.')
      out.append(f)
  return tuple(out)


class Timing(NamedTuple):
  """Seconds of one iteration's phases, compiles excluded, and the compile seconds."""

  sample_s: float
  host_s: float
  train_s: float
  compile_s: float


def make_iteration(phases, hosts=(), *, hparams=None) -> Callable:
  """One RL iteration with host providers: collect (jitted), every host provider, update.

  Args:
    phases: `lm.RLPhases` (built with `host_fields=host_fields(hosts)`).
    hosts: `HostProvider`s.
    hparams: the estimator's hyper-parameters (traced), passed to every update.

  Returns:
    `step(state, batch, key) -> (state, metrics, stats, policy_tokens, Timing)`. The key is
    always split in three (sample, host, update), whatever the host providers, so arms of
    one seed draw their samples with the same keys. `metrics` are the update's (on the
    host); `stats` the host providers'; `policy_tokens` the number of sampled tokens.
  """
  hosts = tuple(hosts)
  collect, update = bench.Aot(phases.collect), bench.Aot(phases.update)

  def compile_s():
    return collect.compile_s + update.compile_s + sum(h.compile_s() for h in hosts)

  def step(state, batch, key):
    k_sample, k_host, k_update = jax.random.split(key, 3)
    t0, c0 = time.time(), compile_s()
    data = jax.block_until_ready(collect(state, batch, k_sample))
    t1, c1 = time.time(), compile_s()
    fields, stats = {}, {}
    for h in hosts:
      f, s = h.fill(state['params'], data, k_host if h.needs_key else None)
      fields.update(f)
      stats.update(s)
    t2, c2 = time.time(), compile_s()
    state, m = update(state, data, fields, k_update, hparams)
    m = jax.device_get(jax.block_until_ready(m))
    t3, c3 = time.time(), compile_s()
    timing = Timing(
      sample_s=(t1 - t0) - (c1 - c0),
      host_s=(t2 - t1) - (c2 - c1),
      train_s=(t3 - t2) - (c3 - c2),
      compile_s=c3 - c0,
    )
    tokens = float(np.asarray(data.lengths).sum())
    return state, m, stats, tokens, timing

  step.compile_s = compile_s
  return step
