"""Tests for jaxca.tasks.arith: generator vs a plain-Python chain, layout, vocab, verifiers."""

import jax
import ml_collections
import numpy as np
import pytest

from jaxca import tasks
from jaxca.tasks import arith
from tests.reference import arith as ref

CONFIGS = [
  arith.ArithConfig(),
  arith.ArithConfig(num_steps=1, modulus=2, ops=('add',)),
  arith.ArithConfig(num_steps=3, modulus=7, ops=('mul', 'sub')),
  arith.ArithConfig(num_steps=4, modulus=97, operand_range=(1, 5)),
  arith.ArithConfig(num_steps=2, modulus=1000),
]


# ----------------------------------------------------------------------------- generator


@pytest.mark.parametrize('cfg', CONFIGS, ids=lambda c: c.name)
def test_generate_matches_python_chain(cfg):
  task = arith.make_task(cfg)
  ids = ref.ids_of(task.vocab)
  data = task.generate(0, 64)
  k = cfg.num_steps
  assert data['prompts'].shape == (64, 2 * k + 3) == (64, task.prompt_len)
  assert data['targets'].shape == (64, 2 * k) == (64, task.response_len)
  assert data['answers'].shape == (64,)
  assert data['intermediates'].shape == (64, k)
  for v in data.values():
    assert v.dtype == np.int32
  lo, hi = cfg.operand_bounds
  for row in range(64):
    x0, ops, operands = ref.parse_prompt(data['prompts'][row], ids)
    assert 0 <= x0 < cfg.modulus
    assert set(ops) <= set(cfg.ops)
    assert all(lo <= a <= hi for a in operands)
    values = ref.chain(x0, ops, operands, cfg.modulus)
    assert data['intermediates'][row].tolist() == values
    assert data['answers'][row] == values[-1]
    want = []
    for i, v in enumerate(values):
      want += [v + ids['offset'], ids['step'] if i < k - 1 else ids['eos']]
    assert data['targets'][row].tolist() == want


def test_generate_covers_all_ops_and_operand_range():
  cfg = arith.ArithConfig(num_steps=3, modulus=11, operand_range=(2, 4))
  task = arith.make_task(cfg)
  data = task.generate(1, 500)
  voc = task.vocab
  assert set(np.unique(data['prompts'][:, 2:-1:2]).tolist()) == set(voc.op_ids.values())
  operands = data['prompts'][:, 3:-1:2] - voc.num_offset
  assert set(np.unique(operands).tolist()) == {2, 3, 4}
  assert set(np.unique(data['prompts'][:, 1] - voc.num_offset).tolist()) == set(range(11))


def test_generate_is_deterministic():
  task = arith.make_task(num_steps=3, modulus=13)
  a, b = task.generate(7, 100), task.generate(7, 100)
  c = task.generate(8, 100)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a['prompts'], c['prompts'])
  rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
  np.testing.assert_array_equal(
    task.generate(rng1, 10)['prompts'], task.generate(rng2, 10)['prompts']
  )
  # A Generator is advanced in place: two draws from it differ.
  assert not np.array_equal(task.generate(rng1, 10)['prompts'], task.generate(3, 10)['prompts'])


@pytest.mark.parametrize('split', ['train', 'test'])
def test_generate_split_keeps_only_its_problems(split):
  task = arith.make_task(num_steps=2, modulus=10)
  data = task.generate(0, 300, split=split, test_fraction=0.2)
  assert data['prompts'].shape == (300, 7)
  is_test = arith.split_of(data['prompts'], 0.2)
  assert is_test.all() if split == 'test' else not is_test.any()
  # Roughly the requested share of all problems is test (a loose sanity bound, not a tuning).
  share = arith.split_of(task.generate(1, 5000)['prompts'], 0.2).mean()
  assert 0.1 < share < 0.3


