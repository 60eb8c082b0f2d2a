"""PPO for classic RL environments, composed from shared jaxca parts.

One update = `rollout` (jaxca/rollout.py) -> time-limit bootstrap folding
(`rollout.td_inputs`) -> `credit.gae` -> `train.minibatch_epochs` over the
flattened `[B*T]` batch with `losses.ppo_objective` (the objective the LM learner
uses too: clipped surrogate, value loss PPO-clipped around the sampling-time values,
entropy bonus).
Everything is pure; the experiment jits/vmaps/scans it.

Advantage normalisation (`advantage_norm`):
  'minibatch'  whiten within each minibatch inside the loss (PureJaxRL, CleanRL);
  'batch'      whiten once over the whole rollout batch before the epochs;
  'none'       raw GAE advantages.
Whitening is `ops.masked_whiten` with the biased variance, `(A - mean) / sqrt(var + 1e-8)`
(inside `losses.ppo_objective` for 'minibatch').

The per-update key is `fold_in(base_key, state.step)`, so no key lives in the
state and a resumed run is bit-exact.
"""

from typing import Any
from typing import Callable
from typing import Dict
from typing import Tuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxca import config_lib
from jaxca import credit
from jaxca import ops
from jaxca import rollout as rollout_lib
from jaxca import train
from jaxca.objectives import losses

ADVANTAGE_NORMS = ('minibatch', 'batch', 'none')


