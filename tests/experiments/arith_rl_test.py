"""End-to-end tests of experiments/arith_rl.py on the smoke config.

* smoke: warm start + RL run; result files are written; the step counts match.
* resume: a run "killed" right after a warm-start checkpoint and again right
  after an RL checkpoint, then rerun, ends with exactly the parameters and the
  metrics (wall-clock fields aside) of an uninterrupted run.
* faults: a NaN injected into the parameters stops the run with a clear
  message and leaves the last good checkpoint intact; `init_from` reuses a
  warm start; unknown names fail with the list of choices.

Compilation dominates the cost, so the module turns most XLA optimisations off
and shares a persistent compilation cache between its runs (restored after).
"""

import json
import os
import shutil
import tempfile

from absl.testing import absltest
import jax
import numpy as np

from configs import arith_rl as config_module
from experiments import arith_rl
from jaxca import checkpoint
from jaxca import config_lib
from jaxca import metrics

_SAVED = {}
# Unoptimised XLA compiles much faster for these tiny smoke programs. The persistent
# compilation cache is configured suite-wide in tests/conftest.py.
_OPTIONS = {'jax_disable_most_optimizations': True}


def setUpModule():  # noqa: N802
  for name, value in _OPTIONS.items():
    _SAVED[name] = jax.config.values[name]
    jax.config.update(name, value)


def tearDownModule():  # noqa: N802
  for name in _OPTIONS:
    jax.config.update(name, _SAVED[name])


def _config(data_dir, **overrides):
  c = config_module.get_config('smoke')
  c.data.dir = data_dir
  for path, value in overrides.items():
    node = c
    *parents, leaf = path.split('.')
    for p in parents:
      node = node[p]
    node[leaf] = value
  c.lock()
  return c


class _Killed(Exception):
  pass


def _strip(records):
  return [{k: v for k, v in r.items() if k not in ('time', 'cpu_time')} for r in records]


def test_progress_bar_numbers_are_rounded():
  """The bar showed a raw float (em=0.06452631950378418) (issue 27 item 12)."""
  rec = dict(accuracy=0.123456, eval_exact_match=0.06452631950378418)
  assert arith_rl.progress_postfix(rec) == dict(acc='0.12', em='0.06')
  assert arith_rl.progress_postfix(dict(accuracy=0.5)) == dict(acc='0.50', em='-')