def test_distinct_draws_cover_small_spaces_then_repeat():
  task = arith.make_task(num_steps=2, modulus=3, ops=('add', 'mul'), operand_range=(1, 2))
  assert task.num_problems == 3 * (2 * 2) ** 2 == 48
  ids = ref.ids_of(task.vocab)
  # Independent count of the problem space from the reference chain: every tuple once.
  space = {
    (x0, o1, a1, o2, a2)
    for x0 in range(3)
    for o1 in ('add', 'mul')
    for o2 in ('add', 'mul')
    for a1 in (1, 2)
    for a2 in (1, 2)
  }
  assert len(space) == task.num_problems
  data = task.generate(0, 100, distinct=True)
  rows = [ref.parse_prompt(p, ids) for p in data['prompts']]
  first = {(x0, ops[0], a[0], ops[1], a[1]) for x0, ops, a in rows[:48]}
  assert first == space  # all problems once before any repeats
  for (x0, ops, a), inter in zip(rows, data['intermediates']):
    assert inter.tolist() == ref.chain(x0, ops, a, 3)
  # With a split: the test problems of the space, each once first.
  test = task.generate(1, 60, split='test', test_fraction=0.5, distinct=True)
  n_test = int(arith.split_of(task.generate(0, 48, distinct=True)['prompts'], 0.5).sum())
  assert 0 < n_test < 48
  assert len(np.unique(test['prompts'][:n_test], axis=0)) == n_test
  assert arith.split_of(test['prompts'], 0.5).all()
  # A large space (not enumerated): rejection keeps every problem unique.
  big = arith.make_task(num_steps=2, modulus=500)
  prompts = big.generate(0, 2000, split='test', distinct=True)['prompts']
  assert len(np.unique(prompts, axis=0)) == 2000 and arith.split_of(prompts, 0.1).all()


def test_problem_hash_depends_on_problem_only():
  task = arith.make_task(num_steps=2, modulus=10)
  p = task.generate(0, 50)['prompts']
  np.testing.assert_array_equal(arith.problem_hash(p), arith.problem_hash(p.copy()))
  np.testing.assert_array_equal(arith.problem_hash(p[::-1]), arith.problem_hash(p)[::-1])
  assert len(np.unique(arith.problem_hash(np.unique(p, axis=0)))) == len(np.unique(p, axis=0))


# ----------------------------------------------------------------------------- config / names


def test_unknown_op_lists_choices():
  with pytest.raises(ValueError, match=r"Unknown op 'div'.*'add', 'sub', 'mul'"):
    arith.ArithConfig(ops=('add', 'div'))
  with pytest.raises(ValueError, match='choices'):
    arith.ArithConfig(ops=())


@pytest.mark.parametrize(
  'kwargs, match',
  [
    (dict(num_steps=0), 'num_steps'),
    (dict(modulus=1), 'modulus'),
    (dict(modulus=1001), 'modulus'),
    (dict(operand_range=(0, 10)), 'operand_range'),
    (dict(ops='add'), 'ops'),
    (dict(ops=('add', 'add')), 'duplicates'),
  ],
)
def test_bad_config_raises(kwargs, match):
  with pytest.raises(ValueError, match=match):
    arith.ArithConfig(**kwargs)


def test_unknown_task_name_lists_choices():
  with pytest.raises(ValueError, match=r"Unknown task 'sudoku'.*\['arith', 'gsm8k'\]"):
    tasks.make('sudoku')
  with pytest.raises(ValueError, match=r'Unknown arith task field.*known'):
    tasks.make('arith', num_stepz=2)


def test_make_from_configdict_and_kwargs():
  cd = ml_collections.ConfigDict(dict(num_steps=3, modulus=12, ops=['add', 'mul']))
  task = tasks.make('arith', cd)
  assert task.config == arith.ArithConfig(num_steps=3, modulus=12, ops=('add', 'mul'))
  assert tasks.make('arith', num_steps=3, modulus=12, ops=('add', 'mul')) == task
  assert task.prompt_len == 9 and task.response_len == 6
  assert task.vocab.size == 8 + 12
  assert hash(task) == hash(tasks.make('arith', cd))  # usable as a static closure value


