r"""PURE reproduction: sum-form process-reward credit is reward-hacked, min-form is not.

PURE (arXiv 2504.15275) on arithmetic chains with a hackable scripted PRM (filler
THINK steps score +f > c): one shared warm start, then arms A1-A4 x 2 seeds of
PPO-clip from it, all in one process with one compile (the arm is a traced
hyper-parameter of the `pure` estimator stage).

  python -m experiments.pure_credit --config configs/pure_credit.py \
      --workdir results/pure_credit                 # default: A1-A4, 2 seeds (~15 min)
  python -m experiments.pure_credit --config configs/pure_credit.py:pilot   # ~1-2 min
  python -m experiments.pure_credit --config configs/pure_credit.py:smoke   # seconds
  python -m experiments.pure_credit --config configs/pure_credit.py:full    # ablations, 3 seeds

Without --workdir a run writes to runs/pure_credit. A run is not resumed mid-way:
rerunning an unfinished workdir starts it over (a finished one is not rerun).

Writes: config.json, metrics.jsonl, results.md (table, expected vs observed),
f1_curves.png, f2_goodhart.png, f3_step_accuracy.png, samples.json.
"""

import ml_collections

from configs import common

NOISE_FLOOR = 'shuffled_reward'  # jaxca.report.NOISE_FLOOR_ARM, the arm the gate reads

# Arm name -> (PRM variant, `pure` stage choices). Transforms: sum | softmin | strict_min;
# baselines: none | token | step | seq; vr: fraction of prompts with a reference (0, 0.1, 1);
# mask: zero the advantage at step closers (separators, EOS; PURE's default, see the docstring);
# shuffle: the verifiable reward is another prompt's outcome (the noise floor).
ARMS = {
  'A1_vr_only': dict(prm='B', transform='softmin', baseline='token', prm_coef=0.0, vr=1.0),
  'A2_sum_prm': dict(prm='B', transform='sum', baseline='token', prm_coef=1.0, vr=0.0),
  'A3_min_prm': dict(prm='B', transform='softmin', baseline='token', prm_coef=1.0, vr=0.0),
  'A3n_min_nomask': dict(
    prm='B', transform='softmin', baseline='token', prm_coef=1.0, vr=0.0, mask=False
  ),
  # The noise floor (jaxca.report's gate): A1's pipeline on another prompt's outcomes.
  NOISE_FLOOR: dict(
    prm='B', transform='softmin', baseline='token', prm_coef=0.0, vr=1.0, shuffle=True
  ),
  # :full
  'A4_min_prm_vr10': dict(prm='B', transform='softmin', baseline='token', prm_coef=1.0, vr=0.1),
  'A5_sum_prm_vr10': dict(prm='B', transform='sum', baseline='token', prm_coef=1.0, vr=0.1),
  'A2n_sum_nomask': dict(
    prm='B', transform='sum', baseline='token', prm_coef=1.0, vr=0.0, mask=False
  ),
  'A2a_sum_prmA': dict(prm='A', transform='sum', baseline='token', prm_coef=1.0, vr=0.0),
  'A3a_min_prmA': dict(prm='A', transform='softmin', baseline='token', prm_coef=1.0, vr=0.0),
  'A2s_sum_seq': dict(prm='B', transform='sum', baseline='seq', prm_coef=1.0, vr=0.0),
  'A3s_min_seq': dict(prm='B', transform='softmin', baseline='seq', prm_coef=1.0, vr=0.0),
  'A3m_strict_min': dict(prm='B', transform='strict_min', baseline='token', prm_coef=1.0, vr=0.0),
}
DEFAULT_ARMS = ('A1_vr_only', 'A2_sum_prm', 'A3_min_prm', 'A3n_min_nomask', NOISE_FLOOR)
FULL_ARMS = tuple(ARMS)


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, pilot=False, full=False)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.seeds = (0, 1, 2, 3)  # RL seeds (sampling and batch order); the warm start is shared
  c.task = dict(
    name='arith',
    num_steps=3,
    modulus=10,
    ops='invertible',
    filler_rate=0.2,
    max_response_len=24,
  )
  # The warm start stops on `num_validation` validation problems, a `validation_fraction`
  # share carved out of the train side by problem hash (jaxca.tasks.arith.split_names):
  # train, validation and held-out test never share a problem.
  c.data = dict(num_train=20_000, num_test=512, validation_fraction=0.05, num_validation=512)
  c.policy = dict(width=128, depth=2, num_heads=4, mlp_ratio=4, max_len=40, dtype='float32')
  c.warmstart = dict(
    max_steps=1500,
    batch_size=64,
    steps_per_call=10,
    eval_every=10,  # a multiple of steps_per_call
    # Stop at the first VALIDATION greedy accuracy >= target_low: past the SFT transition
    # (REPRODUCTIONS-style protocol; see the docstring). target_high only labels the band.
    target_low=0.35,
    target_high=1.0,
    lr=1e-3,
    think_probe_prompts=256,  # sampled (T=1) responses to count THINK steps at warm start
  )
  # The scripted PRM (jaxca.prm.scripted_prm); 'B' arms are blind on the first value step.
  c.prm = dict(c=0.6, w=-0.8, f=0.9, noise='none', noise_sigma=0.3)
  # `pure` estimator stage (jaxca.estimators) followed by whiten(skip_zeros=True).
  c.credit = dict(temperature=0.1, kl_coef=1e-3, mask_separators=True, vr_coef=1.0)
  c.arms = DEFAULT_ARMS
  recipe = dict(common.ARITH_RL_RECIPE)  # the base RL recipe of the arith reproductions
  c.rl = dict(
    iterations=recipe['iterations'],
    prompts_per_iter=recipe['prompts'],
    group_size=recipe['group_size'],
    temperature=recipe['temperature'],
    num_epochs=recipe['num_epochs'],
    num_minibatches=recipe['num_minibatches'],
    iters_per_call=5,  # RL iterations per jitted chunk (lax.scan)
    lr=recipe['lr'],
  )
  # No KL in the loss: PURE puts a k1 KL in the reward (credit.kl_coef).
  c.loss = dict(clip_eps=0.2, agg_mode='token_mean', kl_coef=0.0, ent_coef=recipe['ent_coef'])
  c.eval = dict(every=recipe['eval_every'], num_prompts=512)  # a multiple of rl.iters_per_call
  c.smoke = False
  if arg.pilot:  # timing: seconds per iteration of two arms, their 4 seeds batched
    c.seeds = (0, 1, 2, 3)
    c.arms = ('A1_vr_only', 'A2_sum_prm')
    c.rl.update(iterations=20)
    c.eval.update(every=10)
  if arg.full:
    c.seeds = (0, 1, 2, 3, 4, 5, 6, 7)
    c.arms = FULL_ARMS
  if arg.smoke:
    c.smoke = True
    c.seeds = (0,)
    c.arms = ('A1_vr_only', 'A2_sum_prm', 'A3_min_prm', NOISE_FLOOR)  # H1, H2 and the gate
    c.task.update(num_steps=2, max_response_len=12)
    c.data.update(num_train=512, num_test=32, num_validation=16)
    c.policy.update(width=32, depth=1, num_heads=2, max_len=24)
    c.warmstart.update(
      max_steps=20, batch_size=16, steps_per_call=10, eval_every=10, think_probe_prompts=16
    )
    c.rl.update(iterations=3, prompts_per_iter=8, group_size=4, iters_per_call=3)
    c.eval.update(every=3, num_prompts=32)
  return c
