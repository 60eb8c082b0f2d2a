"""Advantage estimators: pure functions of a `Trajectory`, composed from named stages.

  est = estimators.make('grpo')                        # or from_config(cfg.credit)
  est.requires                                         # ('rewards', 'mask', 'group_ids')
  targets = est(traj)                                  # Targets(advantages, returns)
  targets = est(traj, hparams)                         # hparams: a pytree of arrays (vmappable)

`traj` is a `jaxca.types.Trajectory` (B rows, T tokens, S steps; see its module for every
field). Outputs are `Targets(advantages, returns)`, both [B, T] float32 and 0 where
`traj.mask` is False; `returns` are value targets.

A spec string composes stages: `'a + w*b | post1 | post2'`. Source stages (`a`, `b`) each
compute targets from the trajectory; the advantages are summed with weights (`w` defaults
to 1; the weights are traceable hyper-parameters, so `omega` of
'episode-level + omega * step-level' can be swept under `vmap`), the returns are those of the
first term. Transform stages after `|` map targets to targets in order (e.g. `whiten`, the
one place where advantages are normalised).

`STAGES` is the one registry, {name: constructor}; each constructor is public, with its own
docstring and maths, in the family module:
  * `basic`: gae, vapo_gae (arXiv 2504.05118), reinforce, grpo, dr_grpo, rloo; transform whiten;
  * `group`: gdpo (arXiv 2601.05242), maxrl, and the named GRPO variants grpo_verl,
    grpo_trl, grpo_nemo;
  * `pure`: min_form, pure (PURE, arXiv 2504.15275);
  * `gigpo`: gigpo_episode, gigpo_step, turn_step (GiGPO, arXiv 2505.10978; MT-GRPO);
  * `mc`: vineppo, spo_chain; transform prob_whiten (VinePPO, arXiv 2410.01679; SPO,
    arXiv 2505.23564);
  * `token`: gtpo, grpo_s (arXiv 2508.04349); transforms hicra, hicra_official
    (arXiv 2509.03646);
  * `implicit`: implicit_reward, the dense token credit of a DPO-trained policy
    (arXiv 2404.12358);
  * `macro`: macro_gae, PPO's GAE over MA-RLHF macro actions (arXiv 2410.02743);
  * `turns`: matchtir (MatchTIR's dual-level advantage, arXiv 2601.10712), mars (MARS's
    turn-level advantage, arXiv 2510.15414), turn_gae (GAE over turns).
  * `tree`: treerl (arXiv 2506.11902), spo_tree (arXiv 2505.23564), tree_step (TreePS-RAG,
    arXiv 2601.06922) over rollout trees (`node_ids`, `parent_ids` in `extras`).

Options of `make` go to every chosen stage that takes them (e.g. `gamma` to 'gae' and
'reinforce'). An option that no stage of the spec reads is an error naming the stages that
take it (`from_config` relaxes this for config defaults: it only refuses names no registered
stage knows). Floats become traceable hyper-parameters (`est.hparams`); strings and bools
are static options.

A new stage is a constructor `fn(**options) -> Stage` marked by `@core.stage()` (or
`@core.stage(transform=True)`); pass it per call, `make(spec, stages={name: fn})`, or name
a module of them in a config (`credit.stages='my_pkg.my_stages'`, a module with a `STAGES`
dict; `load_stages`). Its `Stage(name, requires, hparams, apply)` declares the Trajectory
fields it reads; `apply(traj, prev, hp) -> Targets` reads its traced floats from `hp`.
"""

import importlib
import inspect
import re
from typing import Any
from typing import Mapping
from typing import Optional
from typing import Sequence

from jaxca.estimators import basic
from jaxca.estimators import core
from jaxca.estimators import gigpo
from jaxca.estimators import group
from jaxca.estimators import implicit
from jaxca.estimators import macro
from jaxca.estimators import mc
from jaxca.estimators import pure
from jaxca.estimators import token
from jaxca.estimators import tree
from jaxca.estimators import turns
from jaxca.estimators.core import Estimator
from jaxca.estimators.core import Stage
from jaxca.estimators.core import Targets
from jaxca.estimators.core import row_group_relative
from jaxca.estimators.core import stage