# ----------------------------------------------------------------------------- vocab


def test_vocab_round_trip_and_decode():
  task = arith.make_task(num_steps=3, modulus=50)
  voc = task.vocab
  data = task.generate(0, 20)
  for row in range(20):
    for key in ('prompts', 'targets'):
      toks = data[key][row]
      np.testing.assert_array_equal(voc.encode(voc.decode(toks)), toks)
  # Human-written strings map to the documented ids.
  np.testing.assert_array_equal(
    voc.encode('<bos> 3 + 4 * 49 = 7 ; 13 <eos>'),
    [1, 8 + 3, 5, 8 + 4, 7, 8 + 49, 2, 8 + 7, 3, 8 + 13, 4],
  )
  assert voc.decode([8 + 3, 3, 8 + 1, 4, 0, 0]) == '3 ; 1 <eos>'
  assert voc.decode([8 + 3, 0], skip_pad=False) == '3 <pad>'
  assert voc.decode([999]) == '<unk:999>'
  with pytest.raises(ValueError, match='50'):
    voc.encode('50')
  ids = {voc.pad_id, voc.bos_id, voc.eq_id, voc.step_id, voc.eos_id, *voc.op_ids.values()}
  assert len(ids) == 8 and max(ids) < voc.num_offset


# ----------------------------------------------------------------------------- verifiers

JIT = pytest.mark.parametrize('use_jit', [False, True], ids=['eager', 'jit'])


def _verify_all(task, use_jit):
  """One function computing every verifier (one compile per task and shape under jit)."""

  def fn(resp, mask, answers, targets, intermediates):
    correct, positions = arith.step_correctness(task, resp, mask, intermediates)
    return dict(
      outcome=arith.outcome_reward(task, resp, mask, answers),
      loose=arith.outcome_reward(task, resp, mask, answers, require_format=False),
      exact=arith.exact_match(task, resp, mask, targets),
      correct=correct,
      positions=positions,
      process=arith.process_rewards(task, resp, mask, intermediates),
    )

  fn = jax.jit(fn) if use_jit else fn
  return lambda *args: {k: np.asarray(v) for k, v in fn(*args).items()}


def _pad(targets, n, pad=0):
  out = np.full((targets.shape[0], n), pad, np.int32)
  out[:, : targets.shape[1]] = targets
  return out


def _canonical(task, n_rows=6, extra=3, seed=0):
  data = task.generate(seed, n_rows)
  resp = _pad(data['targets'], task.response_len + extra)
  mask = np.zeros(resp.shape, bool)
  mask[:, : task.response_len] = True
  return data, resp, mask


@JIT
def test_canonical_target_scores_one(use_jit):
  task = arith.make_task(num_steps=3, modulus=10)
  data, resp, mask = _canonical(task)
  k = task.num_steps
  out = _verify_all(task, use_jit)(
    resp, mask, data['answers'], data['targets'], data['intermediates']
  )
  for key in ('outcome', 'loose', 'exact', 'correct'):
    np.testing.assert_array_equal(out[key], 1.0)
  np.testing.assert_array_equal(out['positions'], np.broadcast_to(np.arange(1, 2 * k, 2), (6, k)))
  assert out['process'].shape == resp.shape and out['process'].dtype == np.float32
  want = np.zeros(resp.shape, np.float32)
  want[:, 1 : 2 * k : 2] = 1.0
  np.testing.assert_array_equal(out['process'], want)


