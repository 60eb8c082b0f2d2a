"""Throughput and model FLOP utilisation of a GRPO iteration on a random Qwen2-shaped model.

Commands, contenders and what is reported: configs/bench_llm.py.

Model FLOPs (the PaLM convention, Chowdhery et al. 2022, arXiv 2204.02311, App. B): a
forward pass costs `2 * M` FLOPs per token for the M weights of the matrix products (the
logits head counted even when tied) plus `4 * layers * H * Dh * ctx` for the attention scores
and values; a training step costs three forward passes. `ctx` is the sequence length for a
full pass and the mean cached context for a decoding step. Padding and causal masking are
not discounted.
"""

import json
import os

from absl import app
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxca import bench
from jaxca import estimators
from jaxca import lm
from jaxca import runs
from jaxca import sampling
from jaxca import train as train_lib
from jaxca.networks import hf
from jaxca.tasks import base

NAME = 'bench_llm'
# Dense bfloat16 peak TFLOP/s by device kind (vendor data sheets).
PEAK_TFLOPS = {
  'H200': 989.0,
  'H100': 989.0,
  'A100': 312.0,
  'TPU v4': 275.0,
  'TPU v5 lite': 197.0,
  'TPU v5e': 197.0,
  'TPU v5p': 459.0,
  'TPU v6 lite': 918.0,
}


class _Vocab:
  pad_id, eos_id = 0, 1

  def __init__(self, size):
    self.size = size


class BenchTask:
  """A synthetic task for timing: reward 1 iff most response tokens are even (pure JAX)."""

  batch_keys = ('prompts',)

  def __init__(self, vocab_size, prompt_len, response_len):
    self.vocab = _Vocab(vocab_size)
    self.prompt_len, self.response_len = prompt_len, response_len

  def outcome(self, responses, mask, batch):
    even = jnp.sum(mask & (responses % 2 == 0), -1)
    return (2 * even > jnp.sum(mask, -1)).astype(jnp.float32)

  def exact_match(self, responses, mask, batch):
    return jnp.zeros(responses.shape[:-1], jnp.float32)

  def parse_steps(self, responses, mask):
    ids = jnp.where(mask, 0, -1).astype(jnp.int32)
    s = responses.shape[-1]
    valid = jnp.zeros(responses.shape[:-1] + (s,), bool).at[..., 0].set(True)
    kinds = jnp.where(valid, base.STEP_FILLER, base.STEP_NONE).astype(jnp.int32)
    return base.Steps(ids, kinds, jnp.full(kinds.shape, -1, jnp.int32), valid)

  def step_correct(self, responses, mask, batch):
    raise ValueError('no per-step verifier')

  def anchors(self, responses, mask, batch, steps):
    return None

  def eval_metrics(self, responses, mask, batch):
    return dict(final_answer=self.outcome(responses, mask, batch))


def model_flops(cfg: hf.HFConfig, tokens: int, ctx: float) -> float:
  """Forward FLOPs for `tokens` tokens each attending to `ctx` keys (module docstring)."""
  d, dh, h, hkv = cfg.hidden_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
  per_layer = d * (h + 2 * hkv) * dh + h * dh * d + 3 * d * cfg.intermediate_size
  matmul = cfg.num_layers * per_layer + d * cfg.vocab_size
  return tokens * (2.0 * matmul + 4.0 * cfg.num_layers * h * dh * ctx)


def num_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def peak_tflops(config) -> float | None:
  if config.peak_tflops:
    return float(config.peak_tflops)
  kind = jax.devices()[0].device_kind
  for name, value in PEAK_TFLOPS.items():
    if name.lower() in kind.lower():
      return value
  return None


