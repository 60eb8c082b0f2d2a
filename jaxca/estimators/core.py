"""The estimator machinery: `Targets`, `Stage`, `Estimator`, spec parsing and `make`.

A `Stage` is one named piece of an estimator, built by a public constructor
(`basic.gae(gamma=..., lambda_=...)`, `pure.min_form(...)`, ...); its float options are
traceable hyper-parameters (`Stage.hparams`), its string and bool options are static. An
`Estimator` sums weighted source stages and applies transform stages in order. `make` builds
one from a spec string against a registry ({name: constructor}); `jaxca.estimators.STAGES`
is the one registry of every built-in stage.
"""

import dataclasses
import inspect
import re
from typing import Callable
from typing import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxca import credit
from jaxca import ops
from jaxca import types
from jaxca.credit import _checks
from jaxca.types import Trajectory


class Targets(NamedTuple):
  """Estimator output.

  Attributes:
    advantages: [B, T] float32; 0 where the mask is False.
    returns: [B, T] float32 value targets; 0 where the mask is False.
  """

  advantages: jax.Array
  returns: jax.Array


class Stage(NamedTuple):
  """One named piece of an estimator.

  Attributes:
    name: the registry name.
    requires: Trajectory fields the stage reads.
    hparams: dict of float32 scalars, the traceable hyper-parameters.
    apply: `apply(traj, prev, hparams) -> Targets`; `prev` is None for a source
      stage and the incoming targets for a transform stage.
    transform: whether the stage maps targets to targets.
  """

  name: str
  requires: tuple
  hparams: dict
  apply: Callable[..., Targets]
  transform: bool = False


# Stages that compare rows within groups need at least two rows per group.
_GROUP_FIELDS = ('group_ids',)


def _unique(names):
  out = []
  for n in names:
    if n not in out:
      out.append(n)
  return tuple(out)


@dataclasses.dataclass(frozen=True, eq=False)
class Estimator:
  """Weighted source stages, then transform stages (see the package docstring).

  Callable (and `jax.jit`-able directly); compared and hashed by identity.

  Attributes:
    name: the spec string it was built from.
    terms: source `Stage`s, summed with weights.
    post: transform `Stage`s, applied in order.
    hparams: default hyper-parameters, `dict(weights=[n_terms] float32,
      terms=(dict, ...), post=(dict, ...))`; pass a pytree of this structure
      (arrays, possibly batched under `vmap`) as the second call argument.
  """

  name: str
  terms: tuple
  post: tuple
  hparams: dict

  @property
  def requires(self) -> tuple:
    """Trajectory fields the estimator reads (`rewards` and `mask` always)."""
    names = ['rewards', 'mask']
    for stage in self.terms + self.post:
      names.extend(stage.requires)
    return _unique(names)

  @property
  def min_group_size(self) -> int:
    """2 if a stage compares rows within groups (reads `group_ids`), else 1."""
    return 2 if any(f in self.requires for f in _GROUP_FIELDS) else 1

  def __call__(self, traj: Trajectory, hparams=None) -> Targets:
    """Computes the targets of `traj`.

    Args:
      traj: the trajectory.
      hparams: optional hyper-parameter pytree (structure of `self.hparams`);
        default `self.hparams`.

    Raises:
      ValueError: `traj` lacks required fields (one message lists them all).
    """
    if not isinstance(traj, Trajectory):
      raise TypeError(f'Estimator {self.name!r} takes a Trajectory; got {type(traj).__name__}.')
    hp = self.hparams if hparams is None else hparams
    types.check_requires(traj, self.requires, f'Estimator {self.name!r}')
    traj = check_trajectory(traj)
    weights = jnp.asarray(hp['weights'], jnp.float32)
    out = None
    for i, stage in enumerate(self.terms):
      t = stage.apply(traj, None, hp['terms'][i])
      if out is None:
        adv = t.advantages if len(self.terms) == 1 else weights[i] * t.advantages
        out = Targets(adv, t.returns)
      else:
        out = Targets(out.advantages + weights[i] * t.advantages, out.returns)
    for i, stage in enumerate(self.post):
      out = stage.apply(traj, out, hp['post'][i])
    m = traj.mask
    return Targets(jnp.where(m, out.advantages, 0.0), jnp.where(m, out.returns, 0.0))


