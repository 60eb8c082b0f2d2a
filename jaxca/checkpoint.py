"""Orbax `CheckpointManager` wrapper (host-side).

Precedence when a run starts (maxtext-style), implemented by the experiments
with these helpers:
  1. resume the latest checkpoint in the run's own checkpoint directory;
  2. else `config.init_from` (parameters only, `load_params`);
  3. else initialise.

Checkpointed states hold arrays only: no PRNG keys (keys are
`fold_in(base_key, step)`) and no Python objects. Restores go into an
*abstract* state (`jax.eval_shape(init_fn)` with shardings), so arrays land
directly on the mesh.

Saves are asynchronous: `save` returns once the arrays have been copied off the
device, so the caller may donate or delete them right after (tested), and
writes finish in the background. Checkpoints are committed atomically (orbax
writes to a temporary directory and renames it), so a crash or a non-finite
loss never leaves a half-written "latest" checkpoint, and a state with a NaN or
an infinity is never saved (`maybe_save` raises FloatingPointError), so the
latest checkpoint is always one a resume can continue from. Call `close()` (or
`wait()`) before the process exits.
"""

import os
from typing import Any
from typing import Callable
from typing import Optional
from typing import Tuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from jaxca import runs


def _abstract(tree: Any, sharding=None) -> Any:
  def leaf(x):
    s = sharding if sharding is not None else getattr(x, 'sharding', None)
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)

  return jax.tree.map(leaf, tree)


class Checkpointer:
  """Saves every `every` steps into `directory`, keeping the `max_to_keep` latest."""

  def __init__(
    self, directory: str, *, every: int = 1, max_to_keep: int = 2, async_save: bool = True
  ):
    if every < 1:
      raise ValueError(f'Checkpointer: `every` must be >= 1, got {every}.')
    self.directory = os.path.abspath(directory)
    self.every = int(every)
    self._mngr = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        save_interval_steps=1,  # the interval is applied in `maybe_save`.
        max_to_keep=max_to_keep,
        create=True,
        enable_async_checkpointing=async_save,
      ),
    )

  def latest_step(self) -> Optional[int]:
    return self._mngr.latest_step()

  def all_steps(self):
    return list(self._mngr.all_steps())

  def restore(self, target: Any, step: Optional[int] = None, *, sharding=None) -> Any:
    """Restores `step` (default: latest) into the structure/shardings of `target`.

    Args:
      target: a pytree of arrays or `jax.ShapeDtypeStruct`s (e.g. from
        `jax.eval_shape(init_fn)`); leaves without a sharding use `sharding`.
      step: which checkpoint; None means the latest.
      sharding: default sharding for leaves of `target` that have none.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'No checkpoint in {self.directory}.')
    return self._mngr.restore(step, args=ocp.args.StandardRestore(_abstract(target, sharding)))

  def restore_latest(self, target: Any, *, sharding=None) -> Tuple[Any, Optional[int]]:
    """(state, step) from the newest checkpoint that can be read; (None, None) when none exists.

    A step that cannot be read (a truncated or missing file) is named in a note, moved aside
    to `<directory>_unreadable/<step>` (kept, out of the manager's sight, so it is not the
    latest again) and the next older step is tried. Raises ConfigError (one line) when
    every step is unreadable, or when a checkpoint's arrays have other shapes than
    `target` (the config changed what the run builds: it cannot resume from it).
    """
    abstract = _abstract(target, sharding)
    unreadable = []
    for step in sorted(self.all_steps(), reverse=True):
      try:
        saved = self._saved_tree(step)
      except Exception as e:  # noqa: BLE001 -- any failure to read it makes the step unreadable
        unreadable.append((step, e))
        continue
      if saved is not None:
        _check_shapes(self.directory, step, saved, abstract)
      try:
        state = self._mngr.restore(step, args=ocp.args.StandardRestore(abstract))
      except Exception as e:  # noqa: BLE001 -- as above
        unreadable.append((step, e))
        continue
      if unreadable:
        moved = self._move_aside([s for s, _ in unreadable])
        runs.note(
          f'checkpoint step(s) {_steps(unreadable)} in {self.directory} cannot be read '
          f'({_reason(unreadable[0][1])}); moved to {moved}; resuming from step {step}, '
          'the newest intact one.'
        )
      return state, step
    if unreadable:
      raise runs.ConfigError(
        f'no checkpoint in {self.directory} can be read: step(s) {_steps(unreadable)} '
        f'({_reason(unreadable[0][1])}). Move {self.directory} away to start that phase '
        'afresh, or pass a new --workdir.'
      )
    return None, None

  def _saved_tree(self, step: int):
    """The metadata tree (shapes, dtypes) of checkpoint `step`, read without restoring it."""
    from etils import epath  # pylint: disable=g-import-not-at-top -- orbax's path type

    path = epath.Path(self.directory) / str(step) / 'default'  # the manager's single item
    meta = ocp.StandardCheckpointHandler().metadata(path)
    return getattr(meta, 'tree', meta)

  def _move_aside(self, steps) -> str:
    dest = self.directory + '_unreadable'
    os.makedirs(dest, exist_ok=True)
    for step in steps:
      src, to = os.path.join(self.directory, str(step)), os.path.join(dest, str(step))
      n = 1
      while os.path.exists(to):
        to, n = os.path.join(dest, f'{step}.{n}'), n + 1
      os.rename(src, to)
    self._mngr.reload()
    return dest

  def restore_or_init(
    self, init_fn: Callable[[], Any], *, sharding=None
  ) -> Tuple[Any, Optional[int]]:
    """(latest checkpoint, its step) if there is one, else (init_fn(), None).

    `init_fn` is only traced (`jax.eval_shape`) when a checkpoint exists.
    """
    step = self.latest_step()
    if step is None:
      return init_fn(), None
    return self.restore(jax.eval_shape(init_fn), step, sharding=sharding), step

  def maybe_save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Saves `state` as `step` if `step % every == 0` (or `force`); returns whether it did."""
    step = int(step)
    if not force and step % self.every:
      return False
    if step in self._mngr.all_steps():
      return False
    if not all_finite(state):
      self.wait()
      raise FloatingPointError(
        f'Non-finite parameters or state at step {step}; not saved. The last good checkpoint '
        f'is step {self.latest_step()} in {self.directory}; {runs.NAN_ADVICE}.'
      )
    return bool(self._mngr.save(step, args=ocp.args.StandardSave(state), force=True))

  def wait(self):
    """Blocks until pending asynchronous saves are written."""
    self._mngr.wait_until_finished()

  def close(self):
    self._mngr.wait_until_finished()
    self._mngr.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def _steps(unreadable) -> str:
  return ', '.join(str(s) for s, _ in unreadable)