def run(config, workdir=None) -> dict:
  """Times the contenders; writes results.json / results.md into `workdir` if given."""
  cfg = hf.HFConfig(family='qwen2', qkv_bias=True, tie_embeddings=True, **config.model)
  p, g, lp, n = config.prompts, config.group_size, config.prompt_len, config.response_len
  b, length = p * g, lp + n
  policy = hf.make_policy(cfg, dtype=config.dtype, max_len=length)
  task = BenchTask(cfg.vocab_size, lp, n)
  tx = train_lib.make_optimizer(dict(name='adam', lr=1e-6, max_grad_norm=1.0))
  key = jax.random.key(0)
  state = jax.jit(lm.make_init(policy, tx))(key)
  prompts = jax.random.randint(jax.random.key(1), (p, lp), 2, cfg.vocab_size)
  batch = {'prompts': prompts}
  update = jax.jit(
    lm.make_rl_update(
      policy,
      task,
      estimators.make('grpo'),
      tx,
      group_size=g,
      num_minibatches=config.num_minibatches,
    )
  )
  sample = jax.jit(
    lambda params, key: sampling.sample(
      policy,
      params,
      key,
      prompts,
      jnp.ones((p, lp), bool),
      num_samples=g,
      max_new_tokens=n,
      eos_id=task.vocab.eos_id,
      pad_id=task.vocab.pad_id,
    )
  )
  loss_fn = lm.make_ppo_loss(policy, prompt_len=lp)
  rollout = jax.jit(lm.make_rollout_fn(policy, task, estimators.make('grpo'), group_size=g))
  rb, _ = rollout(state['params'], None, batch, key)

  @jax.jit
  def train_step(params, opt_state, rb):
    grads = jax.grad(lambda q: loss_fn(q, rb)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  thunks = {
    'sample': lambda: sample(state['params'], key),
    'train_step': lambda: train_step(state['params'], state['opt_state'], rb),
    'rl_iteration': lambda: update(state, batch, key),
  }
  timings = bench.interleaved(thunks, config.reps)
  gen = b * n
  sample_flops = model_flops(cfg, b * lp, lp) / g + model_flops(cfg, gen, lp + n / 2)
  train_flops = 3 * model_flops(cfg, b * length, length)
  flops = {
    'sample': sample_flops,
    'train_step': train_flops,
    'rl_iteration': sample_flops + model_flops(cfg, b * length, length) + train_flops,
  }
  tokens = {'sample': gen, 'train_step': b * length, 'rl_iteration': b * length}
  peak = peak_tflops(config)
  rows = {}
  for name, t in timings.items():
    tflops = flops[name] / t.median_s / 1e12
    rows[name] = dict(
      median_ms=t.median_ms,
      first_call_s=t.first_s,
      reps=t.reps,
      tokens=tokens[name],
      tokens_per_s=tokens[name] / t.median_s,
      model_tflops_per_s=tflops,
      mfu=None if peak is None else tflops / peak,
    )
  result = dict(
    rows=rows,
    environment=bench.environment(),
    model=dict(config.model.to_dict(), params=num_params(state['params'])),
    dtype=config.dtype,
    prompts=p,
    group_size=g,
    prompt_len=lp,
    response_len=n,
    peak_tflops=peak,
  )
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(result, f, indent=1, default=str)
    lines = [
      f'# GRPO iteration throughput: Qwen2-shaped, {result["model"]["params"] / 1e6:.1f}M '
      f'params, {config.dtype}, P={p}, G={g}, Lp={lp}, N={n}',
      '',
      f'Devices: {result["environment"]["devices"]}. Load average at the end: '
      f'{result["environment"].get("loadavg_1_5_15")}. Peak: {peak or "unknown"} TFLOP/s.',
      '',
      '| contender | median [ms] | tokens / call | tokens/s | model TFLOP/s | MFU | '
      'first call [s] |',
      '|---|---|---|---|---|---|---|',
    ]
    for name, r in rows.items():
      mfu = '-' if r['mfu'] is None else f'{100 * r["mfu"]:.1f}%'
      lines.append(
        f'| {name} | {r["median_ms"]:.1f} | {r["tokens"]} | {r["tokens_per_s"]:.0f} | '
        f'{r["model_tflops_per_s"]:.3f} | {mfu} | {r["first_call_s"]:.1f} |'
      )
    with open(os.path.join(workdir, 'results.md'), 'w') as f:
      f.write('\n'.join(lines) + '\n')
  return result


def _run(config, workdir):
  rows = run(config, workdir)['rows']
  return (
    f'sampling {rows["sample"]["tokens_per_s"]:,.0f} tokens/s, training '
    f'{rows["train_step"]["tokens_per_s"]:,.0f} tokens/s; results in '
    f'{os.path.join(workdir, "results.md")}'
  )


EXPERIMENT = runs.Experiment(
  NAME,
  _run,
  validate=lambda config: config,
  setup=lambda: jax.config.update('jax_threefry_partitionable', True),
)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  runs.define_flags(NAME)
  app.run(main)
