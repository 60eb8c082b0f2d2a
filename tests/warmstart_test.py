"""jaxca/warmstart.py: the validation split, the stop rule of `sft_loop`, the keyed cache.

* splits: train, validation and test never share a problem; test is what it was
  without a validation split, validation comes out of the old train side (checked
  against a per-row loop over `problem_hash`).
* `sft_loop`: stops at the first VALIDATION evaluation >= stop_at (a held-out metric
  that crosses earlier is ignored), evaluates on schedule and at the last step,
  re-judges the stop on resume, returns the curve.
* `warm_start`: a matching cache is reused (no SFT step runs); a cache made with a
  different task / policy / SFT config or seed, or one without a key, is refused with
  one line naming the differing keys and the way out, and left untouched.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxca import lm
from jaxca import runs
from jaxca import tasks
from jaxca import warmstart
from jaxca.networks import transformer
from jaxca.tasks import arith

# ------------------------------------------------------------------------------ splits


def _reference_split(prompts, test_fraction, validation_fraction):
  out = []
  for row in prompts:
    bucket = int(arith.problem_hash(row[None])[0]) % arith.NUM_BUCKETS
    n_test = max(1, round(arith.NUM_BUCKETS * test_fraction))
    n_val = max(1, round(arith.NUM_BUCKETS * validation_fraction)) if validation_fraction else 0
    out.append('test' if bucket < n_test else 'validation' if bucket < n_test + n_val else 'train')
  return np.asarray(out)


@pytest.mark.parametrize('vf', [0.0, 0.05, 0.3])
def test_split_names_matches_a_loop_and_keeps_test_membership(vf):
  task = tasks.make('arith', num_steps=2, modulus=10)
  prompts = task.generate(0, 400)['prompts']
  names = arith.split_names(prompts, 0.1, vf)
  np.testing.assert_array_equal(names, _reference_split(prompts, 0.1, vf))
  np.testing.assert_array_equal(names == 'test', arith.split_of(prompts, 0.1))
  if vf == 0.0:
    assert not (names == 'validation').any()
  else:
    assert (names == 'validation').any()


def test_split_names_rejects_a_bad_validation_fraction_in_one_line():
  with pytest.raises(ValueError, match=r'^`validation_fraction` must be in \[0, 1 - test_fraction'):
    arith.split_names(np.zeros((0, 3), np.int32), 0.1, 0.95)


def test_make_splits_are_disjoint_by_problem_and_test_is_unchanged():
  task = tasks.make('arith', num_steps=2, modulus=10)
  config = ml_collections.ConfigDict(
    dict(
      seeds=[3],
      data=dict(num_train=2000, num_test=200, validation_fraction=0.05, num_validation=200),
    )
  )
  train, val, test = warmstart.make_splits(config, task)
  rows = lambda b: {r.tobytes() for r in b['prompts']}  # noqa: E731
  assert not rows(train) & rows(val) and not rows(train) & rows(test) and not rows(val) & rows(test)
  assert len(rows(val)) == 200  # distinct
  assert (arith.split_names(val['prompts'], 0.1, 0.05) == 'validation').all()
  assert (arith.split_names(train['prompts'], 0.1, 0.05) == 'train').all()
  before = task.generate(4, 200, split='test')  # how the experiments drew test before
  np.testing.assert_array_equal(test['prompts'], before['prompts'])


def test_default_generate_is_unchanged_by_the_validation_knob():
  task = tasks.make('arith', num_steps=2, modulus=10)
  a = task.generate(1, 300, split='train')
  b = task.generate(1, 300, split='train', validation_fraction=0.0)
  np.testing.assert_array_equal(a['prompts'], b['prompts'])


# ------------------------------------------------------------------------------ sft_loop


def _loop(val, test, *, step=0, max_steps=10, eval_every=2, stop_at=0.5, per_call=1):
  """sft_loop on a counter 'model': evaluation at step s reads val[s] / test[s]."""
  calls, seen = [], []

  def advance(state, step):
    calls.append(step)
    return {'params': state['params'] + per_call}, {}

  def validate(params):
    return {'val_exact_match': val[params], 'eval_exact_match': test[params]}

  def on_step(step, state, m, evaluation, done):
    seen.append((step, evaluation is not None, done))

  state, step, curve = warmstart.sft_loop(
    {'params': step},
    step,
    advance=advance,
    validate=validate,
    max_steps=max_steps,
    eval_every=eval_every,
    stop_at=stop_at,
    steps_per_call=per_call,
    on_step=on_step,
  )
  return state, step, curve, calls, seen


def test_sft_loop_stops_on_validation_not_on_the_held_out_metric():
  val = {s: 0.1 * s for s in range(12)}  # crosses 0.5 at step 5 -> first eval at step 6
  test = {s: 0.9 for s in range(12)}  # would stop at the first evaluation
  state, step, curve, calls, seen = _loop(val, test)
  assert step == 6 and state['params'] == 6
  assert curve == [(2, val[2]), (4, val[4]), (6, val[6])]
  assert calls == [0, 1, 2, 3, 4, 5]
  assert [s for s, ev, _ in seen if ev] == [2, 4, 6] and seen[-1] == (6, True, True)


def test_sft_loop_without_stop_runs_to_max_steps_and_evaluates_the_last_step():
  val = {s: 1.0 for s in range(12)}
  _, step, curve, _, _ = _loop(val, val, max_steps=9, eval_every=4, stop_at=0.0)
  assert step == 9 and [s for s, _ in curve] == [4, 8, 9]


def test_sft_loop_stop_reads_a_float32_mean_at_the_threshold_as_reached():
  """Regression: 15 right of 50 as a float32 mean is 0.29999998 (sum x 1/50), which a plain
  `>= 0.3` read as below the stop."""
  at = float(np.float32(15) * np.float32(1 / 50))
  assert at < 0.3
  val = {s: (at if s >= 4 else 0.1) for s in range(12)}
  _, step, _, _, _ = _loop(val, val, stop_at=0.3)
  assert step == 4


def test_sft_loop_resumed_past_the_stop_takes_no_step():
  val = {s: 0.1 * s for s in range(12)}
  _, step, curve, calls, _ = _loop(val, val, step=8)
  assert step == 8 and calls == [] and curve == []
  _, step, _, calls, _ = _loop({**val, 8: 0.0}, val, step=8)  # below the stop at 8: goes on
  assert step == 10 and calls == [8, 9]


# ------------------------------------------------------------------------------ the cache

_TASK = dict(name='arith', num_steps=1, modulus=5)


def _config(**over):
  c = ml_collections.ConfigDict(
    dict(
      seeds=[0],
      task=dict(_TASK),
      data=dict(num_train=64, num_test=8, validation_fraction=0.2, num_validation=8),
      policy=dict(width=16, depth=1, num_heads=2, max_len=8, dtype='float32', value_head=False),
      warmstart=dict(max_steps=2, batch_size=8, eval_every=1, band=(0.99, 1.0), lr=1e-3),
    )
  )
  for key, value in over.items():
    section, name = key.split('.') if '.' in key else (key, None)
    if name is None:
      c[section] = value
    else:
      c[section][name] = value
  return c


def _run(config, workdir):
  task = tasks.make(**config.task)
  policy = transformer.make_policy(
    ml_collections.ConfigDict(config.policy.to_dict()), vocab_size=task.vocab.size
  )
  train, val, test = warmstart.make_splits(config, task)
  ev = jax.jit(lambda p, b: lm.mean_metrics(lm.make_eval_fn(policy, task)(p, b)))
  evaluate = lambda p, b: {k: float(v) for k, v in jax.device_get(ev(p, b)).items()}  # noqa: E731
  return warmstart.warm_start(config, task, policy, train, val, test, evaluate, workdir)


@pytest.fixture(scope='module')
def cached(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('ws'))
  params, info = _run(_config(), workdir)
  return workdir, params, info


def test_warm_start_writes_its_curve_key_and_checkpoint(cached):
  workdir, _, info = cached
  assert info['steps'] == 2 and [s for s, _ in info['curve']] == [1, 2]
  assert info['validation_exact_match'] == info['curve'][-1][1]
  with open(os.path.join(workdir, warmstart.CURVE_FILE)) as f:
    lines = f.read().split()
  assert lines[0] == 'step,validation_exact_match' and len(lines) == 3
  with open(os.path.join(workdir, warmstart.INFO_FILE)) as f:
    assert json.load(f)['key'] == info['key']
  assert os.path.isdir(os.path.join(workdir, warmstart.CKPT_DIR))


def test_matching_cache_is_reused_without_training(cached, monkeypatch):
  workdir, params, info = cached
  monkeypatch.setattr(lm, 'make_sft_update', lambda *a, **k: pytest.fail('retrained'))
  again, info2 = _run(_config(), workdir)
  assert info2 == json.loads(json.dumps(info))
  jax.tree.map(np.testing.assert_array_equal, again, params)


def test_start_is_the_splits_the_evaluator_and_the_cached_warm_start(cached):
  workdir, params, info = cached
  config = _config()
  task = tasks.make(**config.task)
  policy = transformer.make_policy(
    ml_collections.ConfigDict(config.policy.to_dict()), vocab_size=task.vocab.size
  )
  params0, info2, train, test, evaluate = warmstart.start(config, task, policy, workdir)
  assert info2 == json.loads(json.dumps(info))  # the cache of `_run`: the same key
  jax.tree.map(np.testing.assert_array_equal, params0, params)
  want_train, _, want_test = warmstart.make_splits(config, task)
  jax.tree.map(np.testing.assert_array_equal, train, want_train)
  jax.tree.map(np.testing.assert_array_equal, dict(test), want_test)
  direct = lm.mean_metrics(lm.make_eval_fn(policy, task)(params0, test))  # not jitted
  got = evaluate(params0, test)
  assert set(got) == set(direct) and all(isinstance(v, float) for v in got.values())
  for k, v in direct.items():
    np.testing.assert_allclose(got[k], float(v), rtol=1e-6)


@pytest.mark.parametrize(
  'over, named',
  [
    ({'warmstart.lr': 3e-4}, 'warmstart.lr'),
    ({'warmstart.band': (0.35, 0.6)}, 'warmstart.band'),
    ({'policy.width': 8}, 'policy.width'),
    ({'task.modulus': 7}, 'task.modulus'),
    ({'seeds': [1]}, 'seed'),
    ({'data.num_train': 32}, 'data'),
  ],
)
def test_stale_cache_is_refused_in_one_line_naming_the_differing_keys(cached, over, named):
  workdir = cached[0]
  info_path = os.path.join(workdir, warmstart.INFO_FILE)
  before = os.path.getmtime(info_path)
  with pytest.raises(runs.ConfigError) as err:
    _run(_config(**over), workdir)
  msg = str(err.value)
  assert '\n' not in msg and 'different config' in msg and f'remove {workdir}' in msg
  assert named in msg.split('differs: ')[1].split(';')[0]
  assert os.path.getmtime(info_path) == before  # the cache is left as it was


def test_cache_without_a_key_is_refused(tmp_path):
  (tmp_path / warmstart.INFO_FILE).write_text(json.dumps(dict(steps=3, exact_match=0.2, curve=[])))
  with pytest.raises(runs.ConfigError, match=r'has no key \(made before keyed caches\)'):
    _run(_config(), str(tmp_path))


def test_describe_keeps_the_warm_start_numbers():
  config = _config(**{'warmstart.band': (0.35, 0.6)})
  info = dict(steps=120, validation_exact_match=0.375, exact_match=0.3125)
  text = warmstart.describe(config, info)
  assert text == (
    'SFT (Adam 0.001, batch 8) for 120 steps, stopped at the first evaluation whose validation '
    'greedy exact match reached 35% (validation 37.5%, held-out 31.2%; SFT curve in '
    'warmstart_curve.csv)'
  )
  assert 'unreachable' in warmstart.describe(_config(**{'warmstart.band': (1.01, 1.0)}), info)


def test_curve_of_reads_the_warm_start_evaluations_in_order():
  records = [
    dict(phase='warmstart', step=2, loss=1.0),
    dict(phase='warmstart', step=4, val_exact_match=0.25, eval_exact_match=0.2),
    dict(phase='rl', step=4, val_exact_match=0.9),
    dict(phase='warmstart', step=6, val_exact_match=0.5),
  ]
  assert warmstart.curve_of(records) == [(4, 0.25), (6, 0.5)]


def test_sft_with_progress_is_sft_loop_with_a_record_per_evaluation():
  seen = []
  out = warmstart.sft_with_progress(
    {'params': 0}, advance=lambda s, step: ({'params': s['params'] + 2}, {'loss': 1.0}),
    validate=lambda p: {'v': p / 10}, max_steps=10, eval_every=4, stop_at=0.75,
    steps_per_call=2, metric='v', on_eval=lambda step, m, e: seen.append((step, e['v'])),
  )  # fmt: skip
  want = warmstart.sft_loop(
    {'params': 0}, 0, advance=lambda s, step: ({'params': s['params'] + 2}, {'loss': 1.0}),
    validate=lambda p: {'v': p / 10}, max_steps=10, eval_every=4, stop_at=0.75,
    steps_per_call=2, metric='v',
  )  # fmt: skip
  assert out == want and seen == want[2] == [(4, 0.4), (8, 0.8)]


def test_cached_trains_once_per_key_and_refuses_another_key(tmp_path, monkeypatch):
  monkeypatch.setattr(warmstart.runs, 'note', lambda *a, **k: None)
  calls = []

  def train():
    calls.append(1)
    return {'w': np.arange(3.0, dtype=np.float32)}, dict(steps=5, curve=[(5, 0.5)])

  workdir = str(tmp_path)
  p1, i1 = warmstart.cached(workdir, {'a': 1}, train, lambda i: 'reused', 'val')
  p2, i2 = warmstart.cached(workdir, {'a': 1}, train, lambda i: 'reused', 'val')
  assert len(calls) == 1 and i2['key'] == i1['key'] and i2['steps'] == 5
  assert i1['key'] == warmstart.section_key({'a': 1}) and i2['key_sections'] == {'a': 1}
  np.testing.assert_array_equal(p2['w'], p1['w'])
  with open(os.path.join(workdir, warmstart.CURVE_FILE)) as f:
    assert f.read().splitlines() == ['step,val', '5,0.500000']
  with pytest.raises(warmstart.runs.ConfigError, match='differs: a'):
    warmstart.cached(workdir, {'a': 2}, train, lambda i: 'reused')


def test_sft_minibatches_equals_a_plain_optax_loop_and_stops_on_validation():
  """Against a hand-written loop: the same minibatch indices (drawn from the same generator),
  clip 1.0 then Adam; the stop is sft_loop's."""
  import optax  # noqa: PLC0415

  x = np.linspace(-1, 1, 40, dtype=np.float32)[:, None]
  data = {'x': x, 'y': 3.0 * x[:, 0] - 1.0}

  def loss_fn(p, b):
    return jnp.mean((b['x'][:, 0] * p['w'] + p['b'] - b['y']) ** 2), {}

  p0 = {'w': jnp.float32(0.0), 'b': jnp.float32(0.0)}
  got, step, curve = warmstart.sft_minibatches(
    loss_fn, p0, data, lr=0.1, batch_size=8, rng=np.random.default_rng(3),
    validate=lambda p: {'fit': float(p['w']) / 3.0}, max_steps=30, eval_every=5, stop_at=2.0,
    metric='fit',
  )  # fmt: skip
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))
  p, opt, rng = p0, tx.init(p0), np.random.default_rng(3)
  for _ in range(30):
    idx = rng.integers(0, 40, 8)
    g = jax.grad(lambda q: loss_fn(q, {k: v[idx] for k, v in data.items()})[0])(p)
    u, opt = tx.update(g, opt, p)
    p = optax.apply_updates(p, u)
  assert step == 30 and [s for s, _ in curve] == [5, 10, 15, 20, 25, 30]
  np.testing.assert_allclose([got['w'], got['b']], [p['w'], p['b']], rtol=1e-5, atol=1e-6)
  _, step, _ = warmstart.sft_minibatches(
    loss_fn, p0, data, lr=0.1, batch_size=8, rng=np.random.default_rng(3),
    validate=lambda q: {'fit': float(q['w']) / 3.0}, max_steps=30, eval_every=5, stop_at=0.2,
    metric='fit',
  )  # fmt: skip
  assert step < 30
