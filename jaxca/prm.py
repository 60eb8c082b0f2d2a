"""Process reward models (PRMs): step scores for the arithmetic chains, and a provider.

A PRM maps (prompts, responses) to one score per step, aligned with the task's
step parsing (`Task.parse_steps`: a step ends at STEP, at EOS or at the last
valid token):

  prm = prm_lib.scripted_prm(task, c=0.6, w=-0.8, f=0.9, blind_first=True)
  scores = prm.score(prm.params, prompts, responses, mask)   # [B, S] in [-1, 1]

`score(params, prompts [B, Lp], responses [B, N], mask [B, N], key=None) -> [B, S]`
(S = N, 0 at steps that do not occur) is pure JAX and jittable, so a scripted,
a noisy and a learned PRM are interchangeable. `key` is only read by the
fresh-noise variant.

The scripted "local-plausibility" PRM is hackable on purpose, like a PRM that
judges each step in isolation (PURE, arXiv 2504.15275, Sec. 4: a causal PRM
scores degenerate steps positively). With value steps j = 0, 1, ... in order of
appearance writing u_j:

  value step j = 0          +c if u_0 = op_1(x0), else w; blind_first: always +c
  value step 1 <= j < K     +c if u_j = op_{j+1}(u_{j-1}) (the WRITTEN previous value), else w
  value step j >= K         w (an extra value)
  filler (THINK)            +f (reflecting "is always valid")
  malformed                 w
  last step of an EOS-terminated response with < K value steps: w (premature answer)
  a truncated response (no EOS) gets no special penalty: its steps are scored by content.

Noise: `PR <- clip(PR + sigma * xi, -1, 1)` at the steps that occur, where xi is
a standard normal drawn either from a hash of (prompt, step index, step content)
(`noise='consistent'`: the same step always gets the same error, so a policy can
exploit it) or from `key` (`noise='fresh'`).
"""

from typing import Any
from typing import Callable
from typing import NamedTuple
from typing import Optional

import jax
import jax.numpy as jnp

from jaxca.tasks import base

NOISE = ('none', 'consistent', 'fresh')


class PRM(NamedTuple):
  """A process reward model: `score(params, prompts, responses, mask, key=None) -> [B, S]`."""

  score: Callable[..., jax.Array]
  params: Any = None


class StepChecks(NamedTuple):
  """Per-step facts of a response on an arithmetic chain (all [B, S]).

  Attributes:
    value_index: j, the index of a value step among the value steps; -1 elsewhere.
    local_ok: value step j < K whose value is op_{j+1} applied to the previous
      WRITTEN value (x0 for j = 0).
    global_ok: value step j < K whose value is the true x_{j+1}.
    premature: the last step of an EOS-terminated response with < K value steps.
  """

  value_index: jax.Array
  local_ok: jax.Array
  global_ok: jax.Array
  premature: jax.Array


def _chain(task, prompts):
  """(x0 [B], ops [B, K] token ids, operands [B, K], truth [B, K]) from arith prompts."""
  voc, k, m = task.vocab, task.num_steps, task.config.modulus
  prompts = jnp.asarray(prompts, jnp.int32)
  x0 = prompts[:, 1] - voc.num_offset
  ops = prompts[:, 2 : 2 + 2 * k : 2]
  operands = prompts[:, 3 : 3 + 2 * k : 2] - voc.num_offset
  truth, x = [], x0
  for i in range(k):
    x = _apply(voc, ops[:, i], operands[:, i], x, m)
    truth.append(x)
  return x0, ops, operands, jnp.stack(truth, axis=-1)


def _apply(voc, op, a, x, m):
  out = jnp.where(op == voc.add_id, x + a, jnp.where(op == voc.sub_id, x - a, x * a))
  return jnp.mod(out, m)


