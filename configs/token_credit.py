r"""Token-credit probes: entropy (GTPO, GRPO-S), planning tokens (HICRA), attention (FAI, WAAD).

  python -m experiments.token_credit --config configs/token_credit.py \
      --workdir results/token_credit      # default: 5 arms x 4 seeds, ~20 min quiet
  python -m experiments.token_credit --config configs/token_credit.py:pilot   # ~2 min quiet
  python -m experiments.token_credit --config configs/token_credit.py:full    # 8 arms x 6 seeds
  python -m experiments.token_credit --config configs/token_credit.py:smoke   # ~2 min (compiles)

K=4 arithmetic chains with invertible ops (M=10), the flagship 2-layer d=128 policy warm
started by SFT until VALIDATION greedy exact match first reaches 35% (past the SFT transition;
the validation problems are disjoint from train and held-out test; jaxca.warmstart).

Part B (training comparison) runs every arm x seed from that warm start with the base RL
recipe of the arithmetic reproductions (configs/common.ARITH_RL_RECIPE: P=32 x G=8, Adam 1e-4,
grad-norm 1, entropy bonus 0.01, 2 epochs x 2 minibatches, held-out evaluation every 25
iterations), 150 iterations per run (the recipe's >= 150; 200 would not fit the 25-minute
default), under one DAPO-style loss (token-mean, clip 0.2 / clip-higher 0.28, no KL, no
dynamic sampling), so only the credit differs between arms:

  grpo             GRPO, the baseline of the gate (jaxca.report.arm_gate)
  shuffled_reward  the noise floor: GRPO advantages of another prompt's outcomes
  gtpo             GTPO, joint group pool (arXiv 2508.04349, our reading of Eq. 6)
  grpo_s           GRPO-S, sequence-level entropy weights
  hicra_official   HICRA, official-code form (top-30% entropy tokens of positive, longer
                   than average responses; arXiv 2509.03646)
  :full adds
  hicra_fai        HICRA paper form, S = top-20% FAI tokens of each rollout batch (one extra
                   non-cached forward per iteration, the slowest arm)
  gtpo_separate    GTPO with the literal separate O+/O- pools
  hicra_sep        HICRA paper form, S = STEP separators

The gate: GRPO must gain >= 8 points of held-out greedy exact match over the warm start and
end above the shuffled-reward arm in every seed, else every claim reads UNTESTABLE. A one-seed
check of this setting (`:pilot` with rl.iterations=150, run_arms grpo and shuffled_reward):
warm start 48.2% held-out (validation 36.9% at SFT step 190); GRPO 78.1% after 150
iterations, the noise floor 0.4%.

Part A (diagnostic, no training) on the warm start and on the final GRPO parameters of the
first seed, the latter only if they beat the warm start (else Part A's trained side reads
UNTESTABLE, by rule): 128 held-out prompts x 8 samples; entropy, probability, GTPO/GRPO-S
weights, attention (head split, FAI, WAAD), oracle A* from MC values at every token boundary.
"""

import ml_collections
from ml_collections import config_dict

from configs import common

# Arms: estimator spec, GTPO/GRPO-S pooling, planning set (None | 'fai' | 'sep'), label.
ARMS = {
  'grpo': dict(estimator='grpo', pooling='joint', planning=None, label='GRPO'),
  # The noise floor (jaxca.report's gate): GRPO advantages of another prompt's outcomes
  # (estimators.group.shuffled_reward), under the same loss.
  'shuffled_reward': dict(
    estimator='shuffled_reward',
    pooling='joint',
    planning=None,
    label='shuffled reward (noise floor)',
  ),
  'gtpo': dict(estimator='gtpo', pooling='joint', planning=None, label='GTPO (joint pool)'),
  'gtpo_separate': dict(
    estimator='gtpo', pooling='separate', planning=None, label='GTPO (separate pools, literal)'
  ),
  'grpo_s': dict(estimator='grpo_s', pooling='joint', planning=None, label='GRPO-S'),
  'hicra_fai': dict(
    estimator='grpo | hicra', pooling='joint', planning='fai', label='HICRA paper form, S=FAI'
  ),
  'hicra_official': dict(
    estimator='grpo | hicra_official', pooling='joint', planning=None, label='HICRA-official'
  ),
  'hicra_sep': dict(
    estimator='grpo | hicra', pooling='joint', planning='sep', label='HICRA paper form, S=STEP'
  ),
}
# Which arms run, in this order (the default fits 25 minutes; :full runs them all).
DEFAULT_ARMS = ('grpo', 'shuffled_reward', 'gtpo', 'grpo_s', 'hicra_official')
FULL_ARMS = DEFAULT_ARMS + ('hicra_fai', 'gtpo_separate', 'hicra_sep')


