"""jaxca's LM RL loop side by side with tunix on the same random Qwen2-shaped checkpoint.

Commands, contenders and what is reported: configs/bench_llm_peer.py. tunix (Google's JAX
post-training library, `google-tunix`, https://github.com/google/tunix) is an optional extra
(`pip install -e ".[peer]"`); without it the command exits 2 with one line.

A benchmark of two different computations is not a comparison: `logits_check` loads ONE
checkpoint into both models and compares their logits on the same tokens before anything is
timed; `greedy_agreement` also records how many greedy tokens the two samplers share.
"""

import json
import os
import statistics
import tempfile
import time

from absl import app
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import bench_llm
from jaxca import bench
from jaxca import estimators
from jaxca import lm
from jaxca import loop
from jaxca import runs
from jaxca import sampling
from jaxca.networks import hf

NAME = 'bench_llm_peer'
PAIRS = ('sample_greedy', 'sample_t1', 'train_step', 'grpo_iteration')
PAD_ID, EOS_ID = bench_llm._Vocab.pad_id, bench_llm._Vocab.eos_id  # noqa: SLF001
ConfigError = runs.ConfigError


def import_tunix():
  """The tunix modules used here; ConfigError (one line) when tunix is not installed."""
  try:
    from flax import nnx  # noqa: PLC0415
    from tunix.generate import sampler as tunix_sampler  # noqa: PLC0415
    from tunix.models.qwen2 import model as tunix_model  # noqa: PLC0415
    from tunix.models.qwen2 import params as tunix_params  # noqa: PLC0415
    from tunix.rl import algo_core  # noqa: PLC0415
    from tunix.rl.grpo import grpo_learner  # noqa: PLC0415
  except ImportError as e:
    raise ConfigError(
      f'bench_llm_peer needs tunix ({e.name} not importable): pip install -e ".[peer]" '
      '(BUILD_NOTES.md > Environment).'
    ) from None
  return dict(
    nnx=nnx,
    sampler=tunix_sampler,
    model=tunix_model,
    params=tunix_params,
    algo_core=algo_core,
    grpo=grpo_learner,
  )


class IdTokenizer:
  """The four ids tunix's `Sampler` asks its tokenizer for; text is space-separated ids."""

  def __init__(self, pad_id, eos_id):
    self._pad, self._eos = pad_id, eos_id

  def encode(self, text, **kwargs):
    return [int(t) for t in text.split()]

  def decode(self, ids, **kwargs):
    return ' '.join(str(int(i)) for i in ids)

  def bos_id(self):
    return None

  def eos_id(self):
    return self._eos

  def pad_id(self):
    return self._pad


def hf_config(model) -> hf.HFConfig:
  return hf.HFConfig(family='qwen2', qkv_bias=True, tie_embeddings=True, **model)


def tunix_config(t, cfg: hf.HFConfig, dtype: str):
  """tunix's `ModelConfig` of the same architecture."""
  return t['model'].ModelConfig(
    num_layers=cfg.num_layers,
    vocab_size=cfg.vocab_size,
    embed_dim=cfg.hidden_size,
    hidden_dim=cfg.intermediate_size,
    num_heads=cfg.num_heads,
    head_dim=cfg.head_dim,
    num_kv_heads=cfg.num_kv_heads,
    rope_theta=cfg.rope_theta,
    norm_eps=cfg.rms_eps,
    use_tied_embedding=cfg.tie_embeddings,
    dtype=jnp.dtype(dtype),
    param_dtype=jnp.float32,
  )


def load_both(t, config, directory):
  """Writes one random checkpoint to `directory`; returns (jaxca policy, params, tunix model)."""
  cfg = hf_config(config.model)
  length = config.prompt_len + config.response_len
  init = hf.make_policy(cfg, max_len=length).init
  hf.save_pretrained(directory, cfg, jax.device_get(init(jax.random.key(config.seed))))
  policy, params = hf.load_pretrained(directory, dtype=config.dtype, max_len=length)
  model = t['params'].create_model_from_safe_tensors(
    directory, tunix_config(t, cfg, config.dtype), dtype=jnp.float32
  )
  return policy, params, model


