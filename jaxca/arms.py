"""The arms of a reproduction: from its config's arm table to `jaxca.loop.ArmSteps`.

A reproduction (policy_objectives, mc_credit, token_credit) runs every arm x seed from one
warm start (`jaxca.warmstart.start`, `jaxca.loop.run_grid`). Its config has shared sections
(`task`, `policy`, `rl`, `optim`, `loss`, `credit`) and a table `arms`, {name: entry}, whose
entry overrides a shared section by a section of its own (`arms.<name>.loss`, `.rl`,
`.optim`, `.credit`) or names its estimator spec (`arms.<name>.estimator`, with constants
from `config.credit`). From it:

- `task_and_policy`: the task and the transformer policy (and the critic) of the config;
- `section` (the shared section with the arm's keys over it), `estimator` (the arm's);
- `single_step` (one jitted iteration, `lm.make_rl_update`, compiled ahead of time) and
  `phased` (collect, host providers, update: `lm.host.make_iteration`), each an
  `ArmSteps` whose `init` starts the learner from the warm start;
- `check` and `check_sections`: the checks a reproduction's `validate` shares (the arm table,
  the RL batch, the policy's length), one-line `runs.ConfigError`s;
- `wall_budget`: an arm's equal-wall-clock cap (`arms.<name>.wall_budget`: another arm).

Host-side composition over `jaxca.lm` and `jaxca.loop`; kernels never import it.
"""

from typing import Callable
from typing import Mapping
from typing import Optional
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections

from jaxca import bench
from jaxca import estimators
from jaxca import lm
from jaxca import loop
from jaxca import runs
from jaxca import tasks
from jaxca import train as train_lib
from jaxca.lm import host as host_lib
from jaxca.networks import critic as critic_lib
from jaxca.networks import transformer


def make_task(config):
  """The task of `config.task` (`tasks.make`); a bad section is one ConfigError line."""
  try:
    return tasks.make(config.task.name, **{k: v for k, v in config.task.items() if k != 'name'})
  except ValueError as e:
    raise runs.ConfigError(f'config.task: {e}') from None


def task_and_policy(config, critic: bool = False) -> tuple:
  """(task, policy), or (task, policy, critic) with `critic`: the config's task and the
  transformer policy (and critic) of its `policy` section, sized to the task's vocabulary."""
  task = make_task(config)
  pcfg = ml_collections.ConfigDict(config.policy.to_dict())
  policy = transformer.make_policy(pcfg, vocab_size=task.vocab.size)
  if not critic:
    return task, policy
  return task, policy, critic_lib.make_critic(pcfg, vocab_size=task.vocab.size)


def section(config, name: str, key: str) -> dict:
  """The shared section `config.<key>` with arm `name`'s own `<key>` keys over it."""
  base = config.get(key, None)
  over = config.arms[name].get(key, None)
  return dict(base.to_dict() if base else {}, **(over.to_dict() if over else {}))


def estimator(config, name: str, constants: Sequence[str] = (), arm_keys: Sequence[str] = ()):
  """The estimator of arm `name` (`estimators.from_config`).

  Its own `credit` section if it has one; else, if the arm names a spec
  (`arms.<name>.estimator`), that spec with the `constants` of `config.credit` and the arm's
  own `arm_keys` (options a spec does not read are ignored); else `config.credit`.
  """
  arm = config.arms[name]
  if arm.get('credit', None):
    return estimators.from_config(arm.credit)
  if 'estimator' not in arm:
    return estimators.from_config(config.credit)
  cfg = {k: config.credit[k] for k in constants}
  cfg.update({k: arm[k] for k in arm_keys}, estimator=arm.estimator)
  return estimators.from_config(cfg)


def learner_options(rl) -> dict:
  """The learner's batch options of an `rl` section (group size, epochs, minibatches, T)."""
  return dict(
    group_size=rl.group_size,
    num_epochs=rl.num_epochs,
    num_minibatches=rl.num_minibatches,
    temperature=rl.temperature,
  )


def _hparams(est):
  return jax.tree.map(jnp.asarray, est.hparams)