def _arm(arm):
  """A copy of `arm` whose `planning=None` stays settable on the command line."""
  return dict(arm, planning=arm['planning'] or config_dict.placeholder(str))


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, pilot=False, full=False)
  c = ml_collections.ConfigDict()
  c.seeds = (0, 1, 2, 3)  # RL seeds (sampling and batch order); the warm start is shared
  c.task = dict(name='arith', num_steps=4, modulus=10, ops='invertible')
  # jaxca.warmstart.make_splits: the warm start stops on the validation share, results use test.
  c.data = dict(num_train=20_000, num_test=512, validation_fraction=0.05, num_validation=512)
  # max_len: prompt (2K+3) + response (2K) + an MC completion (2K) = 11 + 8 + 8 = 27.
  c.policy = dict(width=128, depth=2, num_heads=4, max_len=32, dtype='float32', value_head=False)
  # Stop at the first validation evaluation with exact match >= band[0] (past the transition).
  c.warmstart = dict(max_steps=3000, batch_size=64, eval_every=10, band=(0.35, 0.6), lr=1e-3)
  recipe = dict(common.ARITH_RL_RECIPE)
  c.rl = dict(
    iterations=150,  # the recipe's minimum (>= 150); its 200 would not fit the default's time
    # A safety cap on a run's training wall clock (compile and evaluation excluded) for a
    # loaded machine. Pilot at load 10: 0.95 s / iteration (grpo; every in-graph arm alike),
    # 1.43 (hicra_fai), so 145 / 215 s per 150-iteration run; that load inflated the SFT
    # steps 2.9x over a run at load 1.5, so ~0.33 / 0.49 s / iteration there, and the
    # default's 20 runs train ~17 min (hicra_fai's 4 more runs would pass 25 min in all).
    max_wall_s=400.0,
    prompts=recipe['prompts'],
    group_size=recipe['group_size'],
    temperature=recipe['temperature'],
    num_epochs=recipe['num_epochs'],
    num_minibatches=recipe['num_minibatches'],
    eval_every=recipe['eval_every'],
  )
  # The RL optimizer (jaxca.train.make_optimizer; fresh, not the warm start's): Adam with the
  # recipe's learning rate, grad-norm clip 1.
  c.optim = dict(name='adam', lr=recipe['lr'], max_grad_norm=1.0)
  # The shared DAPO-style loss (lm.make_ppo_loss -> losses.ppo_objective), with the recipe's
  # entropy bonus.
  c.loss = dict(
    clip_eps=0.2,
    clip_eps_high=0.28,
    agg_mode='token_mean',
    ent_coef=recipe['ent_coef'],
    kl_coef=0.0,
  )
  # Constants (unverified against the papers; labelled in results.md).
  c.credit = dict(
    alpha1=1.0,
    alpha2=0.1,
    beta1=1.0,
    beta2=0.1,
    hicra_alpha=0.2,
    hicra_top_fraction=0.3,
    fai_fraction=0.2,
  )
  c.arms = {k: _arm(v) for k, v in ARMS.items()}
  c.run_arms = DEFAULT_ARMS
  c.part_a = dict(
    prompts=128,
    samples=8,
    mc_samples=32,
    mc_chunk=256,  # prefixes per MC call
    windows=(2, 4, 8),  # WAAD W sweep; W=4 in the tables
    top_fraction=0.2,
    examples=8,  # responses in F7
    # The trained side runs on GRPO's final parameters of the first seed only if their
    # held-out exact match beats the warm start's by more than this (else UNTESTABLE).
    min_gain=0.0,
  )
  if arg.full:
    c.seeds = (0, 1, 2, 3, 4, 5)
    c.rl.iterations = 200  # the recipe's budget
    c.run_arms = FULL_ARMS
  if arg.pilot:  # seconds per iteration (1 seed, 20 iterations) of an in-graph arm and of the
    c.seeds = (0,)  # host-side one (hicra_fai's extra forward); a small Part A
    c.run_arms = ('grpo', 'hicra_fai')
    c.rl.update(iterations=20, eval_every=10)
    c.part_a.update(prompts=32, mc_samples=16)
  c.smoke = arg.smoke  # verdicts of a smoke run are labelled "not a result"
  if arg.smoke:
    c.seeds = (0,)
    c.task.num_steps = 2
    c.data.update(num_train=256, num_test=16, num_validation=16)
    c.policy.update(width=32, depth=1, num_heads=2, max_len=20)
    c.warmstart.update(max_steps=4, batch_size=16, eval_every=2, band=(1.01, 1.01))
    c.rl.update(iterations=2, max_wall_s=60.0, prompts=4, group_size=4, eval_every=1)
    # min_gain > 1: the trained side reads UNTESTABLE (Part A's code is the warm side's).
    c.part_a.update(prompts=4, samples=4, mc_samples=4, mc_chunk=16, examples=4, min_gain=1.0)
    c.run_arms = FULL_ARMS[:-1]  # every estimator path but hicra_sep's (a provider)
  return c
