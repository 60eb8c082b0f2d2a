"""Sampling throughput, KV cache vs prefix recomputation. Commands: configs/bench_sampling.py."""

import functools
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jaxca import bench
from jaxca import networks
from jaxca import runs
from jaxca import sampling
from jaxca import tree_sampling

FLAGS = flags.FLAGS


NAME = 'bench_sampling'


def define_flags():
  """Defined only when run as a script, so tests can import several experiments."""
  runs.define_flags(NAME)


CONTENDERS = {'kv_cache': True, 'recompute': False}  # name -> use_cache


def _prompts(key, config):
  """[P, Lp] left-padded random prompts (ids >= 2, so never pad or EOS) and their mask."""
  tok_key, len_key = jax.random.split(key)
  p, lp = config.num_prompts, config.prompt_len
  tokens = jax.random.randint(tok_key, (p, lp), 2, config.vocab_size)
  lengths = jax.random.randint(len_key, (p,), config.min_prompt_len, lp + 1)
  mask = jnp.arange(lp)[None, :] >= (lp - lengths)[:, None]
  return jnp.where(mask, tokens, config.pad_id), mask


def run(config, workdir=None, command=None) -> dict:
  """Times both contenders; writes results.json / results.md to `workdir` if given.

  `command` is recorded in the results (default: the plain benchmark command).
  """
  policy = networks.make_policy(config.policy, vocab_size=config.vocab_size)
  init_key, prompt_key, sample_key = jax.random.split(jax.random.key(config.seed), 3)
  params = jax.jit(policy.init)(init_key)
  prompts, prompt_mask = _prompts(prompt_key, config)
  fns = {
    name: jax.jit(
      functools.partial(
        sampling.sample,
        policy,
        num_samples=config.num_samples,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        eos_id=config.eos_id,
        pad_id=config.pad_id,
        use_cache=use_cache,
      )
    )
    for name, use_cache in CONTENDERS.items()
  }
  thunks = {
    name: functools.partial(fn, params, sample_key, prompts, prompt_mask)
    for name, fn in fns.items()
  }
  outputs = {}
  logging.info('Compiling and timing %s x %d interleaved runs', list(thunks), config.reps)
  timings = bench.interleaved(thunks, config.reps, outputs=outputs, progress=runs.at)

  batch = config.num_prompts * config.num_samples
  steps = batch * config.max_new_tokens
  a, b = outputs['kv_cache'], outputs['recompute']
  rows = {}
  for name, timing in timings.items():
    out = outputs[name]
    rows[name] = dict(
      median_s=timing.median_s,
      times_s=list(timing.times_s),
      compile_and_first_run_s=timing.first_s,
      spread=timing.spread,
      decode_tokens_per_s=steps / timing.median_s,
      valid_tokens_per_s=float(out.mask.sum()) / timing.median_s,
      mean_response_len=float(out.lengths.mean()),
    )
  result = dict(
    command=command or 'python -m experiments.bench_sampling --config configs/bench_sampling.py',
    commit=runs.git_commit(),
    config=config.to_dict(),
    batch=batch,
    contenders=rows,
    speedup=timings['recompute'].median_s / timings['kv_cache'].median_s,
    same_tokens_fraction=float(np.mean(np.asarray(a.tokens) == np.asarray(b.tokens))),
    max_abs_log_prob_diff=float(np.max(np.abs(np.asarray(a.log_probs - b.log_probs)))),
    environment=bench.environment(),
  )
  result['mc_prefix'] = _mc_prefix_row(policy, params, jax.random.fold_in(sample_key, 1), config)
  if config.tree_branching:
    result['tree'] = _tree_row(
      policy, params, jax.random.fold_in(sample_key, 2), prompts, prompt_mask, config
    )
  logging.info(
    'speedup %.2fx, kv_cache %.0f tokens/s',
    result['speedup'],
    rows['kv_cache']['decode_tokens_per_s'],
  )
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'results.json'), 'w') as f:
      json.dump(result, f, indent=2, default=str)
    with open(os.path.join(workdir, 'results.md'), 'w') as f:
      f.write(_markdown(result, config))
  return result