def step_checks(task, prompts, responses, mask, steps: Optional[base.Steps] = None) -> StepChecks:
  """`StepChecks` of arith responses (see the class); `steps` defaults to `task.parse_steps`."""
  if steps is None:
    steps = task.parse_steps(responses, mask)
  k, m = task.num_steps, task.config.modulus
  voc = task.vocab
  x0, ops, operands, truth = _chain(task, prompts)
  is_val = steps.kinds == base.STEP_VALUE
  j = jnp.cumsum(is_val, axis=-1, dtype=jnp.int32) - is_val
  s = steps.kinds.shape[-1]
  pos = jnp.arange(s, dtype=jnp.int32)[None, :]
  last_val = jax.lax.cummax(jnp.where(is_val, pos, -1), axis=1)
  prev_pos = jnp.concatenate([jnp.full_like(last_val[:, :1], -1), last_val[:, :-1]], axis=1)
  prev_val = jnp.where(
    prev_pos >= 0,
    jnp.take_along_axis(steps.values, jnp.maximum(prev_pos, 0), axis=1),
    x0[:, None],
  )
  jc = jnp.clip(j, 0, k - 1)
  op = jnp.take_along_axis(ops, jc, axis=1)
  a = jnp.take_along_axis(operands, jc, axis=1)
  in_chain = is_val & (j < k)
  local_ok = in_chain & (steps.values == _apply(voc, op, a, prev_val, m))
  global_ok = in_chain & (steps.values == jnp.take_along_axis(truth, jc, axis=1))
  tok = jnp.where(mask, jnp.asarray(responses), voc.pad_id)
  has_eos = jnp.any(tok == voc.eos_id, axis=-1)
  n_value = jnp.sum(is_val, axis=-1)
  last_step = jnp.max(jnp.where(steps.valid, pos, -1), axis=-1)
  premature = (has_eos & (n_value < k))[:, None] & (pos == last_step[:, None]) & steps.valid
  return StepChecks(jnp.where(is_val, j, -1), local_ok, global_ok, premature)


def _hash_normal(prompts, steps: base.Steps):
  """A standard normal per step from a hash of (prompt, step index, step content)."""
  p = jnp.asarray(prompts).astype(jnp.uint32)
  h = jnp.full(p.shape[:1], 2166136261, jnp.uint32)
  for i in range(p.shape[1]):
    h = (h ^ p[:, i]) * jnp.uint32(16777619)
  s = steps.kinds.shape[-1]
  idx = jnp.arange(s, dtype=jnp.uint32)[None, :]
  content = (steps.kinds + 2).astype(jnp.uint32) * jnp.uint32(4096) + (steps.values + 1).astype(
    jnp.uint32
  )

  def mix(x):  # murmur3 finaliser
    x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
    x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)

  a = mix(mix(h[:, None] ^ (idx * jnp.uint32(0x9E3779B1))) ^ content)
  b = mix(a ^ jnp.uint32(0x68E31DA4))
  u1 = (a.astype(jnp.float32) + 1.0) / 4294967296.0
  u2 = b.astype(jnp.float32) / 4294967296.0
  return jnp.sqrt(-2.0 * jnp.log(u1)) * jnp.cos(2.0 * jnp.pi * u2)


def scripted_prm(
  task,
  *,
  c: float = 0.6,
  w: float = -0.8,
  f: float = 0.9,
  blind_first: bool = True,
  noise: str = 'none',
  noise_sigma: float = 0.3,
) -> PRM:
  """The scripted local-plausibility PRM (module docstring) of an arithmetic-chain task.

  Args:
    task: a `jaxca.tasks.arith.Task` (any filler rate).
    c, w, f: scores of a plausible value step, of an implausible / extra /
      malformed / premature step, and of a filler step.
    blind_first: PRM-B (default): the first value step is never checked
      against the prompt; False is PRM-A (only the filler flaw).
    noise: 'none' | 'consistent' | 'fresh' (needs `key` in `score`).
    noise_sigma: sigma of the noise.

  Returns:
    A `PRM` without params (`params=None`).
  """
  if noise not in NOISE:
    raise ValueError(f'Unknown PRM noise {noise!r}; choose from {list(NOISE)}.')

  def score(params, prompts, responses, mask, key=None):
    del params
    steps = task.parse_steps(responses, mask)
    chk = step_checks(task, prompts, responses, mask, steps)
    j = chk.value_index
    ok = chk.local_ok | ((j == 0) if blind_first else False)
    pr = jnp.where(ok, c, w)
    pr = jnp.where(steps.kinds == base.STEP_FILLER, f, pr)
    pr = jnp.where(chk.premature, w, pr)
    if noise == 'consistent':
      pr = jnp.clip(pr + noise_sigma * _hash_normal(prompts, steps), -1.0, 1.0)
    elif noise == 'fresh':
      if key is None:
        raise ValueError("scripted_prm(noise='fresh') needs a PRNG `key` in score().")
      pr = jnp.clip(pr + noise_sigma * jax.random.normal(key, pr.shape), -1.0, 1.0)
    return jnp.where(steps.valid, pr, 0.0).astype(jnp.float32)

  return PRM(score, None)


def provider(prm: PRM) -> Callable:
  """A `jaxca.lm` provider putting the PRM's scores into `Trajectory.step_rewards`.

  Use as `providers={'step_rewards': prm_lib.provider(prm)}`; reads the prompts
  of `ctx.batch`, the responses and mask, and `ctx.key` (fresh noise).
  """

  def provide(ctx):
    scores = prm.score(
      prm.params, ctx.batch['prompts'], ctx.responses, ctx.mask, getattr(ctx, 'key', None)
    )
    return dict(step_rewards=scores)

  return provide