def logits_check(policy, params, model, tokens) -> dict:
  """Both models' logits on `tokens` [B, L] (every position valid, causal attention)."""
  valid = jnp.ones(tokens.shape, bool)
  ours = policy.apply(params, tokens, valid).logits
  positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
  causal = jnp.tril(jnp.ones((tokens.shape[1],) * 2, bool))[None].repeat(tokens.shape[0], 0)
  theirs, _ = model(tokens, positions, None, causal)
  diff = float(jnp.max(jnp.abs(ours.astype(jnp.float32) - theirs.astype(jnp.float32))))
  scale = float(jnp.max(jnp.abs(theirs)))
  return dict(max_abs_diff=diff, max_abs_logit=scale, relative=diff / max(scale, 1e-30))


def pair_ratios(timings, a: str, b: str) -> dict:
  """Per-round ratios time(b) / time(a) of two interleaved contenders: min / median / max."""
  ratios = [tb / ta for ta, tb in zip(timings[a].times_s, timings[b].times_s)]
  return dict(timed=ratios, min=min(ratios), median=statistics.median(ratios), max=max(ratios))


def _tunix_sampler(t, model, cfg, rows, config):
  """A thunk factory over tunix's Sampler engine: (greedy, key) -> token buffer [B, Lp + N]."""
  total = config.prompt_len + config.response_len
  s = t['sampler'].Sampler(
    model,
    IdTokenizer(PAD_ID, EOS_ID),
    t['sampler'].CacheConfig(
      cache_size=total,
      num_layers=cfg.num_layers,
      num_kv_heads=cfg.num_kv_heads,
      head_dim=cfg.head_dim,
    ),
  )
  # What Sampler.__call__ sets from its tokenizer; no token is -1, so the decode loop runs
  # all N steps, as jaxca's scan does (equal work; EOS and the mask are applied afterwards).
  s.eos_ids = jnp.array([-1])

  def sample(greedy, key):
    state = s.init_sample_state(
      rows,
      total_sampling_steps=total,
      include_logits=False,
      forbidden_token_ids=None,
      temperature=0.0 if greedy else 1.0,
      top_p=None if greedy else 1.0,
      top_k=None,
      seed=jax.random.fold_in(key, 0),  # a fresh array: the engine donates its state
      beam_size=None,
    )
    weights = s._flattened_transformer_state  # noqa: SLF001 (the engine, as __call__ runs it)
    state = s._compiled_prefill_fn(weights, state, None, echo=False)  # noqa: SLF001
    state = s._compiled_decode_fn(weights, state)  # noqa: SLF001
    return state.token_buffer

  return sample


@jax.jit
def _completion_mask(completions):
  """True through the first EOS (tunix's `make_completion_mask`), as jaxca's sampler."""
  eos = completions == EOS_ID
  before = jnp.cumsum(eos, axis=1) - eos
  return before == 0