def test_corruptions_behave_as_documented():
  task = arith.make_task(num_steps=3, modulus=10)
  verify = _verify_all(task, use_jit=True)
  voc = task.vocab
  data, resp, mask = _canonical(task, n_rows=20)
  # A problem whose three values differ, so no corruption below is right by coincidence.
  row = next(i for i, v in enumerate(data['intermediates']) if len(set(v.tolist())) == 3)
  ans, tgt, inter = (data[key][row : row + 1] for key in ('answers', 'targets', 'intermediates'))

  def run(r, m):
    # Padded with masked-out PADs to one length (one compile; they cannot change any result).
    rr, mm = np.zeros((1, 9), np.int32), np.zeros((1, 9), bool)
    rr[0, : len(r)], mm[0, : len(m)] = r, m
    out = verify(rr, mm, ans, tgt, inter)
    out = {key: val[0].tolist() for key, val in out.items() if key != 'process'}
    return out

  base_r, base_m = resp[row], mask[row]
  wrong = lambda tok: voc.num_offset + (tok - voc.num_offset + 1) % 10

  # A wrong intermediate step: the final answer still scores, exact match and that step do not.
  r = base_r.copy()
  r[2] = wrong(r[2])
  out = run(r, base_m)
  assert (out['outcome'], out['exact'], out['correct']) == (1.0, 0.0, [1.0, 0.0, 1.0])

  # A wrong final answer.
  r = base_r.copy()
  r[4] = wrong(r[4])
  out = run(r, base_m)
  assert (out['outcome'], out['loose'], out['exact']) == (0.0, 0.0, 0.0)
  assert out['correct'] == [1.0, 1.0, 0.0]

  # No EOS: unfinished -> no reward; the last step is never closed and its position falls back
  # to the last valid (masked-in) token.
  m = base_m.copy()
  m[5] = False  # EOS masked off: the last valid token is x_3 at 4
  out = run(base_r, m)
  assert (out['outcome'], out['loose'], out['exact']) == (0.0, 0.0, 0.0)
  assert out['correct'] == [1.0, 1.0, 0.0] and out['positions'] == [1, 3, 4]
  r = base_r.copy()
  r[5] = voc.pad_id  # EOS overwritten by a (masked-in) PAD at 5
  out = run(r, base_m)
  assert (out['outcome'], out['loose'], out['exact']) == (0.0, 0.0, 0.0)
  assert out['correct'] == [1.0, 1.0, 0.0] and out['positions'] == [1, 3, 5]

  # Garbage after EOS is ignored whether it is masked or not.
  for m_after in (False, True):
    r, m = base_r.copy(), base_m.copy()
    r[6:] = [voc.number_id(1), voc.step_id, voc.eos_id]
    m[6:] = m_after
    assert run(r, m) == run(base_r, base_m)

  # Skipping the steps: only the loose outcome accepts 'x_K EOS'.
  r = np.zeros_like(base_r)
  r[:2] = [base_r[4], voc.eos_id]
  m = np.zeros_like(base_m)
  m[:2] = True
  out = run(r, m)
  assert (out['outcome'], out['loose'], out['exact']) == (0.0, 1.0, 0.0)
  assert out['correct'] == [0.0, 0.0, 0.0]  # step 1's segment holds x_3, not x_1

  # An extra step before EOS breaks the format but not the earlier steps.
  r = np.concatenate([base_r[:4], [base_r[4], voc.step_id, base_r[4], voc.eos_id]])
  out = run(r, np.ones(8, bool))
  assert (out['outcome'], out['loose'], out['exact']) == (0.0, 1.0, 0.0)
  assert out['correct'] == [1.0, 1.0, 1.0] and out['positions'] == [1, 3, 5]

  # Two tokens in one step make that step wrong, and only that step.
  r = np.concatenate([base_r[:1], [base_r[0]], base_r[1:6]])
  out = run(r, np.ones(7, bool))
  assert out['correct'] == [0.0, 1.0, 1.0] and out['positions'] == [2, 4, 6]
  assert (out['outcome'], out['exact']) == (0.0, 0.0)