def check_trajectory(traj: Trajectory) -> Trajectory:
  """Checks the shapes of `traj`'s fields; returns it with float rewards and a bool mask."""
  rewards = _checks.as_float('rewards', traj.rewards)
  if rewards.ndim != 2:
    raise ValueError(f'`rewards` must be [B, T]; got shape {rewards.shape}.')
  mask = _checks.check_mask(traj.mask, 'rewards', rewards)
  b, t = rewards.shape
  for name in types.TOKEN_FIELDS[2:]:
    x = getattr(traj, name)
    if x is not None and tuple(np.shape(x)) != (b, t):
      raise ValueError(f'`{name}` must be [B, T] = {(b, t)}; got {tuple(np.shape(x))}.')
  for name in types.ROW_FIELDS:
    x = getattr(traj, name)
    if x is not None and tuple(np.shape(x)) != (b,):
      raise ValueError(f'`{name}` must be [B] = {(b,)}; got {tuple(np.shape(x))}.')
  comps = traj.reward_components
  if comps is not None and (np.ndim(comps) != 2 or np.shape(comps)[0] != b):
    raise ValueError(
      f'`reward_components` must be [B, C] with B={b}; got {tuple(np.shape(comps))}.'
    )
  s = traj.num_steps
  for name in types.STEP_FIELDS:
    x = getattr(traj, name)
    if x is not None and tuple(np.shape(x)) != (b, s):
      raise ValueError(f'`{name}` must be [B, S] = {(b, s)}; got {tuple(np.shape(x))}.')
  u = traj.num_turns
  for name in types.TURN_FIELDS:
    x = getattr(traj, name)
    if x is not None and tuple(np.shape(x)) != (b, u):
      raise ValueError(f'`{name}` must be [B, U] = {(b, u)}; got {tuple(np.shape(x))}.')
  for name in ('step_ids', 'turn_ids'):
    x = getattr(traj, name)
    if x is not None and not jnp.issubdtype(jnp.asarray(x).dtype, jnp.integer):
      raise TypeError(f'`{name}` must be an integer array.')
  return traj.replace(rewards=rewards, mask=mask)


# ----------------------------------------------------------------------------- shared helpers


def discounts(traj: Trajectory, gamma) -> jax.Array:
  """[B, T]: `traj.discounts` if given, else `gamma` everywhere."""
  if traj.discounts is not None:
    return _checks.as_float('discounts', traj.discounts)
  return jnp.broadcast_to(jnp.asarray(gamma, jnp.float32), traj.rewards.shape)


def outcome(traj: Trajectory) -> jax.Array:
  """[B]: each row's outcome, the sum of its rewards over valid tokens."""
  return ops.masked_sum(traj.rewards, traj.mask, axis=-1)


def row_group_relative(scores, valid, traj: Trajectory, mode: str, eps) -> jax.Array:
  """`credit.group_relative` of per-row `scores` [B] over `traj`'s groups.

  Uses the [P, G] reshape when `traj.groups_contiguous`, else segment sums over
  `traj.group_ids`.
  """
  if traj.groups_contiguous:
    b, k = scores.shape[0], traj.num_groups
    if b % k:
      raise ValueError(f'groups_contiguous needs B={b} divisible by num_groups={k}.')
    g = b // k
    adv = credit.group_relative(scores.reshape(k, g), mode, eps=eps, valid=valid.reshape(k, g))
    return adv.reshape(b)
  return credit.group_relative(
    scores, mode, group_ids=traj.group_ids, num_groups=traj.num_groups, eps=eps, valid=valid
  )


def step_layout(traj: Trajectory):
  """(valid [B, S] bool: steps with a valid token, step_ids [B, T] with -1 where masked,
  count [B, S] float: tokens per step)."""
  step_ids = jnp.where(traj.mask, traj.step_ids, -1)
  count = ops.to_steps(jnp.ones_like(traj.rewards), step_ids, traj.num_steps, 'count')
  return count > 0, step_ids, count


def turn_layout(traj: Trajectory):
  """(valid [B, U] bool: turns with a valid token, turn_ids [B, T] with -1 where masked)."""
  turn_ids = jnp.where(traj.mask, traj.turn_ids, -1)
  count = ops.to_steps(jnp.ones_like(traj.rewards), turn_ids, traj.num_turns, 'count')
  return count > 0, turn_ids


# ----------------------------------------------------------------------------- spec and registry

_NAME = r'[A-Za-z_][A-Za-z0-9_]*'


