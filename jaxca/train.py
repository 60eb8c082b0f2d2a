"""Pure training machinery shared by every RL loop: optimizer and minibatch epochs.

Nothing here is jitted; experiments wrap the functions they compose.
"""

from typing import Any
from typing import Callable
from typing import Tuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ('adam', 'adamw', 'sgd', 'lion', 'rmsprop')


def check_optimizer(cfg) -> None:
  """Checks an optimizer section (`make_optimizer`'s): `name` one of OPTIMIZERS and `lr` > 0
  (inf is allowed on purpose: fault-injection tests). Raises ValueError naming the `field`."""
  get = cfg.get if hasattr(cfg, 'get') else (lambda k, d=None: getattr(cfg, k, d))
  name = get('name', 'adam')
  if name not in OPTIMIZERS:
    raise ValueError(f'Unknown `name`={name!r}; choose from {list(OPTIMIZERS)}.')
  lr = get('lr')
  if not float(lr) > 0:
    raise ValueError(f'`lr` must be > 0; got {lr!r}.')


def make_optimizer(cfg) -> optax.GradientTransformation:
  """Builds `clip_by_global_norm(max_grad_norm) -> optax.<name>(schedule)`.

  Args:
    cfg: ConfigDict/dict with `name` (one of OPTIMIZERS), `lr`, optional
      `max_grad_norm` (None or <= 0 disables clipping), `warmup_steps` (linear
      warm-up from 0), `anneal_steps` (linear decay to 0 after warm-up; 0 keeps
      the rate constant), `eps` (adam-family epsilon) and `kwargs` (extra
      keyword arguments for the optax constructor).
  """
  get = cfg.get if hasattr(cfg, 'get') else (lambda k, d=None: getattr(cfg, k, d))
  name = get('name', 'adam')
  if name not in OPTIMIZERS:
    raise ValueError(f'Unknown optimizer {name!r}; choose from {list(OPTIMIZERS)}.')
  lr = float(get('lr'))
  warmup = int(get('warmup_steps', 0) or 0)
  anneal = int(get('anneal_steps', 0) or 0)
  if anneal > 0:
    schedule = optax.schedules.linear_schedule(lr, 0.0, anneal)
  else:
    schedule = optax.schedules.constant_schedule(lr)
  if warmup > 0:
    schedule = optax.schedules.join_schedules(
      [optax.schedules.linear_schedule(0.0, lr, warmup), schedule], [warmup]
    )
  kwargs = dict(get('kwargs', None) or {})
  if name in ('adam', 'adamw') and get('eps', None) is not None:
    kwargs['eps'] = float(get('eps'))
  tx = getattr(optax, name)(learning_rate=schedule, **kwargs)
  max_norm = get('max_grad_norm', None)
  if max_norm is not None and max_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(max_norm), tx)
  return tx


def make_gradient_step(
  loss_fn: Callable[..., Tuple[jax.Array, dict]], tx: optax.GradientTransformation
) -> Callable:
  """Returns step((params, opt_state), minibatch) -> ((params, opt_state), metrics).

  `loss_fn(params, minibatch) -> (loss, aux_metrics)`. Metrics gain `loss` and
  `grad_norm` (before clipping).
  """

  def step(carry, minibatch):
    params, opt_state = carry
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, minibatch)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return (params, opt_state), dict(aux, loss=loss, grad_norm=optax.global_norm(grads))

  return step


def minibatch_epochs(
  step: Callable[[Any, Any], Tuple[Any, dict]],
  carry: Any,
  batch: Any,
  key: jax.Array,
  *,
  num_epochs: int,
  num_minibatches: int,
  shuffle: bool = True,
) -> Tuple[Any, dict]:
  """Runs `step` over `num_epochs` passes of `num_minibatches` minibatches (all in lax.scan).

  Args:
    step: (carry, minibatch) -> (carry, metrics); e.g. from `make_gradient_step`.
    carry: initial carry (e.g. (params, opt_state)).
    batch: pytree whose leaves share a leading batch axis of size B, with B
      divisible by `num_minibatches`.
    key: PRNG key for the per-epoch permutations.
    num_epochs, num_minibatches: static Python ints.
    shuffle: permute the batch each epoch (False keeps the order: minibatch i
      holds rows [i*B/M, (i+1)*B/M)).

  Returns:
    (final carry, metrics with leaves of shape [num_epochs, num_minibatches]).
  """
  sizes = {x.shape[0] for x in jax.tree.leaves(batch)}
  if len(sizes) != 1:
    raise ValueError(f'minibatch_epochs: batch leaves disagree on the leading axis: {sizes}.')
  (size,) = sizes
  if size % num_minibatches:
    raise ValueError(
      f'minibatch_epochs: batch size {size} is not divisible by num_minibatches={num_minibatches}.'
    )
  mb = size // num_minibatches

  def epoch(carry, epoch_key):
    if shuffle:
      perm = jax.random.permutation(epoch_key, size)
      shuffled = jax.tree.map(lambda x: jnp.take(x, perm, axis=0), batch)
    else:
      shuffled = batch
    minibatches = jax.tree.map(lambda x: x.reshape((num_minibatches, mb) + x.shape[1:]), shuffled)
    return jax.lax.scan(step, carry, minibatches)

  return jax.lax.scan(epoch, carry, jax.random.split(key, num_epochs))


def params_finite(params) -> jax.Array:
  """[] float32: 1.0 iff every leaf of `params` is finite (traced; a NaN guard before saving)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]
  return jnp.all(jnp.stack(leaves)).astype(jnp.float32)