class ArithRLTest(absltest.TestCase):
  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls._tmp = tempfile.TemporaryDirectory()
    cls.root = cls._tmp.name
    cls.data_dir = os.path.join(cls.root, 'data')
    cls.full_dir = os.path.join(cls.root, 'full')
    cls.config = _config(cls.data_dir)
    cls.full_state = arith_rl.train(cls.config, cls.full_dir)

  @classmethod
  def tearDownClass(cls):
    cls._tmp.cleanup()
    super().tearDownClass()

  def test_smoke_run_writes_results(self):
    self.assertEqual(int(self.full_state['step']), self.config.rl.steps)
    for name in ('metrics.jsonl', 'results.md', 'learning_curve.png'):
      self.assertTrue(os.path.exists(os.path.join(self.full_dir, name)), name)
    for phase in ('warmstart', 'rl'):
      self.assertNotEmpty(os.listdir(os.path.join(self.full_dir, 'tensorboard', phase)))
    records = metrics.read(self.full_dir)
    ws = [r['step'] for r in records if r['phase'] == 'warmstart']
    rl = [r['step'] for r in records if r['phase'] == 'rl']
    self.assertEqual(ws, [2, 4])
    # Every warm-start evaluation has the validation exact match (the stop's metric) and the
    # held-out one; the SFT curve (step, validation exact match) is written beside results.md.
    evals = [r for r in records if r['phase'] == 'warmstart']
    self.assertTrue(all('val_exact_match' in r and 'eval_exact_match' in r for r in evals))
    with open(os.path.join(self.full_dir, 'warmstart_curve.csv')) as f:
      self.assertEqual(f.read().split(), ['step,validation_exact_match'] + [
        f'{r["step"]},{r["val_exact_match"]:.6f}' for r in evals])  # fmt: skip
    self.assertEqual(rl, [0, 2, 4])
    self.assertIn('eval_exact_match', records[-1])
    self.assertTrue(all(np.isfinite(r['loss']) for r in records if 'loss' in r))
    self.assertIn('| phase | step |', open(os.path.join(self.full_dir, 'results.md')).read())

  def test_killed_and_resumed_run_equals_uninterrupted_run(self):
    workdir = os.path.join(self.root, 'resumed')
    original = checkpoint.Checkpointer.maybe_save
    kills = [('warmstart', 2), ('rl', 2)]

    def save_then_die(ckpt, step, state, **kw):
      saved = original(ckpt, step, state, **kw)
      if saved and kills and (os.path.basename(ckpt.directory), step) == kills[0]:
        kills.pop(0)
        raise _Killed(f'{ckpt.directory} {step}')
      return saved

    checkpoint.Checkpointer.maybe_save = save_then_die
    try:
      for expected_kill in ('warmstart', 'rl'):
        with self.assertRaisesRegex(_Killed, expected_kill):
          arith_rl.train(self.config, workdir)
      state = arith_rl.train(self.config, workdir)
    finally:
      checkpoint.Checkpointer.maybe_save = original
    self.assertEmpty(kills)
    for a, b in zip(jax.tree.leaves(self.full_state), jax.tree.leaves(state)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    self.assertEqual(_strip(metrics.read(workdir)), _strip(metrics.read(self.full_dir)))
    # A rerun of a finished run does no work and changes nothing.
    again = arith_rl.train(self.config, workdir)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(again)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(self):
    workdir = os.path.join(self.root, 'nan')
    config = _config(self.data_dir, init_from=self.full_dir, **{'debug.nan_after_step': 2})
    with self.assertRaisesRegex(
      FloatingPointError, 'Non-finite.*step 4.*last good checkpoint is step 2'
    ):
      arith_rl.train(config, workdir)
    ckpt_dir = os.path.join(workdir, 'checkpoints', 'rl')
    with checkpoint.Checkpointer(ckpt_dir) as ckpt:
      self.assertEqual(ckpt.latest_step(), 2)
    params = checkpoint.load_params(ckpt_dir)
    self.assertTrue(all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params)))
    self.assertEqual(max(r['step'] for r in metrics.read(workdir)), 2)
    # init_from started RL from the warm start of the other run (no warm-start phase here).
    self.assertFalse(os.path.exists(os.path.join(workdir, 'checkpoints', 'warmstart', '2')))
    first = metrics.read(workdir)[0]
    full_rl0 = [r for r in metrics.read(self.full_dir) if r['phase'] == 'rl'][0]
    self.assertEqual(first['eval_exact_match'], full_rl0['eval_exact_match'])

  def _copy_of_full_run(self, name):
    workdir = os.path.join(self.root, name)
    shutil.copytree(self.full_dir, workdir)
    return workdir

  def test_a_change_of_shapes_is_refused_before_anything_is_written(self):
    """A config whose state has other shapes than the checkpoint (gae adds a value head): one
    ConfigError line naming the step and the array; metrics untouched (issue 27 item 6)."""
    workdir = self._copy_of_full_run('shapes')
    with open(os.path.join(workdir, 'metrics.jsonl'), 'rb') as f:
      before = f.read()
    with self.assertRaisesRegex(
      config_lib.ConfigError, r'^checkpoint step 4 in .* does not match this config .*value'
    ):
      arith_rl.train(_config(self.data_dir, **{'credit.estimator': 'gae'}), workdir)
    with open(os.path.join(workdir, 'metrics.jsonl'), 'rb') as f:
      self.assertEqual(f.read(), before)

  def test_a_corrupted_latest_checkpoint_resumes_from_the_newest_intact_one(self):
    """A truncated file in the latest RL checkpoint: the step is named and moved aside, the
    run resumes from the step before and ends as the uninterrupted run (issue 27 item 7)."""
    workdir = self._copy_of_full_run('corrupted')
    step4 = os.path.join(workdir, 'checkpoints', 'rl', '4')
    for root, _, files in os.walk(step4):
      for name in files:
        if os.sep + 'd' + os.sep in os.path.join(root, name) + os.sep or root.endswith('d'):
          with open(os.path.join(root, name), 'r+b') as f:
            f.truncate(8)
    notes = []
    original = arith_rl.runs.note
    arith_rl.runs.note = notes.append
    checkpoint.runs.note = notes.append
    try:
      state = arith_rl.train(self.config, workdir)
    finally:
      arith_rl.runs.note = checkpoint.runs.note = original
    self.assertTrue(any('step(s) 4' in n and 'resuming from step 2' in n for n in notes), notes)
    self.assertTrue(os.path.isdir(os.path.join(workdir, 'checkpoints', 'rl_unreadable', '4')))
    for a, b in zip(jax.tree.leaves(self.full_state), jax.tree.leaves(state)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    self.assertEqual(_strip(metrics.read(workdir)), _strip(metrics.read(self.full_dir)))

  def test_unknown_names_fail_with_choices(self):
    for overrides, message in (
      ({'credit.estimator': 'ppo2'}, 'rloo'),
      ({'task.name': 'sudoku'}, 'arith'),
      ({'credit.estimator': 'grpo', 'rl.group_size': 1}, 'group_size'),
    ):
      with self.assertRaisesRegex(ValueError, message):
        arith_rl.train(_config(self.data_dir, **overrides), None)

  def test_summary_line_states_the_result_and_where_it_is(self):
    line = arith_rl.summary_line(metrics.read(self.full_dir), self.full_dir, 'grpo')
    self.assertRegex(
      line,
      r'^warm start \d+\.\d% -> RL \(grpo, 4 steps\) \d+\.\d% held-out exact match '
      r'\([+-]\d+\.\d\) in \d+ s; results in .*results\.md$',
    )

  def test_config_json_round_trip(self):
    self.assertEqual(json.loads(self.config.to_json_best_effort())['credit']['estimator'], 'grpo')


if __name__ == '__main__':
  absltest.main()