STAGES: dict = {
  **basic.STAGES,
  **group.STAGES,
  **pure.STAGES,
  **gigpo.STAGES,
  **mc.STAGES,
  **token.STAGES,
  **implicit.STAGES,
  **macro.STAGES,
  **turns.STAGES,
  **tree.STAGES,
}

__all__ = [
  'STAGES',
  'Estimator',
  'Stage',
  'Targets',
  'from_config',
  'load_stages',
  'make',
  'row_group_relative',
  'stage',
]


def _registry(stages: Optional[Mapping], post: tuple) -> dict:
  registry = dict(STAGES)
  for name, fn in (stages or {}).items():
    if not re.fullmatch(r'[A-Za-z_][A-Za-z0-9_]*', str(name)) or name in STAGES:
      raise ValueError(f'Extra stage names must be new identifiers; got {name!r}.')
    if (
      getattr(fn, 'transform', None) is None
    ):  # an unmarked constructor: its place in the spec says
      fn = core.stage(transform=name in post)(_copy(fn))
    registry[name] = fn
  return registry


def _copy(fn):
  def wrapped(**kwargs):
    return fn(**kwargs)

  wrapped.__signature__ = inspect.signature(fn)
  wrapped.__name__ = getattr(fn, '__name__', 'stage')
  return wrapped


def make(
  spec: str, *, whiten: bool = False, stages: Optional[Mapping] = None, **options
) -> Estimator:
  """Builds an estimator from a name or a spec string (see the package docstring).

  Args:
    spec: e.g. 'grpo', 'gae | whiten', 'grpo + 0.5*rloo', 'vineppo | whiten'.
    whiten: append a `whiten` stage (shorthand for `spec + ' | whiten'`).
    stages: extra stage constructors for this call, {name: fn(**options) -> Stage}.
    **options: stage options, given to every chosen stage that takes them (`eps` goes to
      source stages, `whiten_eps` to the transforms' `eps`).

  Raises:
    ValueError: an unknown stage name, or an option that no chosen stage reads (the
      message names the stages that take it).
  """
  if whiten:
    spec = f'{spec} | whiten'
  _, post = core.parse(spec)
  return core.build(spec, _registry(stages, tuple(post)), options, strict=True)


def load_stages(module: str) -> dict:
  """The `STAGES` dict of a user module named by its import path ('my_pkg.my_stages')."""
  try:
    mod = importlib.import_module(module)
  except ImportError as e:
    raise ValueError(f'credit.stages: cannot import {module!r} ({e}).') from None
  stages = getattr(mod, 'STAGES', None)
  if not isinstance(stages, dict):
    raise ValueError(f'credit.stages: module {module!r} has no STAGES dict {{name: constructor}}.')
  return stages


def from_config(
  cfg: Any, stages: Optional[Mapping] = None, explicit: Sequence[str] = ()
) -> Estimator:
  """Builds an estimator from a config section: `estimator` (the spec) plus options.

  Every other key is a stage option; None values are skipped, as is `stages` (a module path
  whose `STAGES` dict adds stages; see `load_stages`). Options the chosen spec does not read
  are fine here (config defaults), except those named in `explicit` (set by the user, e.g.
  on the command line), which are refused as in `make`; names no registered stage knows are
  refused.
  """
  items = dict(cfg.items() if hasattr(cfg, 'items') else vars(cfg).items())
  spec = items.pop('estimator')
  extra = dict(stages or {})
  module = items.pop('stages', None)
  if module:
    extra.update(load_stages(module))
  whiten = bool(items.pop('whiten', False))
  if whiten:
    spec = f'{spec} | whiten'
  options = {k: v for k, v in items.items() if v is not None}
  _, post = core.parse(spec)
  registry = _registry(extra, tuple(post))
  chosen = {k: v for k, v in options.items() if k in set(explicit)}
  if chosen:  # explicit options: the spec must read them (`make`'s check)
    core.build(spec, registry, chosen, strict=True)
  return core.build(spec, registry, options, strict=False)
