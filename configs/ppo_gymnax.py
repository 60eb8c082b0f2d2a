r"""PPO (credit.gae, MLP actor-critic) on a discrete gymnax environment; seeds vmapped.

Defaults are PureJaxRL's CartPole-v1 PPO hyper-parameters (purejaxrl/ppo.py).

  python -m experiments.ppo_gymnax --config configs/ppo_gymnax.py --workdir runs/ppo_cartpole
  python -m experiments.ppo_gymnax --config configs/ppo_gymnax.py:smoke --workdir runs/ppo_smoke
  python -m experiments.ppo_gymnax --config configs/ppo_gymnax.py:num_seeds=16 \
      --config.env.name=Acrobot-v1 --workdir runs/ppo_acrobot

Writes to the workdir: config.json, metrics.jsonl (one row per update, per-seed
values), final.json + final.csv (final return per seed), curve.png (mean +- std
over seeds vs env steps) and orbax checkpoints (a rerun with the same workdir resumes).

Expected (CartPole-v1, 8 seeds, 499,712 env steps, default command above): final
return 500.0 on all 8 seeds (every seed at 500 from ~360k steps on); ~4 min on
the shared 2-core CPU box (80 s CPU, first chunk incl. compile 79 s under load 17).
Results in results/ppo_gymnax_cartpole/; speed vs PureJaxRL in
configs/bench_ppo_purejaxrl.py and BUILD_NOTES.md > Results.
"""

import ml_collections

from configs import common


def get_config(arg=None):
  arg = common.parse_arg(arg, smoke=False, num_seeds=8)
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = arg.num_seeds  # vmapped in one program
  # name: any discrete gymnax env (gymnax.registered_envs); max_steps_in_episode:
  # time limit override (0 keeps the environment's default).
  c.env = dict(name='CartPole-v1', max_steps_in_episode=0)
  c.network = dict(hidden_sizes=(64, 64), activation='tanh')
  c.rollout = dict(num_envs=4, num_steps=128)
  c.ppo = dict(
    gamma=0.99,
    lambda_=0.95,
    clip_eps=0.2,
    value_clip_eps=0.2,  # PureJaxRL clips the value loss with CLIP_EPS; <= 0 disables
    vf_coef=0.5,
    ent_coef=0.01,
    num_epochs=4,
    num_minibatches=4,
    advantage_norm='minibatch',  # minibatch (PureJaxRL) | batch | none
  )
  # anneal: linear decay of lr to 0 over all optimizer steps (PureJaxRL ANNEAL_LR).
  c.optim = dict(name='adam', lr=2.5e-4, eps=1e-5, max_grad_norm=0.5, anneal=True)
  # total_timesteps // (num_envs * num_steps) updates, run in num_chunks jitted chunks
  # (the host logs and checkpoints between chunks); num_chunks must divide the updates.
  c.train = dict(total_timesteps=500_000, num_chunks=16)
  if arg.smoke:
    c.num_seeds = 2
    c.rollout.num_steps = 16
    c.train.total_timesteps = 4 * 16 * 4  # 4 updates
    c.train.num_chunks = 2
  return c