def _reason(error: BaseException) -> str:
  lines = str(error).strip().splitlines() or ['']
  return f'{type(error).__name__}: {lines[0][:160]}'


def _path(path) -> str:
  """A tree path as 'a.b.0.c', the same for a namedtuple field and the dict orbax saves it as."""
  names = (getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k))) for k in path)
  return '.'.join(str(n) for n in names)


def _check_shapes(directory, step, saved, abstract):
  """Raises ConfigError when checkpoint `step` holds other arrays or shapes than `abstract`."""
  old = {
    _path(p): getattr(x, 'shape', None) for p, x in jax.tree_util.tree_flatten_with_path(saved)[0]
  }
  new = {_path(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(abstract)[0]}
  fix = (
    'a key that changes the model or state cannot change on resume; pass a new --workdir '
    '(config.init_from starts from another run where the experiment supports it).'
  )
  where = f'checkpoint step {step} in {directory}'
  order = lambda p: (not p.startswith('params'), p)  # noqa: E731 -- parameters first
  missing, extra = sorted(set(new) - set(old), key=order), sorted(set(old) - set(new), key=order)
  if missing or extra:
    what = []
    if missing:
      what.append(f'this config builds {", ".join(missing[:3])} that it lacks')
    if extra:
      what.append(f'it holds {", ".join(extra[:3])} that this config does not build')
    raise runs.ConfigError(f'{where} does not match this config ({"; ".join(what)}): {fix}')
  for path, shape in sorted(new.items(), key=lambda item: order(item[0])):
    if old[path] is not None and tuple(old[path]) != tuple(shape):
      raise runs.ConfigError(
        f'{where} holds {path} of shape {tuple(old[path])}, this config builds '
        f'{tuple(shape)}: {fix}'
      )


@jax.jit
def _all_finite(leaves):
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def all_finite(tree: Any) -> bool:
  """True iff every floating-point leaf of `tree` is finite (one jitted reduction)."""
  leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return not leaves or bool(_all_finite(leaves))


def load_params(directory: str, step: Optional[int] = None, key: str = 'params') -> Any:
  """Loads `state[key]` from a checkpoint directory written by `Checkpointer`.

  Used for `config.init_from` (parameters only). The directory may be the
  checkpoint directory itself; the restored leaves are host-local arrays that
  the caller places (e.g. `parallel.replicate`).
  """
  if not os.path.isdir(directory):  # CheckpointManager would create it
    raise FileNotFoundError(f'init_from: {directory!r} is not a directory.')
  with ocp.CheckpointManager(
    os.path.abspath(directory), item_handlers=ocp.PyTreeCheckpointHandler()
  ) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'init_from: no checkpoint in {directory!r}.')
    meta = mngr.item_metadata(step)
    tree = getattr(meta, 'tree', meta)
    if key not in tree:
      raise KeyError(f'init_from: checkpoint {directory!r} has no {key!r}; has {list(tree)}.')
    abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=_default_sharding()),
      tree[key],
    )
    full = mngr.restore(
      step,
      args=ocp.args.PyTreeRestore(
        item={key: abstract},
        restore_args=ocp.checkpoint_utils.construct_restore_args({key: abstract}),
        partial_restore=True,
      ),
    )
  return full[key]


def _default_sharding():
  return jax.sharding.SingleDeviceSharding(jax.devices()[0])