@flax.struct.dataclass
class PPOState:
  """Train state of one seed (vmapped over seeds by the experiment).

  Attributes:
    step: int32 scalar; number of updates done.
    params: network parameters.
    opt_state: optax state.
    env: `rollout.EnvCarry`; environments persist across updates.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  env: rollout_lib.EnvCarry


def make_init(
  network_init: Callable[[jax.Array], Any],
  tx: optax.GradientTransformation,
  env_reset: Callable[[jax.Array], rollout_lib.EnvCarry],
) -> Callable[[jax.Array], PPOState]:
  """Returns init(key) -> PPOState. Pure; vmappable over seeds."""

  def init(key):
    net_key, env_key = jax.random.split(key)
    params = network_init(net_key)
    return PPOState(
      step=jnp.zeros([], jnp.int32),
      params=params,
      opt_state=tx.init(params),
      env=env_reset(env_key),
    )

  return init


def make_loss(
  apply_fn: Callable,
  *,
  clip_eps: float,
  vf_coef: float,
  ent_coef: float,
  value_clip_eps=None,
  advantage_norm: str = 'minibatch',
) -> Callable[[Any, Dict[str, jax.Array]], Tuple[jax.Array, dict]]:
  """Returns loss(params, minibatch) -> (loss, metrics) for flat `[N]` minibatches.

  The minibatch dict holds obs [N, D], actions [N] int32, log_probs [N],
  values [N] (sampling time), advantages [N], returns [N], mask [N] bool.
  `value_clip_eps=None` disables value clipping.
  """
  if advantage_norm not in ADVANTAGE_NORMS:
    raise ValueError(
      f'Unknown advantage_norm {advantage_norm!r}; choose from {list(ADVANTAGE_NORMS)}.'
    )

  def loss_fn(params, mb):
    logits, values = apply_fn(params, mb['obs'])
    loss, aux = losses.ppo_objective(
      rollout_lib.log_prob(logits, mb['actions']),
      mb['log_probs'],
      mb['advantages'],
      mb['mask'],
      clip_eps=clip_eps,
      advantage_norm='minibatch' if advantage_norm == 'minibatch' else 'none',
      entropy=losses.entropy_from_logits(logits),
      ent_coef=ent_coef,
      values=values,
      returns=mb['returns'],
      old_values=mb['values'],
      vf_coef=vf_coef,
      vf_clip=value_clip_eps,
    )
    return loss, aux

  return loss_fn


def make_update(
  rollout: Callable,
  loss_fn: Callable,
  tx: optax.GradientTransformation,
  *,
  lambda_: float,
  num_epochs: int,
  num_minibatches: int,
  advantage_norm: str = 'minibatch',
) -> Callable[[PPOState, jax.Array], Tuple[PPOState, dict]]:
  """Returns update(state, base_key) -> (state, metrics): one PPO iteration. Pure.

  Metrics (scalars): mean loss terms over all minibatch steps, `episode_return`
  (mean over envs of the last finished episode's return, PureJaxRL's
  `returned_episode_returns`), `episodes` (episodes finished in this rollout),
  `completed_return` (mean return of those; 0 if none) and `truncations`.
  """
  if advantage_norm not in ADVANTAGE_NORMS:
    raise ValueError(
      f'Unknown advantage_norm {advantage_norm!r}; choose from {list(ADVANTAGE_NORMS)}.'
    )
  grad_step = train.make_gradient_step(loss_fn, tx)

  def update(state: PPOState, base_key: jax.Array):
    key = jax.random.fold_in(base_key, state.step)
    rollout_key, epoch_key = jax.random.split(key)
    env, traj = rollout(state.params, state.env, rollout_key)
    rewards, discounts = rollout_lib.td_inputs(traj)
    # gymnax rollouts act at every step (traj.mask is all True), so the kernel's
    # unmasked fast path is exact here; the losses still see the mask. The rollout is
    # collected time-major, so GAE runs time-major (a plain scan over T, no transposes in
    # the kernel) and the results are swapped back to the trajectory's [B, T].
    swap = lambda x: jnp.swapaxes(x, 0, 1)  # noqa: E731
    advantages, returns = map(swap, credit.gae(
      swap(rewards), swap(traj.values), swap(discounts), traj.bootstrap_value, lambda_,
      time_major=True,
    ))  # fmt: skip
    if advantage_norm == 'batch':
      advantages = ops.masked_whiten(advantages, traj.mask, unbiased=False)
    batch = dict(
      obs=traj.obs,
      actions=traj.actions,
      log_probs=traj.log_probs,
      values=traj.values,
      advantages=advantages,
      returns=returns,
      mask=traj.mask,
    )
    batch = jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), batch)  # [B*T, ...]
    (params, opt_state), mb_metrics = train.minibatch_epochs(
      grad_step,
      (state.params, state.opt_state),
      batch,
      epoch_key,
      num_epochs=num_epochs,
      num_minibatches=num_minibatches,
    )
    episodes = jnp.sum(traj.dones, dtype=jnp.float32)
    metrics = jax.tree.map(jnp.mean, mb_metrics)
    metrics.update(
      episode_return=jnp.mean(env.last_return),
      episode_length=jnp.mean(env.last_length.astype(jnp.float32)),
      episodes=episodes,
      completed_return=jnp.sum(traj.episode_returns) / jnp.maximum(episodes, 1.0),
      truncations=jnp.sum(traj.truncated, dtype=jnp.float32),
    )
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, env=env)
    return new_state, metrics

  return update


def make_update_from_config(
  cfg, apply_fn: Callable, rollout: Callable, tx: optax.GradientTransformation
) -> Callable[[PPOState, jax.Array], Tuple[PPOState, dict]]:
  """`make_loss` + `make_update` from a config block (fields of configs/ppo_gymnax.py `ppo`).

  `cfg` has lambda_, clip_eps, value_clip_eps (<= 0 disables value clipping),
  vf_coef, ent_coef, num_epochs, num_minibatches and advantage_norm.
  """
  loss_fn = make_loss(
    apply_fn,
    clip_eps=cfg.clip_eps,
    vf_coef=cfg.vf_coef,
    ent_coef=cfg.ent_coef,
    value_clip_eps=cfg.value_clip_eps if cfg.value_clip_eps > 0 else None,
    advantage_norm=cfg.advantage_norm,
  )
  return make_update(
    rollout,
    loss_fn,
    tx,
    lambda_=cfg.lambda_,
    num_epochs=cfg.num_epochs,
    num_minibatches=cfg.num_minibatches,
    advantage_norm=cfg.advantage_norm,
  )


def _in_unit(path, value):
  if not 0.0 <= float(value) <= 1.0:
    raise config_lib.ConfigError(f'config.{path} must be in [0, 1]; got {value!r}.')


def _nonnegative(path, value):
  if not float(value) >= 0:
    raise config_lib.ConfigError(f'config.{path} must be >= 0; got {value!r}.')


def validate_config(config):
  """Checks a gymnax PPO config (configs/ppo_gymnax.py): env name, positive sizes, gamma /
  lambda in [0, 1], coefficients >= 0, the batch divisible into minibatches and the updates into
  chunks; raises config_lib.ConfigError (one line). Returns `config`."""
  try:
    import gymnax  # pylint: disable=g-import-not-at-top
  except ImportError:
    gymnax = None
  if gymnax is not None and config.env.name not in gymnax.registered_envs:
    raise config_lib.ConfigError(
      f'Unknown config.env.name={config.env.name!r}; choose from {list(gymnax.registered_envs)}.'
    )
  if config.env.max_steps_in_episode < 0:
    raise config_lib.ConfigError(
      f'config.env.max_steps_in_episode must be >= 0 (0 keeps the default); '
      f'got {config.env.max_steps_in_episode!r}.'
    )
  config_lib.positive('num_seeds', config.num_seeds)
  config_lib.positive('rollout.num_envs', config.rollout.num_envs)
  config_lib.positive('rollout.num_steps', config.rollout.num_steps)
  if not config.network.hidden_sizes or any(
    isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in config.network.hidden_sizes
  ):
    raise config_lib.ConfigError(
      f'config.network.hidden_sizes must be positive ints; got {config.network.hidden_sizes!r}.'
    )
  p = config.ppo
  _in_unit('ppo.gamma', p.gamma)
  _in_unit('ppo.lambda_', p.lambda_)
  for key in ('clip_eps', 'vf_coef', 'ent_coef'):
    _nonnegative(f'ppo.{key}', p[key])
  config_lib.positive('ppo.num_epochs', p.num_epochs)
  config_lib.positive('ppo.num_minibatches', p.num_minibatches)
  if p.advantage_norm not in ADVANTAGE_NORMS:
    raise config_lib.ConfigError(
      f'Unknown config.ppo.advantage_norm={p.advantage_norm!r}; '
      f'choose from {list(ADVANTAGE_NORMS)}.'
    )
  batch = config.rollout.num_envs * config.rollout.num_steps
  config_lib.divisible(
    'rollout.num_envs * rollout.num_steps', batch, p.num_minibatches, 'config.ppo.num_minibatches'
  )
  try:
    train.check_optimizer(config.optim)
  except (ValueError, TypeError) as e:
    raise config_lib.from_section('optim', e) from None
  config_lib.positive('train.total_timesteps', config.train.total_timesteps)
  config_lib.positive('train.num_chunks', config.train.num_chunks)
  updates = config.train.total_timesteps // batch
  if updates < 1:
    raise config_lib.ConfigError(
      f'config.train.total_timesteps={config.train.total_timesteps} is less than one update '
      f'(rollout.num_envs * rollout.num_steps = {batch}).'
    )
  if updates % config.train.num_chunks:
    raise config_lib.ConfigError(
      f'config.train.num_chunks={config.train.num_chunks} must divide the {updates} updates '
      f'(train.total_timesteps // (rollout.num_envs * rollout.num_steps)).'
    )
  return config