def run(config, workdir=None) -> dict:
  """Checks the logits, times the pairs; writes results.json / results.md into `workdir`."""
  t = import_tunix()
  nnx = t['nnx']
  t_start, load_start = time.time(), bench.load_average()
  cfg = hf_config(config.model)
  p, g, lp, n = config.prompts, config.group_size, config.prompt_len, config.response_len
  b, m = p * g, config.num_minibatches
  with tempfile.TemporaryDirectory(prefix='jaxca_peer_') as directory:
    policy, params, model = load_both(t, config, directory)
  key = jax.random.key(config.seed + 1)
  prompts = jax.random.randint(jax.random.fold_in(key, 0), (p, lp), 2, cfg.vocab_size)
  probe = jax.random.randint(jax.random.fold_in(key, 1), (2, lp + n), 2, cfg.vocab_size)
  check = logits_check(policy, params, model, probe)
  if not check['relative'] <= config.logits_rtol:
    raise RuntimeError(
      f'jaxca and tunix logits differ by {check["max_abs_diff"]:.3g} (largest logit '
      f'{check["max_abs_logit"]:.3g}) > logits_rtol={config.logits_rtol}: not the same model.'
    )

  task = bench_llm.BenchTask(cfg.vocab_size, lp, n)
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-6))
  rows = jnp.repeat(prompts, g, axis=0)

  # jaxca.
  def jaxca_sample(greedy):
    return jax.jit(
      lambda params, key: sampling.sample(
        policy, params, key, prompts, jnp.ones((p, lp), bool), num_samples=g,
        max_new_tokens=n, eos_id=EOS_ID, pad_id=PAD_ID, greedy=greedy,
      ).responses
    )  # fmt: skip

  sample_greedy, sample_t1 = jaxca_sample(True), jaxca_sample(False)
  rollout = jax.jit(lm.make_rollout_fn(policy, task, estimators.make('grpo'), group_size=g))
  state = lm.init_from_params(params, tx)
  rb, _ = rollout(params, None, {'prompts': prompts}, key)
  loss_fn = lm.make_ppo_loss(policy, prompt_len=lp)  # token-mean PPO-clip, eps 0.2

  @jax.jit
  def train_step(params, opt_state, rb):
    grads = jax.grad(lambda q: loss_fn(q, rb)[0])(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  update = jax.jit(
    lm.make_rl_update(policy, task, estimators.make('grpo'), tx, group_size=g, num_minibatches=m)
  )

  # tunix: the same checkpoint, optimizer, tokens and rollout.
  tunix_sample = _tunix_sampler(t, model, cfg, rows, config)
  algo = t['grpo'].GRPOConfig(
    num_generations=g, num_iterations=1, beta=0.0, epsilon=0.2, loss_agg_mode='token-mean'
  )
  algo.temperature = 1.0  # GRPOLearner copies it from its rollout config
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)

  def tunix_step(model, optimizer, example):
    loss = lambda mdl: t['algo_core'].grpo_loss_fn(mdl, example, algo, PAD_ID, EOS_ID)
    (value, _), grads = nnx.value_and_grad(loss, has_aux=True)(model)
    optimizer.update(model, grads)
    return value

  tunix_step = nnx.jit(tunix_step, donate_argnames=('optimizer',))  # as tunix's trainer

  def example(prompt_ids, completions, mask, advantages, old=None):
    return t['grpo'].TrainExample(
      prompt_ids=prompt_ids,
      prompt_mask=prompt_ids != PAD_ID,
      completion_ids=completions,
      completion_mask=mask,
      advantages=advantages,
      ref_per_token_logps=None,
      old_per_token_logps=old,
    )

  rb_example = example(
    rb.tokens[:, :lp], rb.tokens[:, lp:], rb.mask, rb.advantages[:, 0], rb.old_log_probs
  )
  # The profile's first reading: XLA's count of the floating-point operations of each
  # library's compiled train step (`cost_analysis`), the same program the timings run.
  graph, nstate = nnx.split((model, optimizer))

  def tunix_pure(nstate, ex):
    mdl, opt = nnx.merge(graph, nstate)
    loss = lambda m_: t['algo_core'].grpo_loss_fn(m_, ex, algo, PAD_ID, EOS_ID)  # noqa: E731
    _, grads = nnx.value_and_grad(loss, has_aux=True)(mdl)
    opt.update(mdl, grads)
    return nnx.state((mdl, opt))

  score = jax.jit(lambda c, mask: task.outcome(c, mask, None))

  def tunix_iteration():
    # GRPOLearner's order: generate, reward, advantages (host NumPy, its estimator), update;
    # with num_iterations=1 it computes no old log-probs (the ratio's denominator is the
    # stop-gradient of the current ones).
    completions = tunix_sample(False, key)[:, lp:]
    mask = _completion_mask(completions)
    rewards = np.asarray(score(completions, mask))
    adv = jnp.asarray(t['algo_core'].compute_advantages(rewards, g))
    completions = jnp.where(mask, completions, PAD_ID)
    for i in range(m):
      sl = slice(i * b // m, (i + 1) * b // m)
      out = tunix_step(model, optimizer, example(rows[sl], completions[sl], mask[sl], adv[sl]))
    return out

  thunks = {
    'jaxca/sample_greedy': lambda: sample_greedy(params, key),
    'tunix/sample_greedy': lambda: tunix_sample(True, key),
    'jaxca/sample_t1': lambda: sample_t1(params, key),
    'tunix/sample_t1': lambda: tunix_sample(False, key),
    'jaxca/train_step': lambda: train_step(params, state['opt_state'], rb),
    'tunix/train_step': lambda: tunix_step(model, optimizer, rb_example),
    'jaxca/grpo_iteration': lambda: update(state, {'prompts': prompts}, key),
    'tunix/grpo_iteration': tunix_iteration,
  }
  # Two untimed warm-up calls each: the first compiles; a stateful contender (tunix's
  # in-place nnx update) may compile again on the second, when its state's types settle.
  # Both count as compile time. The greedy tokens of the first calls (the loaded weights,
  # before any update) are compared.
  first = {}
  for name, thunk in thunks.items():
    out, first[name] = _timed(thunk)
    if name.endswith('sample_greedy'):
      first[name + ':out'] = np.asarray(out)
  ours, theirs = first['jaxca/sample_greedy:out'], first['tunix/sample_greedy:out'][:, lp:]
  agree = float(np.mean((ours == theirs)[np.asarray(_completion_mask(ours))]))
  timings = bench.interleaved(thunks, config.reps, progress=runs.at)
  # After the timings, so that these compiles do not warm any timed program.
  train_gflops = dict(
    jaxca=bench.xla_flops(train_step, params, state['opt_state'], rb) / 1e9,
    tunix=bench.xla_flops(jax.jit(tunix_pure), nstate, rb_example) / 1e9,
  )
  tokens = dict(sample_greedy=b * n, sample_t1=b * n, train_step=b * (lp + n))
  tokens['grpo_iteration'] = b * (lp + n)
  rows_out = {}
  for pair in PAIRS:
    row = dict(tokens=tokens[pair], ratio_tunix_over_jaxca_time=pair_ratios(
      timings, f'jaxca/{pair}', f'tunix/{pair}'))  # fmt: skip
    for who in ('jaxca', 'tunix'):
      tm = timings[f'{who}/{pair}']
      row[who] = dict(
        median_s=tm.median_s,
        times_s=list(tm.times_s),
        warmup_calls_s=[first[f'{who}/{pair}'], tm.first_s],
        compile_s=max(first[f'{who}/{pair}'] + tm.first_s - 2 * tm.median_s, 0.0),
        tokens_per_s=tokens[pair] / tm.median_s,
      )
    rows_out[pair] = row
  env = bench.environment()
  result = dict(
    rows=rows_out,
    logits_check=dict(check, rtol=config.logits_rtol),
    train_step_gflops=train_gflops,
    header=loop.header(NAME, t_start, load_start),
    greedy_agreement=agree,
    load_1min_before_after=[load_start, bench.load_average()],
    environment=env,
    tunix=_version('google-tunix'),
    flax=_version('flax'),
    model=dict(config.model.to_dict(), params=bench_llm.num_params(params)),
    dtype=config.dtype,
    prompts=p,
    group_size=g,
    prompt_len=lp,
    response_len=n,
    num_minibatches=m,
    reps=config.reps,
  )
  if workdir:
    write(result, workdir)
  return result


def _timed(thunk):
  start = time.perf_counter()
  out = jax.block_until_ready(thunk())
  return out, time.perf_counter() - start


def _version(dist):
  from importlib import metadata  # noqa: PLC0415

  try:
    return metadata.version(dist)
  except metadata.PackageNotFoundError:
    return None


def write(result, workdir):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'results.json'), 'w') as f:
    json.dump(result, f, indent=1, default=str)
  c, env = result['logits_check'], result['environment']
  lines = [
    f'# jaxca vs tunix {result["tunix"]}: Qwen2-shaped, {result["model"]["params"]:,} '
    f'params, {result["dtype"]}, P={result["prompts"]}, G={result["group_size"]}, '
    f'Lp={result["prompt_len"]}, N={result["response_len"]}, M={result["num_minibatches"]}',
    '',
    result['header'],
    '',
    f'Same model: max |logit difference| {c["max_abs_diff"]:.3g} (largest |logit| '
    f'{c["max_abs_logit"]:.3g}, allowed {c["rtol"]} of it); greedy tokens shared '
    f'{100 * result["greedy_agreement"]:.1f}% (through EOS).',
    f'Devices: {env["devices"]} ({env["cpu_model"]}); jax {env["jax"]}, flax {result["flax"]}. '
    f'1-min load before / after: {result["load_1min_before_after"][0]:.2f} / '
    f'{result["load_1min_before_after"][1]:.2f}. {result["reps"]} interleaved rounds.',
    '',
    '| pair | tokens / call | jaxca tokens/s | tunix tokens/s | tunix time / jaxca time '
    '(min / median / max) | compile jaxca / tunix [s] |',
    '|---|---|---|---|---|---|',
  ]
  for pair, r in result['rows'].items():
    q = r['ratio_tunix_over_jaxca_time']
    lines.append(
      f'| {pair} | {r["tokens"]} | {r["jaxca"]["tokens_per_s"]:,.0f} | '
      f'{r["tunix"]["tokens_per_s"]:,.0f} | {q["min"]:.2f} / {q["median"]:.2f} / '
      f'{q["max"]:.2f} | {r["jaxca"]["compile_s"]:.1f} / {r["tunix"]["compile_s"]:.1f} |'
    )
  gf = result['train_step_gflops']
  lines += [
    '',
    f'Train step, XLA cost analysis of the compiled programs: jaxca {gf["jaxca"]:.1f} GFLOP, '
    f'tunix {gf["tunix"]:.1f} GFLOP per call (at the median times above: jaxca '
    f'{gf["jaxca"] / result["rows"]["train_step"]["jaxca"]["median_s"]:.0f}, tunix '
    f'{gf["tunix"] / result["rows"]["train_step"]["tunix"]["median_s"]:.0f} GFLOP/s).',
  ]
  with open(os.path.join(workdir, 'results.md'), 'w') as f:
    f.write('\n'.join(lines) + '\n')


def _run(config, workdir):
  rows = run(config, workdir)['rows']
  per = ', '.join(f'{k} {r["ratio_tunix_over_jaxca_time"]["median"]:.2f}x' for k, r in rows.items())
  return f'jaxca speed over tunix (median per-round ratio): {per}; see {workdir}/results.md'


def validate(config):
  import_tunix()
  for key in ('prompts', 'group_size', 'prompt_len', 'response_len', 'num_minibatches', 'reps'):
    if not config[key] >= 1:
      raise ConfigError(f'config.{key} must be >= 1; got {config[key]}.')
  if config.group_size < 2:
    raise ConfigError(f'config.group_size must be >= 2 (GRPO); got {config.group_size}.')
  if (config.prompts * config.group_size) % config.num_minibatches:
    raise ConfigError('config.num_minibatches must divide prompts * group_size.')
  return config


EXPERIMENT = runs.Experiment(
  NAME,
  _run,
  validate=validate,
  setup=lambda: jax.config.update('jax_threefry_partitionable', True),
)


def main(argv):
  runs.main(EXPERIMENT)(argv)


if __name__ == '__main__':
  runs.define_flags(NAME)
  app.run(main)
