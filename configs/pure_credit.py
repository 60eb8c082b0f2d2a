r"""PURE reproduction: sum-form process-reward credit is reward-hacked, min-form is not.

PURE (arXiv 2504.15275) on arithmetic chains (K=3, fillers) with a hackable scripted PRM
(filler THINK steps score +f > c): one shared warm start, then every arm x seed of PPO-clip
from it, in one process; an arm is a set of traced hyper-parameters of the `pure` estimator
stage (one compile per PRM variant) and its seeds run batched (vmap) in one program.

  python -m experiments.pure_credit --config configs/pure_credit.py \
      --workdir results/pure_credit   # default: 5 arms x 4 seeds x 150 it. (~45 min, see below)
  python -m experiments.pure_credit --config configs/pure_credit.py:pilot   # 2 arms x 4 seeds
  python -m experiments.pure_credit --config configs/pure_credit.py:smoke   # seconds
  python -m experiments.pure_credit --config configs/pure_credit.py:full    # all arms, 8 seeds

The protocol (judging the claims needs a baseline that learns):
- Warm start: SFT stops at the first VALIDATION greedy final-answer accuracy >= 35%
  (`warmstart.target_low`; validation problems disjoint from train and the reported held-out
  ones). The K=3 filler task has the same SFT transition as the K=4 chains: validation
  14.1% (step 150) -> 19.9 (160) -> 22.3 (170) -> 35.0 (180, 0.3496 < 0.35) -> 44.5% (190),
  held-out 39.6% at the stop (pilot, seed 0); the old 20-40% band stopped at 24% mid-way.
- RL update: the base recipe `configs/common.ARITH_RL_RECIPE` (Adam 1e-4, entropy bonus 0.01,
  2 epochs x 2 minibatches, P=32, G=8, evaluation every 25). Kept from PURE: the k1 KL in the
  reward (beta 1e-3, no KL in the loss) and its whitening (skip zeros). Budget 150
  iterations (the recipe's 200 does not fit the time budget; >= 150 is the protocol's floor).
- Arms (default): A1n_vr_only_nomask (the VR-only / GRPO-like baseline of the gate; its
  closers keep their advantage, see below), A2_sum_prm (H1), A3_min_prm (H2 as the official
  code runs it, closers masked), A3n_min_nomask (H2 with closers not masked), and
  `shuffled_reward` (= jaxca.report.NOISE_FLOOR_ARM: A1n's pipeline on another prompt's
  outcomes). The gate (`jaxca.report.gate`): A1n must gain >= 8 points of held-out greedy
  final answer over the warm start and end above the noise floor in every seed, else every
  claim reads UNTESTABLE. `:full` adds A1_vr_only and A2n_sum_nomask (the other masking
  setting), A4 / A5 (10% VR; H3), PRM-A, `baseline='seq'`, strict-min.
- Separator masking: the official code's default masks (zeroes the advantage of) the step
  closers: PURE's OpenRLHF-based trainer has `--nomask_separator_adv` default False and
  `returns.masked_fill_(process_reward_mask, 0)`. PURE's steps are multi-token paragraphs;
  here a step is one value token and its closer (';' or EOS) is the stop/continue decision,
  which the mask leaves without any gradient while the entropy bonus keeps pushing on it.
  Measured (commit 08c2a2e, 4 seeds x 150 iterations from the same 39.6% warm start): the
  masked VR-only learner A1_vr_only climbed to 54-67% by iteration 100-125, then drifted to
  malformed endings ('6 ; 5 ; 2 ; <eos>', empty THINK steps; eval malformed steps/response
  0.4-1.0) and ended at 26.0 / 40.6 / 58.8 / 23.6% (results/pure_credit_protocol); the same
  learner with closers unmasked, A1n_vr_only_nomask, climbed in every seed to 69.3 / 67.6 /
  73.0 / 66.8% with no malformed steps (results/pure_credit_recipe_pilot). So the gate's
  baseline runs unmasked, and H2 is judged in both settings (A3: the paper's code; A3n: the
  setting that keeps the stop/continue gradient at one-token steps).
- Time: a 20-iteration pilot (2 arms x 4 seeds batched) on this 2-core CPU at load 7.7-8.5
  (shared with three other jobs) ran 2.1 (A1) and 3.9 (A2) wall seconds per seed-iteration
  (evaluation included, compile excluded: 124 s), 1.3-1.45 CPU-seconds; batching the seeds
  did not change the CPU cost. Quiet, that is about 0.7-1.5 s per seed-iteration, so
  5 arms x 4 seeds x 150 iterations (3000 seed-iterations) + warm start (~190 SFT steps) +
  compile is roughly 35-75 min, over the 25 min target: the five arms are the gate's two
  and one per judged claim and masking setting, so nothing more moves to `:full`. The
  sampler now stops once every row has emitted EOS (`jaxca.sampling.sample`), so sampling
  and evaluation cost the longest response (~6-12 tokens) instead of L_max = 24.

Without --workdir a run writes to runs/pure_credit. A run is not resumed mid-way:
rerunning an unfinished workdir starts it over (a finished one is not rerun).

Writes: config.json, metrics.jsonl, results.md (tables, expected vs observed),
warmstart_curve.csv, f1_curves.png, f2_goodhart.png, f3_step_accuracy.png, samples.json.
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
  'A1n_vr_only_nomask': dict(
    prm='B', transform='softmin', baseline='token', prm_coef=0.0, vr=1.0, mask=False
  ),
  'A3n_min_nomask': dict(
    prm='B', transform='softmin', baseline='token', prm_coef=1.0, vr=0.0, mask=False
  ),
  # The noise floor (jaxca.report's gate): the baseline A1n's pipeline on another prompt's
  # outcomes.
  NOISE_FLOOR: dict(
    prm='B', transform='softmin', baseline='token', prm_coef=0.0, vr=1.0, shuffle=True, mask=False
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
DEFAULT_ARMS = (  # see the docstring
  'A1n_vr_only_nomask',
  'A2_sum_prm',
  'A3_min_prm',
  'A3n_min_nomask',
  NOISE_FLOOR,
)
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
    iterations=150,  # the recipe's 200 does not fit the time budget (docstring); >= 150
    prompts_per_iter=recipe['prompts'],
    group_size=recipe['group_size'],
    temperature=recipe['temperature'],
    num_epochs=recipe['num_epochs'],
    num_minibatches=recipe['num_minibatches'],
    iters_per_call=5,  # RL iterations per jitted chunk (lax.scan)
  )
  # The RL optimizer (jaxca.train.make_optimizer; fresh, not the warm start's): Adam with the
  # recipe's learning rate, grad-norm clip 1.
  c.optim = dict(name='adam', lr=recipe['lr'], max_grad_norm=1.0)
  # No KL in the loss: PURE puts a k1 KL in the reward (credit.kl_coef).
  c.loss = dict(clip_eps=0.2, agg_mode='token_mean', kl_coef=0.0, ent_coef=recipe['ent_coef'])
  c.eval = dict(every=recipe['eval_every'], num_prompts=512)  # a multiple of rl.iters_per_call
  c.smoke = False
  if arg.pilot:  # timing: seconds per iteration of two arms, their 4 seeds batched
    c.seeds = (0, 1, 2, 3)
    c.arms = ('A1n_vr_only_nomask', 'A2_sum_prm')
    c.rl.update(iterations=20)
    c.eval.update(every=10)
  if arg.full:
    c.seeds = (0, 1, 2, 3, 4, 5, 6, 7)
    c.arms = FULL_ARMS
    c.rl.update(iterations=recipe['iterations'])
  if arg.smoke:
    c.smoke = True
    c.seeds = (0,)
    c.arms = DEFAULT_ARMS  # the gate, H1 and H2 in both masking settings
    c.task.update(num_steps=2, max_response_len=12)
    c.data.update(num_train=512, num_test=32, num_validation=16)
    c.policy.update(width=32, depth=1, num_heads=2, max_len=24)
    c.warmstart.update(
      max_steps=20, batch_size=16, steps_per_call=10, eval_every=10, think_probe_prompts=16
    )
    c.rl.update(iterations=3, prompts_per_iter=8, group_size=4, iters_per_call=3)
    c.eval.update(every=3, num_prompts=32)
  return c