def single_step(name, policy, task, est, optim, rl, loss) -> loop.ArmSteps:
  """An arm whose iteration is one jitted `lm.make_rl_update` (outcome reward), compiled ahead
  of time once and shared by its seeds; `init` starts a fresh `optim` from the warm start.

  Args:
    name: the arm's name.
    policy, task: the learner's policy and task.
    est: the arm's estimator (`estimator`); its hyper-parameters are traced.
    optim: the RL optimizer section (`train.make_optimizer`).
    rl: the `rl` section (`learner_options`).
    loss: the loss section (`lm.loss_options`).
  """
  tx = train_lib.make_optimizer(optim)
  update = bench.Aot(
    lm.make_rl_update(policy, task, est, tx, **learner_options(rl), reward='outcome', loss_cfg=loss)
  )
  init = lambda params0, seed: lm.init_from_params(params0, tx)  # noqa: E731
  return loop.ArmSteps(name, init, update, phased=False, hparams=_hparams(est))


def phased(
  name,
  policy,
  task,
  est,
  optim,
  rl,
  loss,
  *,
  providers: Optional[Mapping[str, Callable]] = None,
  hosts: Sequence[host_lib.HostProvider] = (),
  critic=None,
  critic_optim=None,
  critic_key: Optional[Callable[[int], jax.Array]] = None,
  metrics_fn: Optional[Callable] = None,
) -> loop.ArmSteps:
  """An arm whose iteration is collect, the `hosts` (host providers) and update
  (`lm.host.make_iteration` over `lm.make_rl_phases`); the arguments as `single_step`, plus:

  Args:
    providers: in-jit providers of Trajectory fields (`lm.providers`).
    hosts: host providers (`lm.host`) of the fields the estimator requires that no in-jit
      provider fills.
    critic, critic_optim, critic_key: a separate critic, its optimizer section and
      `critic_key(seed)`, the key of its fresh head (`critic.critic_params_from_policy`: the
      warm start's trunk).
    metrics_fn: extra metrics of the update (`lm.make_rl_phases`).
  """
  tx = train_lib.make_optimizer(optim)
  ctx = train_lib.make_optimizer(critic_optim) if critic is not None else None
  phases = lm.make_rl_phases(
    policy,
    task,
    est,
    tx,
    **learner_options(rl),
    loss_cfg=loss,
    providers=dict(providers or {}),
    host_fields=host_lib.host_fields(hosts),
    critic=critic,
    critic_tx=ctx,
    metrics_fn=metrics_fn,
  )
  step = host_lib.make_iteration(phases, hosts, hparams=_hparams(est))

  def init(params0, seed):
    cparams = None
    if critic is not None:
      cparams = critic_lib.critic_params_from_policy(critic, params0, critic_key(seed))
    return lm.init_from_params(params0, tx, critic_params=cparams, critic_tx=ctx)

  return loop.ArmSteps(name, init, step, phased=True)


def compile_s(arm: loop.ArmSteps) -> float:
  """Seconds the arm's jitted pieces have spent compiling (ahead of time) so far."""
  return arm.step.compile_s() if arm.phased else arm.step.compile_s


# ----------------------------------------------------------------------------- checks


def check(config, extra_len: int = 0, min_group: int = 2, baseline: Optional[str] = None):
  """The checks every reproduction shares; raises runs.ConfigError (one line).

  The arm table and seeds (`runs.check_grid`), `baseline` among the arms run, the RL batch
  (`check_sections` on `config.rl`) and `policy.max_len` >= prompt + response + `extra_len`
  (e.g. an MC completion's next step).
  """
  runs.check_grid(config)
  if baseline is not None and baseline not in config.run_arms:
    raise runs.ConfigError(
      f"config.run_arms must include {baseline!r} (the gate's baseline); got "
      f'{list(config.run_arms)}.'
    )
  check_sections(config, config.rl, min_group=min_group)
  task = make_task(config)
  need = task.prompt_len + task.response_len + extra_len
  if config.policy.max_len < need:
    raise runs.ConfigError(f'policy.max_len must be >= {need}; got {config.policy.max_len}.')


