r"""VinePPO and SPO-chain: Monte-Carlo step values vs a learned value network vs GRPO.

  python -m experiments.mc_credit --config configs/mc_credit.py --workdir results/mc_credit
  python -m experiments.mc_credit --config configs/mc_credit.py:pilot     # ~1-2 min
  python -m experiments.mc_credit --config configs/mc_credit.py:full      # 3 seeds, K3, critic lrs
  python -m experiments.mc_credit --config configs/mc_credit.py:smoke     # seconds

K=4 arithmetic chains with invertible ops (M=10), the flagship 2-layer d=128 policy warm
started by SFT until VALIDATION greedy exact match first reaches 35% (past the SFT transition;
the validation problems are disjoint from train and held-out test; jaxca.warmstart), then
four arms from the same warm start, each with 32 prompts x G=8 per iteration, PPO-clip
(eps 0.2), 1 epoch x 2 minibatches, Adam 2e-4, no KL: GRPO; PPO-GAE with a separate critic
(SFT trunk + fresh head, clipped value loss 0.5, coefficient 0.5, Adam 1e-4, GAE gamma =
lambda = 1, whitened); VinePPO-K9 (MC values from 9 completions at every step boundary,
whitened); SPO-chain-K9 (cuts before tokens with p_old < 0.9, interval 1, MC-9 values,
loss and whitening on those tokens only). Each run stops at `rl.iterations` or
`rl.max_wall_s` seconds of training wall clock (compile and evaluation excluded). Then the
value-prediction probe on the PPO-GAE critic (seed 0) at a few checkpoints. Writes
metrics.jsonl, results.md (Tables A and B, expected vs observed), f6_learning.png,
f_probe.png, probe.json.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, pilot=False, full=False)
  c = ml_collections.ConfigDict()
  c.seeds = [0, 1]
  c.task = dict(name='arith', num_steps=4, modulus=10, ops='invertible')
  # Generated on the host (jaxca.warmstart.make_splits): the warm start stops on the
  # validation share (carved out of the train side by problem hash), results use the test.
  c.data = dict(num_train=20_000, num_test=512, validation_fraction=0.05, num_validation=512)
  # max_len covers prompt (2K+3) + response (2K) + a next step (2, probe) + an MC completion
  # (2K): 11 + 8 + 2 + 8 = 29.
  c.policy = dict(width=128, depth=2, num_heads=4, max_len=32, dtype='float32', value_head=False)
  c.warmstart = dict(
    max_steps=3000,
    batch_size=64,
    eval_every=10,
    band=(0.35, 0.6),  # stop at the first validation evaluation with exact match >= band[0]
    lr=1e-3,
  )
  c.rl = dict(
    iterations=60,
    max_wall_s=75.0,  # training wall clock per run, compile and evaluation excluded
    prompts=32,
    group_size=8,
    temperature=1.0,
    num_epochs=1,
    num_minibatches=2,
    lr=2e-4,
    eval_every=5,
    mc_min_bucket=64,  # smallest MC prefix batch (buckets are powers of two)
  )
  c.loss = dict(clip_eps=0.2, agg_mode='token_mean', ent_coef=0.0, kl_coef=0.0)
  # Arms: name -> estimator spec and options. mc: '' | 'steps' (VinePPO states) | 'spo'
  # (states before SPO cut tokens); critic: train a separate critic (PPO-GAE).
  c.arms = dict(
    grpo=dict(estimator='grpo', mc='', mc_samples=0, critic=False),
    ppo_gae=dict(estimator='gae | whiten', mc='', mc_samples=0, critic=True),
    vineppo_k9=dict(estimator='vineppo | whiten', mc='steps', mc_samples=9, critic=False),
    spo_chain_k9=dict(estimator='spo_chain | prob_whiten', mc='spo', mc_samples=9, critic=False),
  )
  c.spo = dict(prob_threshold=0.9, cut_interval=1.0)
  c.critic = dict(lr=1e-4, vf_coef=0.5, vf_clip=0.5)
  c.probe = dict(
    enabled=True,
    checkpoints=(5, 20, -1),  # PPO-GAE seed-0 iterations; -1 = the final one
    prompts=64,
    samples=4,
    states=256,
    truth_samples=128,  # V* and Q* are MC-128
    mc_ks=(1, 3, 9),
    rank_states=128,
    rank_candidates=8,
    min_alternatives=3,
    auc_prompts=128,  # x 4 samples = 512 responses for the step-error AUC
    chunk=32,  # prefixes per MC call (x samples rows)
  )
  if arg.pilot:
    c.seeds = [0]
    c.rl.update(iterations=12, max_wall_s=40.0)
    c.probe.update(checkpoints=(5, -1), states=64, rank_states=32, truth_samples=32)
    c.probe.auc_prompts = 32
  if arg.full:
    c.seeds = [0, 1, 2]
    c.arms.vineppo_k3 = dict(estimator='vineppo | whiten', mc='steps', mc_samples=3, critic=False)
  c.smoke = arg.smoke  # verdicts of a smoke run are labelled "not a result"
  if arg.smoke:
    c.seeds = [0]
    c.task.num_steps = 2
    c.data.update(num_train=256, num_test=16, num_validation=16)
    c.policy.update(width=32, depth=1, num_heads=2, max_len=20)
    c.warmstart.update(max_steps=4, batch_size=16, eval_every=2, band=(1.01, 1.01))
    c.rl.update(iterations=2, max_wall_s=60.0, prompts=4, group_size=4, eval_every=1)
    c.rl.mc_min_bucket = 1
    for arm in ('vineppo_k9', 'spo_chain_k9'):
      c.arms[arm].mc_samples = 2
    c.probe.update(
      checkpoints=(1, -1),
      prompts=4,
      samples=2,
      states=8,
      truth_samples=8,
      mc_ks=(1, 2),
      rank_states=4,
      rank_candidates=3,
      min_alternatives=1,
      auc_prompts=4,
      chunk=4,
    )
  return c