def _random_responses(task, rng, n_rows, n):
  """Canonical targets with random corruptions, random masks and plain noise."""
  voc = task.vocab
  data = task.generate(rng, n_rows)
  resp = _pad(data['targets'], max(n, task.response_len))[:, :n]
  mask = np.zeros(resp.shape, bool)
  mask[:, : task.response_len] = True
  for row in range(n_rows):
    kind = rng.integers(8)
    if kind == 1:  # change one token to anything
      resp[row, rng.integers(n)] = rng.integers(voc.size)
    elif kind == 2:  # change a number to another number
      j = 2 * rng.integers(task.num_steps)
      if j < n:
        resp[row, j] = voc.number_id(rng.integers(task.config.modulus))
    elif kind == 3:  # truncate the mask
      mask[row, rng.integers(n + 1) :] = False
    elif kind == 4:  # a hole in the mask
      mask[row, rng.integers(n)] = False
    elif kind == 5 and n > task.response_len:  # garbage after the response, masked in
      resp[row, task.response_len :] = rng.integers(voc.size, size=n - task.response_len)
      mask[row] = True
    elif kind == 6:  # pure noise biased to structural tokens
      choices = [voc.step_id, voc.eos_id, voc.pad_id] + list(range(voc.num_offset, voc.size))
      resp[row] = rng.choice(choices, size=n)
      mask[row] = rng.random() < 0.8
    elif kind == 7:  # shift by inserting a token
      j = rng.integers(n)
      resp[row, j + 1 :] = resp[row, j:-1].copy()
      mask[row] = np.roll(mask[row], 1) | mask[row]
  return data, resp, mask


@pytest.mark.parametrize(
  'cfg, n_extra', [(CONFIGS[0], 3), (CONFIGS[1], -1), (CONFIGS[2], 0), (CONFIGS[3], -3)]
)
def test_verifiers_match_reference_on_random_responses(cfg, n_extra):
  task = arith.make_task(cfg)
  ids = ref.ids_of(task.vocab)
  rng = np.random.default_rng([cfg.num_steps, cfg.modulus, n_extra + 10])
  n = max(1, task.response_len + n_extra)
  data, resp, mask = _random_responses(task, rng, 64, n)
  k = task.num_steps
  out = _verify_all(task, use_jit=True)(
    resp, mask, data['answers'], data['targets'], data['intermediates']
  )
  outcome, loose, exact = out['outcome'], out['loose'], out['exact']
  correct, positions, process = out['correct'], out['positions'], out['process']
  assert correct.shape == positions.shape == (64, k)
  for row in range(64):
    r, m = resp[row], mask[row]
    assert outcome[row] == ref.outcome(r, m, data['answers'][row], k, ids), row
    assert loose[row] == ref.outcome(r, m, data['answers'][row], k, ids, require_format=False)
    assert exact[row] == ref.exact(r, m, data['targets'][row], ids), row
    want_c, want_p = ref.steps(r, m, data['intermediates'][row], ids)
    assert correct[row].tolist() == want_c, row
    assert positions[row].tolist() == want_p, row
    want_process = np.zeros(n, np.float32)
    for c, p in zip(want_c, want_p):
      want_process[p] += c
    np.testing.assert_array_equal(process[row], want_process)
  # Properties: exact match implies full marks everywhere; a perfect format + all steps is exact.
  assert np.all(outcome >= exact) and np.all(correct.min(-1) >= exact)
  assert np.all((outcome * correct.min(-1)) == exact)
  assert np.all(loose >= outcome)
  assert np.all(process.sum(-1) == correct.sum(-1))
  if n >= task.response_len:
    assert 0 < exact.mean() < 1  # both outcomes occur in the random batch
  else:
    assert not exact.any() and not outcome.any()  # too short to hold the canonical response