def parse(spec: str):
  """'a + 0.5*b | whiten' -> ([(1.0, 'a'), (0.5, 'b')], ['whiten'])."""
  if not isinstance(spec, str) or not spec.strip():
    raise ValueError(f'An estimator spec must be a non-empty string; got {spec!r}.')
  parts = [p.strip() for p in spec.split('|')]
  terms = []
  for term in parts[0].split('+'):
    term = term.strip()
    m = re.fullmatch(rf'(?:([0-9.eE+-]+)\s*\*\s*)?({_NAME})', term)
    if not m:
      raise ValueError(f'Cannot parse estimator term {term!r} in {spec!r} (want [w*]name).')
    terms.append((float(m.group(1)) if m.group(1) else 1.0, m.group(2)))
  for name in parts[1:]:
    if not re.fullmatch(_NAME, name):
      raise ValueError(f'Cannot parse estimator transform {name!r} in {spec!r} (want a name).')
  return terms, parts[1:]


def options_of(constructor) -> set:
  """The option names a stage constructor takes."""
  return set(inspect.signature(constructor).parameters)


def _build(constructor, kwargs) -> Stage:
  keys = options_of(constructor)
  stage = constructor(**{k: v for k, v in kwargs.items() if k in keys})
  hp = {k: np.float32(v) for k, v in stage.hparams.items()}
  return stage._replace(hparams=hp)


def _is_transform(constructor) -> bool:
  flag = getattr(constructor, 'transform', None)
  if flag is None:
    raise ValueError(f'Stage constructor {constructor!r} lacks a `transform` attribute.')
  return bool(flag)


def _takes(constructor, key) -> bool:
  """Whether `key` reaches this constructor (`eps` goes to sources, `whiten_eps` to transforms)."""
  if _is_transform(constructor):
    return key != 'eps' and (key if key != 'whiten_eps' else 'eps') in options_of(constructor)
  return key in options_of(constructor)


def _check_read(spec, registry, options, chosen_src, chosen_tr):
  for key in sorted(options):
    if not any(_takes(c, key) for c in chosen_src + chosen_tr):
      takers = sorted(n for n, c in registry.items() if _takes(c, key))
      raise ValueError(
        f'Estimator option {key!r} is not read by any stage of {spec!r}; '
        f'stages that take it: {takers}.'
      )


def build(
  spec: str,
  registry: Mapping[str, Callable[..., Stage]],
  options: Mapping,
  *,
  strict: bool = True,
) -> Estimator:
  """Builds `spec` from `registry`; `options` go to every chosen stage that takes them.

  `strict`: an option no chosen stage takes is an error naming the registered stages that
  do take it (options set explicitly by a user); with `strict=False` only an option no
  registered stage knows is an error (config defaults that the chosen spec ignores).
  The option `whiten_eps` sets the `eps` of transform stages (`eps` goes to sources).
  """
  terms, post = parse(spec)
  sources = tuple(k for k, c in registry.items() if not _is_transform(c))
  transforms = tuple(k for k, c in registry.items() if _is_transform(c))
  for _, name in terms:
    _checks.choice('estimator', name, sources)
  for name in post:
    _checks.choice('estimator transform', name, transforms)
  chosen_src = [registry[n] for _, n in terms]
  chosen_tr = [registry[n] for n in post]
  known = set().union(*(options_of(c) for c in registry.values())) | {'whiten_eps'}
  unknown = sorted(set(options) - known)
  if unknown:
    raise ValueError(f'Unknown estimator option(s) {unknown}; known: {sorted(known)}.')
  if strict:
    _check_read(spec, registry, options, chosen_src, chosen_tr)
  src = tuple(_build(c, options) for c in chosen_src)
  tr_options = {k: v for k, v in options.items() if k != 'eps'}
  if 'whiten_eps' in options:
    tr_options['eps'] = options['whiten_eps']
  tr = tuple(_build(c, tr_options) for c in chosen_tr)
  hparams = dict(
    weights=np.asarray([w for w, _ in terms], np.float32),
    terms=tuple(s.hparams for s in src),
    post=tuple(s.hparams for s in tr),
  )
  return Estimator(spec, src, tr, hparams)


def stage(transform: bool = False):
  """Marks a function as a stage constructor: `@stage()` (source) or `@stage(transform=True)`."""

  def mark(fn):
    fn.transform = transform
    return fn

  return mark