def _mc_prefixes(key, config):
  """[U, Lp] random prefixes of varied length (right-padded: valid tokens first) and mask."""
  tok_key, len_key = jax.random.split(key)
  u, lp = config.mc_num_prefixes, config.mc_prefix_len
  tokens = jax.random.randint(tok_key, (u, lp), 2, config.vocab_size)
  lengths = jax.random.randint(len_key, (u,), max(1, lp // 2), lp + 1)
  mask = jnp.arange(lp)[None, :] < lengths[:, None]
  return jnp.where(mask, tokens, config.pad_id), mask


def _mc_prefix_row(policy, params, key, config):
  """Monte-Carlo completions (VinePPO/SPO values): U prefixes x n samples, shared prefill of
  each prefix (KV cache repeated n times) vs re-prefilling all U * n rows."""
  prefix_key, sample_key = jax.random.split(key)
  prefixes, mask = _mc_prefixes(prefix_key, config)
  return bench.prefix_sampling(
    policy,
    params,
    sample_key,
    prefixes,
    mask,
    reps=config.reps,
    num_samples=config.mc_num_samples,
    max_new_tokens=config.mc_max_new_tokens,
    eos_id=config.eos_id,
    pad_id=config.pad_id,
    temperature=config.temperature,
  )


def tree_contenders(policy, params, prompts, prompt_mask, *, branching, segment_len, **kw):
  """{name: (jitted fn(key) -> samples, generated tokens of those samples)}: one tree per
  prompt (`tree_sampling.sample_tree`: each prefix prefilled once, every node's KV cache
  copied to its children) vs prod(branching) independent samples of sum(segment_len) tokens
  (`sampling.sample`); `kw`: eos_id, pad_id, temperature."""
  common = dict(prompts=prompts, prompt_mask=prompt_mask, **kw)
  tree = functools.partial(
    tree_sampling.sample_tree, branching=tuple(branching), segment_len=tuple(segment_len)
  )
  indep = functools.partial(
    sampling.sample, num_samples=int(np.prod(branching)), max_new_tokens=sum(segment_len)
  )
  tree, indep = (jax.jit(lambda key, f=f: f(policy, params, key, **common)) for f in (tree, indep))
  return {
    'tree': (tree, lambda s: int(jnp.sum(s.generated))),
    'independent': (indep, lambda s: int(jnp.sum(s.lengths))),
  }


def _tree_row(policy, params, key, prompts, prompt_mask, config):
  """Tree sampling vs the same number of independent samples (leaves): time per call,
  generated tokens per call and per second, leaves per second."""
  fns = tree_contenders(
    policy, params, prompts, prompt_mask, branching=config.tree_branching,
    segment_len=config.tree_segment_len, eos_id=config.eos_id, pad_id=config.pad_id,
    temperature=config.temperature,
  )  # fmt: skip
  outputs = {}
  timings = bench.interleaved(
    {name: functools.partial(fn, key) for name, (fn, _) in fns.items()},
    config.reps,
    outputs=outputs,
    progress=runs.at,
  )
  leaves = config.num_prompts * int(np.prod(config.tree_branching))
  rows = {}
  for name, (_, count) in fns.items():
    t, tokens = timings[name], count(outputs[name])
    rows[name] = dict(
      median_s=t.median_s,
      times_s=list(t.times_s),
      compile_and_first_run_s=t.first_s,
      spread=t.spread,
      generated_tokens=tokens,
      generated_tokens_per_s=tokens / t.median_s,
      leaves_per_s=leaves / t.median_s,
    )
  return dict(
    contenders=rows,
    leaves=leaves,
    speedup=timings['independent'].median_s / timings['tree'].median_s,
    token_ratio=rows['independent']['generated_tokens'] / rows['tree']['generated_tokens'],
  )


def _markdown(result, config):
  p = config.policy
  env = result['environment']
  lines = [
    '# Sampling benchmark: KV cache vs prefix recomputation',
    '',
    f'Command: `{result["command"]}`, commit `{result["commit"]}`.',
    '',
    f'Model: depth {p.depth}, width {p.width}, {p.num_heads} heads, vocab {config.vocab_size}, '
    f'{p.dtype}. Batch: {config.num_prompts} prompts x {config.num_samples} samples = '
    f'{result["batch"]} sequences, prompt length {config.prompt_len}, '
    f'{config.max_new_tokens} new tokens. Median of {config.reps} interleaved runs after compile.',
    f'Backend {env["backend"]} ({env["cpu_count"]} CPUs, load {env["loadavg_1_5_15"]}).',
    '',
    '| contender | median s | decode tokens/s | compile+first s | spread |',
    '|---|---|---|---|---|',
  ]
  for name, r in result['contenders'].items():
    lines.append(
      f'| {name} | {r["median_s"]:.4f} | {r["decode_tokens_per_s"]:,.0f} | '
      f'{r["compile_and_first_run_s"]:.2f} | {r["spread"]:.2f} |'
    )
  lines += [
    '',
    f'**Speedup of the KV cache: {result["speedup"]:.1f}x** (target >= 5x). '
    f'Same sampled tokens: {100 * result["same_tokens_fraction"]:.1f}%; max |log-prob diff| '
    f'{result["max_abs_log_prob_diff"]:.2e}.',
    '',
  ]
  mc = result.get('mc_prefix')
  if mc:
    lines += [
      '## Monte-Carlo completions from shared prefixes (VinePPO / SPO values)',
      '',
      f'{config.mc_num_prefixes} prefixes of {config.mc_prefix_len // 2}-{config.mc_prefix_len} '
      f'tokens x {config.mc_num_samples} completions of {config.mc_max_new_tokens} tokens = '
      f'{mc["num_completions"]} completions. shared_prefill: each prefix prefilled once and its '
      'KV cache repeated (`sampling.sample_from_prefixes`); naive_prefill: every completion '
      're-prefills its prefix.',
      '',
      '| contender | median s | completions/s | compile+first s | spread |',
      '|---|---|---|---|---|',
    ]
    for name, r in mc['contenders'].items():
      lines.append(
        f'| {name} | {r["median_s"]:.4f} | {r["completions_per_s"]:,.0f} | '
        f'{r["compile_and_first_run_s"]:.2f} | {r["spread"]:.2f} |'
      )
    lines += [
      '',
      f'**Speedup of shared prefill: {mc["speedup"]:.1f}x.** Same sampled tokens: '
      f'{100 * mc["same_tokens_fraction"]:.1f}%.',
      '',
    ]
  tr = result.get('tree')
  if tr:
    lines += [
      '## Tree sampling vs independent samples (tree credit)',
      '',
      f'{config.num_prompts} prompts, one tree each: branching {tuple(config.tree_branching)}, '
      f'{tuple(config.tree_segment_len)} tokens per level = {tr["leaves"]} leaves of '
      f'{sum(config.tree_segment_len)} tokens; vs as many independent samples '
      '(`sampling.sample`). A tree samples each shared prefix once '
      "(`tree_sampling.sample_tree`: one prefill, every node's KV cache copied to its "
      'children). Generated tokens count what was sampled (shared prefixes once).',
      '',
      '| contender | median s | generated tokens / call | generated tokens/s | leaves/s | '
      'compile+first s | spread |',
      '|---|---|---|---|---|---|---|',
    ]
    for name, r in tr['contenders'].items():
      lines.append(
        f'| {name} | {r["median_s"]:.4f} | {r["generated_tokens"]:,} | '
        f'{r["generated_tokens_per_s"]:,.0f} | {r["leaves_per_s"]:,.0f} | '
        f'{r["compile_and_first_run_s"]:.2f} | {r["spread"]:.2f} |'
      )
    lines += [
      '',
      f'**Leaves per second, tree over independent: {tr["speedup"]:.2f}x**, with '
      f'{tr["token_ratio"]:.2f}x fewer generated tokens.',
      '',
    ]
  return '\n'.join(lines)


def _run(config, workdir):
  command = ' '.join(['python -m experiments.bench_sampling'] + sys.argv[1:])
  result = run(config, workdir, command)
  kv = result['contenders']['kv_cache']['decode_tokens_per_s']
  return (
    f'KV-cache sampling: {result["speedup"]:.1f}x the speed of recomputing the prefix '
    f'({kv:,.0f} decode tokens/s); results in {os.path.join(workdir, "results.md")}'
  )


EXPERIMENT = runs.Experiment(
  NAME,
  _run,
  validate=lambda config: config,
  resume_hint='A benchmark does not resume: rerun the same command to start it again.',
)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  define_flags()
  app.run(main)