def test_verifiers_vmap_and_leading_axes():
  task = arith.make_task(num_steps=2, modulus=10)
  rng = np.random.default_rng(0)
  data, resp, mask = _random_responses(task, rng, 12, task.response_len + 2)
  args = (resp, mask, data['answers'], data['targets'], data['intermediates'])

  def fn(resp, mask, answers, targets, intermediates):
    correct, positions = arith.step_correctness(task, resp, mask, intermediates)
    return dict(
      outcome=arith.outcome_reward(task, resp, mask, answers),
      exact=arith.exact_match(task, resp, mask, targets),
      correct=correct,
      positions=positions,
      process=arith.process_rewards(task, resp, mask, intermediates),
    )

  full = jax.jit(fn)(*args)
  per_row = jax.jit(jax.vmap(fn))(*args)  # each call sees one unbatched [N] response
  grouped = jax.jit(fn)(*(x.reshape((3, 4) + x.shape[1:]) for x in args))  # [P, G, N]
  for key in full:
    np.testing.assert_array_equal(per_row[key], full[key])
    np.testing.assert_array_equal(grouped[key].reshape(full[key].shape), full[key])
  # A single unbatched response outside vmap works too.
  single = arith.outcome_reward(task, resp[0], mask[0], data['answers'][0])
  assert single.shape == () and single == full['outcome'][0]


def test_verifier_input_errors_name_the_argument():
  task = arith.make_task(num_steps=2, modulus=10)
  data, resp, mask = _canonical(task, n_rows=2)
  with pytest.raises(ValueError, match='`mask`'):
    arith.outcome_reward(task, resp, mask.astype(np.int32), data['answers'])
  with pytest.raises(ValueError, match='`answers`'):
    arith.outcome_reward(task, resp, mask, data['answers'][:1])
  with pytest.raises(ValueError, match='`intermediates`'):
    arith.step_correctness(task, resp, mask, data['intermediates'][:, :1])
  with pytest.raises(ValueError, match='`targets`'):
    arith.exact_match(task, resp, mask, data['targets'][:, :3])
  with pytest.raises(ValueError, match='`responses`'):
    arith.exact_match(task, resp.astype(np.float32), mask, data['targets'])


# ----------------------------------------------------------------------------- Task interface


@JIT
def test_parse_steps_matches_loop_and_process_rewards_match_step_correct(use_jit):
  task = arith.make_task(num_steps=3, modulus=10)
  voc = task.vocab
  ids = ref.ids_of(voc)
  rng = np.random.default_rng(0)
  data = task.generate(1, 40)
  n = task.response_len + 2
  resp = _pad(data['targets'], n)
  noise = rng.choice([voc.step_id, voc.eos_id, voc.pad_id, 8, 9, 12], size=resp.shape)
  resp = np.where(rng.random(resp.shape) < 0.3, noise, resp).astype(np.int32)
  mask = rng.random(resp.shape) > 0.1
  parse = jax.jit(task.parse_steps) if use_jit else task.parse_steps
  steps = parse(resp, mask)
  for b in range(len(resp)):
    want_ids, want_kinds, want_values = ref.parse_steps(resp[b], mask[b], ids, n)
    np.testing.assert_array_equal(steps.step_ids[b], want_ids)
    np.testing.assert_array_equal(steps.kinds[b], want_kinds)
    np.testing.assert_array_equal(steps.values[b], want_values)
  # Per-step correctness placed on step closers == the verifier's process rewards.
  from jaxca import lm

  batch = {k: np.asarray(v) for k, v in data.items()}
  got = lm.sequence_rewards(task, 'process', resp, mask, batch)
  want = arith.process_rewards(task, resp, mask, data['intermediates'])
  np.testing.assert_array_equal(got, np.where(mask, want, 0.0))
  correct = task.step_correct(resp, mask, batch)
  assert correct.shape == (40, n)
  np.testing.assert_array_equal(correct[:, 3:], 0.0)


