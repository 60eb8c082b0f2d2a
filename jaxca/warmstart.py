"""Supervised warm start of the LM policy, cached in a workdir (host side: checkpoints, JSON).

Used by the reproductions that start every RL arm from one SFT policy (mc_credit,
token_credit, policy_objectives): Adam on (prompt, target) pairs until held-out greedy exact
match first reaches `config.warmstart.band[0]`, evaluated every `eval_every` steps. Like
`checkpoint` and `metrics`, this module does I/O and calls `jax.jit`; kernels never import it.
"""

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxca import checkpoint
from jaxca import lm
from jaxca import runs


def warm_start(config, task, policy, train, test, evaluate, workdir):
  """SFT until held-out greedy exact match first reaches the band; cached in the workdir."""
  ws = config.warmstart
  path = os.path.join(workdir, 'warmstart')
  info_path = os.path.join(workdir, 'warmstart.json')
  if os.path.exists(info_path):
    with open(info_path) as f:
      info = json.load(f)
    params = checkpoint.load_params(path)
    runs.note(f'warm start: reused ({info["steps"]} steps, exact match {info["exact_match"]:.3f})')
    return jax.tree.map(jnp.asarray, params), info
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(ws.lr))
  state = lm.make_init(policy, tx)(jax.random.key(config.seeds[0] + 1000))
  update = jax.jit(lm.make_sft_update(policy, task, tx))
  rng = np.random.default_rng(config.seeds[0] + 7)
  t0, em, step, curve = time.time(), 0.0, 0, []
  while step < ws.max_steps:
    idx = rng.integers(0, len(train['prompts']), ws.batch_size)
    state, _ = update(state, {'prompts': train['prompts'][idx], 'targets': train['targets'][idx]})
    step += 1
    if step % ws.eval_every == 0:
      em = evaluate(state['params'], test)['exact_match']
      curve.append((step, em))
      runs.at(f'warm start step {step}')
      if em >= ws.band[0]:
        break
  info = dict(steps=step, exact_match=float(em), seconds=time.time() - t0, curve=curve)
  if workdir:
    ckpt = checkpoint.Checkpointer(path, every=1, max_to_keep=1)
    ckpt.maybe_save(step, dict(params=state['params']), force=True)
    ckpt.close()
    with open(info_path, 'w') as f:
      json.dump(info, f)
  runs.note(f'warm start: {step} steps, held-out exact match {em:.3f} ({info["seconds"]:.0f} s)')
  return state['params'], info
