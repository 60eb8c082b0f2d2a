"""experiments/policy_objectives.py: config validation, the summary and verdict, a smoke CLI run.

The smoke run is a subprocess with JAX_DISABLE_MOST_OPTIMIZATIONS=1 (compile time dominates)
and a timeout.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import common
from configs import policy_objectives as config_mod
from experiments import policy_objectives as po
from jaxca import arms as arms_lib
from jaxca import objectives
from jaxca import runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 900


def _config(arg='smoke'):
  return config_mod.get_config(arg)


def test_calibrate_arms_vary_the_recipe_only():
  c = _config('calibrate')
  assert 'shuffled_reward' in c.run_arms and c.baseline in c.run_arms
  rls = {a: (arms_lib.section(c, a, 'optim'), po.arm_rl(c, a)) for a in c.run_arms}
  assert {(o['lr'], r.num_epochs, r.num_minibatches) for o, r in rls.values()} >= {
    (1e-4, 1, 1),
    (2e-4, 2, 2),
  }


def test_default_and_smoke_configs_validate():
  for arg in (None, 'smoke', 'pilot', 'calibrate'):
    po.validate(_config(arg))


def test_default_arms_are_the_four_objectives_and_the_noise_floor():
  c = _config(None)
  assert list(c.run_arms) == ['ppo_clip', 'clip_higher', 'gspo', 'cispo', 'shuffled_reward']
  assert len(c.seeds) >= 4 and c.baseline == 'ppo_clip'
  assert arms_lib.estimator(c, 'shuffled_reward').name == 'shuffled_reward'
  assert arms_lib.estimator(c, 'ppo_clip').name == 'grpo'
  # The base recipe, from the one place every arith reproduction reads it.
  for key in ('num_epochs', 'num_minibatches', 'iterations', 'prompts', 'group_size'):
    assert c.rl[key] == common.ARITH_RL_RECIPE[key]
  assert c.optim.lr == common.ARITH_RL_RECIPE['lr']
  assert c.loss.ent_coef == common.ARITH_RL_RECIPE['ent_coef']
  loss = {a: po.arm_loss(c, a) for a in c.run_arms if a != 'shuffled_reward'}
  assert loss['ppo_clip']['objective'] == loss['clip_higher']['objective'] == 'ppo_clip'
  assert loss['clip_higher']['clip_eps_high'] == 0.28
  assert (loss['gspo']['clip_eps'], loss['gspo']['clip_eps_high']) == (3e-4, 4e-4)
  assert loss['gspo']['agg_mode'] == 'seq_mean_token_mean'
  assert loss['cispo']['objective'] == 'cispo'
  # Everything but the loss is shared; more than one gradient step per batch (ratio != 1).
  assert c.rl.num_epochs * c.rl.num_minibatches > 1
  assert {k for d in loss.values() for k in d if d[k] != loss['ppo_clip'].get(k)} <= {
    'objective',
    'clip_eps',
    'clip_eps_high',
    'agg_mode',
  }


@pytest.mark.parametrize(
  'override, match',
  [
    (lambda c: c.arms.gspo.loss.update(objective='ppo'), 'must be one of .*cispo.*gspo'),
    (lambda c: c.rl.update(num_epochs=1, num_minibatches=1), 'ratio'),
    (lambda c: c.update(run_arms=('ppo_clip', 'sapo')), 'not in config.arms'),
    (lambda c: c.update(seeds=()), 'seeds is empty'),
    (lambda c: c.rl.update(num_minibatches=3), 'must divide'),
    (lambda c: c.arms.ppo_clip.loss.update(agg_mode='mean'), 'arms.ppo_clip.loss'),
    (lambda c: c.credit.update(estimator='nope'), 'config.credit'),
    (lambda c: c.loss.update(kl_estimator='k9'), 'arms.ppo_clip.loss'),
  ],
)
def test_bad_configs_are_refused_with_one_line(override, match):
  c = _config()
  override(c)
  with pytest.raises(runs.ConfigError, match=match) as e:
    po.validate(c)
  assert '\n' not in str(e.value)


def test_unknown_objective_error_names_every_allowed_objective():
  c = _config()
  c.arms.cispo.loss.objective = 'cisp0'
  with pytest.raises(runs.ConfigError) as e:
    po.validate(c)
  for name in objectives.OBJECTIVES:
    assert name in str(e.value)
  assert "'cisp0'" in str(e.value)


def _records(finals, wall=10.0):
  """Synthetic run records: {(arm, seed): final accuracy}, warm start 0.3."""
  out = []
  for (a, s), final in finals.items():
    out.append(dict(arm=a, seed=s, iteration=0, wall=0.0, elapsed=0.0, compile_s=0.0,
                    eval_exact_match=0.3))  # fmt: skip
    for it in (1, 2):
      rec = dict(arm=a, seed=s, iteration=it, wall=wall * it / 2, elapsed=wall * it, compile_s=0.0)
      rec.update(accuracy=0.5, clip_frac=0.1 * it, ppo_kl=0.01, entropy=1.0)
      if it == 2:
        rec['eval_exact_match'] = final
      out.append(rec)
  return out


def test_summary_and_verdict_indistinguishable_within_seed_noise():
  finals = {('a', 0): 0.50, ('a', 1): 0.60, ('b', 0): 0.55, ('b', 1): 0.58}
  summary = po.summarize(_records(finals), [0, 1], ['a', 'b'])
  assert summary[('a', 1)]['final'] == 0.60 and summary[('a', 1)]['best'] == 0.60
  assert summary[('a', 0)]['iterations'] == 2
  assert summary[('a', 0)]['clip_frac'] == pytest.approx(0.15)
  assert summary[('a', 0)]['clip_frac_lower'] is None  # not produced by these arms
  text = po.verdict(summary, [0, 1], ['a', 'b'])
  # Means 55.0 vs 56.5: a gap of 1.5 points < the 10-point seed spread of arm a.
  assert 'gap of 1.5 points' in text and '10.0 points' in text
  assert 'indistinguishable' in text


def test_verdict_reports_a_gap_larger_than_seed_noise_as_suggestive_only():
  finals = {('a', 0): 0.40, ('a', 1): 0.42, ('b', 0): 0.70, ('b', 1): 0.71}
  summary = po.summarize(_records(finals), [0, 1], ['a', 'b'])
  text = po.verdict(summary, [0, 1], ['a', 'b'])
  assert 'indistinguishable' not in text and 'suggestive only' in text
  assert '41.0% (a)' in text and '70.5% (b)' in text


@pytest.mark.parametrize('learns', [False, True])
def test_claims_are_untestable_unless_the_ppo_clip_baseline_learns_in_every_seed(learns):
  # Warm start 0.3; the baseline gains 20 points in seed 0 and, unless it learns, loses in seed 1.
  base1 = 0.50 if learns else 0.25
  finals = {('ppo_clip', 0): 0.50, ('ppo_clip', 1): base1, ('b', 0): 0.48, ('b', 1): 0.58}
  summary = po.summarize(_records(finals), [0, 1], ['ppo_clip', 'b'])
  text = po.verdict(summary, [0, 1], ['ppo_clip', 'b'])
  assert ('**Gate**: **PASSED**' in text) == learns
  if learns:
    assert '**The objectives differ in final accuracy**: **REFUTED**' in text
  else:
    assert '**The objectives differ in final accuracy**: **UNTESTABLE**' in text
    assert 'ppo_clip must gain >= 8 points' in text and 'would read REFUTED' in text
  assert 'not a result' not in text
  assert '(smoke: not a result)' in po.verdict(summary, [0, 1], ['ppo_clip', 'b'], smoke=True)


def test_unknown_objective_on_the_command_line_exits_2_and_writes_nothing(tmp_path):
  workdir = tmp_path / 'w'
  cmd = [
    sys.executable,
    '-m',
    'experiments.policy_objectives',
    '--config',
    'configs/policy_objectives.py:smoke',
    '--config.arms.gspo.loss.objective=gspo_seq',
    '--workdir',
    str(workdir),
  ]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  err = proc.stderr.strip().splitlines()
  assert len(err) == 1 and 'arms.gspo.loss.objective must be one of' in err[0], err
  assert not workdir.exists()


@pytest.mark.slow
def test_smoke_cli_runs_every_arm_from_one_warm_start(tmp_path):
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='1', JAX_PLATFORMS='cpu')
  cmd = [
    sys.executable,
    '-m',
    'experiments.policy_objectives',
    '--config',
    'configs/policy_objectives.py:smoke',
    '--workdir',
    str(tmp_path),
  ]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'policy_objectives: warm start' in proc.stdout and 'results.md' in proc.stdout
  for name in ('results.md', 'metrics.jsonl', 'curves.png', 'config.json', 'done.json'):
    assert os.path.exists(tmp_path / name), name
  text = (tmp_path / 'results.md').read_text()
  arms = ('ppo_clip', 'clip_higher', 'gspo', 'cispo')
  for arm in arms:
    assert f'| {arm} | 0 |' in text, arm
  assert '## Reading' in text
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  c = _config()
  by = {a: [r for r in records if r['arm'] == a] for a in arms}
  for a in arms:
    assert [r['iteration'] for r in by[a]] == list(range(c.rl.iterations + 1))
    assert all('eval_exact_match' in r for r in by[a])  # eval_every = 1
  # One warm start, the same batch and sampling key: the first step's rollout statistics
  # (sampled before any update) are the same for every arm.
  for key in ('eval_exact_match', 'eval_step_accuracy'):
    assert len({by[a][0][key] for a in arms}) == 1, key
  for key in ('reward', 'accuracy', 'response_length'):  # (entropy: aggregated as the loss)
    assert len({by[a][1][key] for a in arms}) == 1, key
  # Each arm's objective reaches the learner: GSPO reports its sequence ratio, PPO-clip does not.
  assert all('seq_ratio_mean' in r for r in by['gspo'][1:])
  assert not any('seq_ratio_mean' in r for a in ('ppo_clip', 'clip_higher', 'cispo') for r in by[a])


def _grads(loss_cfg, lp, old, adv, mask):
  fn = objectives.from_config(loss_cfg)
  return jax.grad(lambda x: fn(x, old, adv, mask)[0])(lp)


def test_the_arms_gradients_coincide_on_policy_and_differ_off_policy():
  """Why the config needs more than one gradient step per batch (configs docstring)."""
  c = _config(None)
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  old = -jax.random.uniform(k1, (8, 6), minval=0.1, maxval=3.0)
  adv = jax.random.normal(k2, (8, 6))
  mask = jax.random.uniform(k3, (8, 6)) < 0.8
  on = {a: _grads(po.arm_loss(c, a), old, old, adv, mask) for a in c.run_arms}
  for a in ('clip_higher', 'cispo'):
    np.testing.assert_allclose(on[a], on['ppo_clip'], rtol=1e-6, atol=1e-7)
  lp = old + 0.3 * jax.random.normal(jax.random.key(1), old.shape)  # ratios far from 1
  off = {a: _grads(po.arm_loss(c, a), lp, old, adv, mask) for a in c.run_arms}
  for a, b in (('ppo_clip', 'clip_higher'), ('ppo_clip', 'cispo'), ('ppo_clip', 'gspo')):
    assert not np.allclose(off[a], off[b], atol=1e-6), (a, b)