def test_anchors_share_state_exactly_when_the_previous_value_matches():
  task = arith.make_task(num_steps=2, modulus=10)
  voc = task.vocab
  data = task.generate(0, 1)
  prompts = np.repeat(data['prompts'], 3, axis=0)
  t = data['targets'][0]
  wrong = t.copy()
  wrong[0] = voc.number_id((data['intermediates'][0, 0] + 1) % 10)
  resp = np.stack([t, t, wrong]).astype(np.int32)
  mask = np.ones(resp.shape, bool)
  steps = task.parse_steps(resp, mask)
  a = np.asarray(task.anchors(resp, mask, {'prompts': prompts}, steps))
  assert a.shape == (3, resp.shape[1]) and a.dtype == np.int32
  assert a[0, 0] == a[1, 0] == a[2, 0]  # same problem, nothing written yet
  assert a[0, 1] == a[1, 1] != a[2, 1]  # different first value
  np.testing.assert_array_equal(a[:, 2:], -1)
  other = task.generate(5, 1)['prompts']
  b = np.asarray(
    task.anchors(resp[:1], mask[:1], {'prompts': other}, task.parse_steps(resp[:1], mask[:1]))
  )
  assert b[0, 0] != a[0, 0]


def test_no_module_outside_tasks_imports_arith():
  import pathlib
  import re

  root = pathlib.Path(__file__).resolve().parents[2]
  pattern = re.compile(
    r'^\s*(from jaxca\.tasks import arith\b|import jaxca\.tasks\.arith'
    r'|from jaxca\.tasks\.arith import)',
    re.M,
  )
  offenders = [
    str(p.relative_to(root))
    for d in ('jaxca', 'experiments', 'configs')
    for p in (root / d).rglob('*.py')
    if 'tasks' not in p.relative_to(root).parts and pattern.search(p.read_text())
  ]
  assert not offenders, offenders


@pytest.mark.parametrize('distinct', [False, True])
def test_invertible_ops_draw_only_invertible_operands(distinct):
  task = arith.make_task(num_steps=2, modulus=10, ops='invertible')
  assert task.config.invertible and task.config.name == 'k2_m10_add-sub-mul_inv'
  assert task.config.operands_of['mul'] == (3, 7, 9)
  assert task.num_problems == 10 * 21**2
  data = task.generate(0, 3000, distinct=distinct)
  ids = ref.ids_of(task.vocab)
  seen = set()
  for prompt, inter in zip(data['prompts'][:500], data['intermediates'][:500]):
    x0, ops, operands = ref.parse_prompt(prompt, ids)
    assert ref.chain(x0, ops, operands, 10) == inter.tolist()
    for op, a in zip(ops, operands):
      assert (a in (3, 7, 9)) if op == 'mul' else (1 <= a <= 9)
      seen.add((op, a))
  assert len(seen) == 21
  if distinct:
    assert len({p.tobytes() for p in data['prompts']}) == 3000
  assert tasks.make('arith', ml_collections.ConfigDict(dict(ops='invertible'))).config.invertible
  with pytest.raises(ValueError, match='operand_range'):
    arith.make_task(ops='invertible', operand_range=(1, 3))


def test_default_task_draws_are_unchanged():
  """The default task's first problems, pinned (the flagship depends on them)."""
  task = arith.make_task(num_steps=2, modulus=10)
  np.testing.assert_array_equal(
    task.generate(0, 3)['prompts'],
    [[1, 16, 5, 16, 5, 14, 2], [1, 14, 5, 17, 5, 13, 2], [1, 13, 5, 14, 5, 17, 2]],
  )
  test = task.generate(1, 2000, split='test', distinct=True)['prompts']
  np.testing.assert_array_equal(test[:2], [[1, 12, 5, 11, 6, 14, 2], [1, 14, 6, 8, 7, 17, 2]])
  assert int(test.sum()) == 104884


# ----------------------------------------------------------------------------- filler steps


def _filler_task(**kw):
  return arith.make_task(
    num_steps=3, modulus=10, ops='invertible', filler_rate=0.2, max_response_len=24, **kw
  )