def check_sections(config, rl, where: str = '', min_group: int = 2):
  """An `rl` section (shared, or an arm's with `where` = 'arms.<name>: '): group size, the
  batch's division into minibatches, prompts within `data.num_train`, a positive budget."""
  if rl.group_size < min_group:
    raise runs.ConfigError(
      f'{where}rl.group_size must be >= {min_group} (groups); got {rl.group_size}.'
    )
  if (rl.prompts * rl.group_size) % rl.num_minibatches:
    raise runs.ConfigError(
      f'{where}rl.num_minibatches ({rl.num_minibatches}) must divide rl.prompts * '
      f'rl.group_size ({rl.prompts * rl.group_size}).'
    )
  if rl.prompts > config.data.num_train:
    raise runs.ConfigError(f'{where}rl.prompts must be <= data.num_train.')
  if rl.iterations < 1 or rl.eval_every < 1:
    raise runs.ConfigError(f'{where}rl.iterations and rl.eval_every must be >= 1.')


def check_choice(config, key: str, allowed: Sequence):
  """Every arm's `key` is one of `allowed` (None: off)."""
  for name, arm in config.arms.items():
    if arm.get(key, None) not in allowed:
      raise runs.ConfigError(
        f'arms.{name}.{key} must be one of {tuple(allowed)}; got {arm.get(key, None)!r}.'
      )


# ----------------------------------------------------------------------------- budgets


def check_wall_budgets(config):
  """`arms.<name>.wall_budget` is None or an arm run before it (its wall clock is known)."""
  for i, name in enumerate(config.run_arms):
    ref = config.arms[name].get('wall_budget', None)
    if ref is not None and ref not in config.run_arms[:i]:
      raise runs.ConfigError(
        f'arms.{name}.wall_budget must be None or an arm run before it '
        f'({list(config.run_arms[:i])}); got {ref!r}.'
      )


def wall_budget(config, name: str, walls: Mapping, seed) -> float:
  """The training wall-clock cap of arm `name` in `seed`: `rl.max_wall_s`, or, with
  `arms.<name>.wall_budget` = another arm, that arm's final training wall clock of the same
  seed (`walls[(arm, seed)]`, seconds), whichever is smaller: the equal-wall-clock budget."""
  ref = config.arms[name].get('wall_budget', None)
  if ref is None:
    return float(config.rl.max_wall_s)
  return min(float(config.rl.max_wall_s), float(walls[(ref, seed)]))


def capped(config, records: Sequence[Mapping], walls: Mapping) -> set:
  """{(arm, seed)}: the runs that stopped on their equal-wall-clock budget (`wall_budget`)
  before `rl.iterations`."""
  last = {}
  for r in records:
    k = (r['arm'], r['seed'])
    last[k] = max(last.get(k, 0), r['iteration'])
  return {
    (a, s)
    for (a, s), it in last.items()
    if config.arms[a].get('wall_budget', None) is not None
    and walls[(a, s)]
    and it < config.rl.iterations
  }


def budget_text(config) -> str:
  """The learning runs' budget rule in words: `rl.iterations`, the equal-wall-clock caps
  (`wall_budget`) and the safety cap `rl.max_wall_s`."""
  rl = config.rl
  capped = {a: config.arms[a].get('wall_budget', None) for a in config.run_arms}
  by_iter = [a for a, ref in capped.items() if ref is None]
  by_wall = [a for a, ref in capped.items() if ref is not None]
  text = f'{", ".join(by_iter)} run {rl.iterations} iterations'
  if by_wall:
    refs = sorted({capped[a] for a in by_wall})
    text += (
      f'; {", ".join(by_wall)} stop at {rl.iterations} iterations or once their training wall '
      f'clock reaches the final training wall clock of {", ".join(refs)} in the same seed '
      '(equal wall-clock: their iteration count is what that budget buys)'
    )
  return text + (
    f'; every run also stops at {rl.max_wall_s:.0f} s of training wall clock (a safety cap). '
    'Training wall clock: sampling, host-side work (MC completions) and updates; compiles and '
    'evaluations excluded.'
  )