def test_default_task_has_no_think_token_and_is_unchanged():
  default = arith.make_task(num_steps=3, modulus=10, ops='invertible')
  assert default.vocab.size == 18 and default.vocab.think_id == -1
  assert default.response_len == 6 and default.config.name == 'k3_m10_add-sub-mul_inv'
  with pytest.raises(ValueError, match='THINK'):
    default.vocab.encode('1 ; THINK <eos>')
  filler = _filler_task()
  assert filler.vocab.size == 19 and filler.vocab.think_id == 18
  assert not filler.vocab.is_number(np.int32(18))
  assert filler.response_len == 24 and filler.config.name.endswith('_fill0.2_n24')
  # The problems are the default task's (the fillers are drawn after them).
  a, b = default.generate(3, 50), filler.generate(3, 50)
  for k in ('prompts', 'answers', 'intermediates'):
    np.testing.assert_array_equal(a[k], b[k])
  np.testing.assert_array_equal(
    b['targets'][:, :6][~(b['targets'] == 18).any(1)], a['targets'][~(b['targets'] == 18).any(1)]
  )


def test_filler_targets_rate_slots_and_verifiers():
  task = _filler_task()
  data = task.generate(0, 4000)
  t = data['targets']
  assert t.shape == (4000, 24)
  n_think = (t == task.vocab.think_id).sum(1)
  assert set(np.unique(n_think)) == {0, 1}
  assert abs(n_think.mean() - 0.2) < 0.03
  # The filler's slot (how many values precede it) is uniform over the K+1 slots.
  slots = [int(np.sum(task.vocab.is_number(r[: list(r).index(18)]))) for r in t[n_think == 1]]
  counts = np.bincount(slots, minlength=4)
  assert counts.min() > 0.7 * counts.mean()
  mask = t != task.vocab.pad_id
  np.testing.assert_array_equal(np.asarray(task.outcome(t, mask, data)), 1.0)
  correct, _ = arith.step_correctness(task, t, mask, data['intermediates'])
  np.testing.assert_array_equal(np.asarray(correct), 1.0)
  kinds = np.asarray(task.parse_steps(t, mask).kinds)
  np.testing.assert_array_equal((kinds == arith.base.STEP_FILLER).sum(1), n_think)


@pytest.mark.parametrize(
  'text,want',
  [
    ('1 ; 2 ; 3 <eos>', 1.0),
    ('THINK ; 1 ; THINK ; 2 ; 3 <eos>', 1.0),
    ('1 ; 2 ; 3 ; THINK <eos>', 1.0),  # THINK steps are allowed anywhere
    ('1 ; 2 ; 3 ; <eos>', 0.0),  # an empty (malformed) step
    ('1 ; THINK THINK ; 2 ; 3 <eos>', 0.0),  # not a filler step: malformed
    ('1 ; 2 ; 3 ; 3 <eos>', 0.0),  # K+1 value steps
    ('2 ; 3 <eos>', 0.0),  # K-1 value steps
    ('1 ; 2 ; 3 ; THINK', 0.0),  # no EOS
    ('9 ; 9 ; 3 <eos>', 1.0),  # only the last value is checked
  ],
)
def test_filler_outcome(text, want):
  task = _filler_task()
  r = task.vocab.encode(text)
  resp = np.zeros(24, np.int32)
  resp[: len(r)] = r
  mask = np.arange(24) < len(r)
  assert float(arith.outcome_reward(task, resp, mask, np.int32(3))) == want


def test_filler_knob_validation():
  with pytest.raises(ValueError, match='filler_rate'):
    arith.make_task(filler_rate=1.5)
  with pytest.raises(ValueError, match='max_response_len'):
    arith.make_task(num_steps=3, filler_rate=0.2, max_response_len=7)
  assert arith.make_task(num_steps=2, max_response_len=8).generate(0, 3)['targets'].shape == (3, 8)
