"""Mesh and sharding helpers for data parallelism with `jax.sharding` (no pmap).

The recipe used by the experiments: one 1-D `Mesh` over every device with a
`'data'` axis; parameters and optimizer state replicated (`replicated`); the
batch axis of every input sharded over `'data'` (`batch_sharding`); then a plain
`jax.jit(..., in_shardings=..., out_shardings=...)`. XLA inserts the all-reduces
for gradients and global statistics, so the sharded program computes the same
numbers as the single-device one (up to float summation order).
`jax.shard_map` is used only where explicit per-shard code and collectives are
wanted (`global_masked_mean`), and is tested against the jit-sharded result.

FSDP for models larger than one device (`make_fsdp_mesh`, `fsdp_shardings`, `shard_params`):
a 2-D mesh `('data', 'fsdp')`; every parameter and optimizer-state leaf is split along its
largest dimension divisible by the `'fsdp'` size (small or indivisible leaves replicated),
as in ZeRO-3 / FSDP (Rajbhandari et al. 2020, arXiv 1910.02054, Sec. 5; Zhao et al. 2023,
arXiv 2304.11277), and the batch is split over both axes (`batch_sharding(mesh,
axis=BATCH_AXES)`). The update is the same `jax.jit` with these in/out shardings: XLA
all-gathers each weight where it is used and reduce-scatters its gradient, so the result
equals the single-device update (tested on 8 fake CPU devices). Orbax saves and restores
such sharded states as they are (`checkpoint.Checkpointer.restore` into an abstract state
carrying the shardings).

Multi-host: call `maybe_initialize_distributed(True)` (the experiments'
`--multihost` flag) before any other JAX call on every host; `jax.devices()`
then lists the devices of all hosts and the same mesh recipe applies. Tested with two
processes on the loopback address (CPU collectives over gloo) against one process over the
same global devices (tests/multihost_test.py).
"""

import os
from typing import Any
from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'
FSDP_AXIS = 'fsdp'
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)  # the batch of an FSDP mesh is split over both axes


def maybe_initialize_distributed(enabled: bool, **kwargs) -> bool:
  """Calls `jax.distributed.initialize(**kwargs)` when `enabled`; returns `enabled`.

  On a managed cluster (SLURM, Open MPI, Kubernetes, Cloud TPU) the coordinator address,
  process count and process id are auto-detected by JAX. Elsewhere run the same command on
  every host with JAX_COORDINATOR_ADDRESS (host:port of process 0, read by JAX itself),
  JAX_NUM_PROCESSES and JAX_PROCESS_ID (0 .. n-1, read here: JAX does not read these two)
  set, or pass them as kwargs, which win. Must run before any other JAX call in the process.
  """
  if enabled:
    for arg, var in (('num_processes', 'JAX_NUM_PROCESSES'), ('process_id', 'JAX_PROCESS_ID')):
      value = os.environ.get(var, '')
      if kwargs.get(arg) is None and value:
        if not value.isdigit():
          raise ValueError(f'{var} must be a non-negative integer; got {value!r}.')
        kwargs[arg] = int(value)
    jax.distributed.initialize(**kwargs)
  return bool(enabled)


def make_mesh(devices: Optional[Any] = None, axis: str = DATA_AXIS) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.array(devices, dtype=object).reshape(-1), (axis,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device (parameters, optimizer state)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0, axis=DATA_AXIS) -> NamedSharding:
  """Shards dimension `batch_axis` over the mesh axis (or tuple of axes); others replicated."""
  return NamedSharding(mesh, P(*([None] * batch_axis), axis))


def shard_batch(tree: Any, mesh: Mesh, batch_axis: int = 0, axis=None) -> Any:
  """`device_put`s every leaf of `tree` with its `batch_axis` sharded over the mesh.

  `axis`: the mesh axis or axes to split over; default every axis of the mesh (`'data'` on
  a 1-D mesh, both axes of an FSDP mesh).

  Host-side helper (numpy in, global jax.Array out). Every leaf's `batch_axis`
  must be divisible by the number of devices in the mesh.
  """
  n = mesh.devices.size
  for leaf in jax.tree.leaves(tree):
    if leaf.shape[batch_axis] % n:
      raise ValueError(
        f'shard_batch: batch dimension {batch_axis} of a leaf with shape {leaf.shape} is not '
        f'divisible by the {n} devices of the mesh.'
      )
  axis = (
    (mesh.axis_names[0] if len(mesh.axis_names) == 1 else mesh.axis_names) if axis is None else axis
  )
  sharding = batch_sharding(mesh, batch_axis, axis)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  # Multi-host: every process holds the same global numpy batch (data is
  # deterministic given (seed, step)); each keeps its addressable shards.
  return jax.tree.map(
    lambda x: jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx]), tree
  )


def replicate(tree: Any, mesh: Mesh) -> Any:
  """`device_put`s every leaf fully replicated over the mesh."""
  return jax.device_put(tree, replicated(mesh))


def tree_shardings(tree: Any, sharding: NamedSharding) -> Any:
  """The same `sharding` for every leaf of `tree` (for in/out_shardings)."""
  return jax.tree.map(lambda _: sharding, tree)


def global_masked_mean(x: jax.Array, mask: jax.Array, mesh: Mesh, axis: str = DATA_AXIS):
  """Masked mean over the GLOBAL batch with an explicit `psum` (shard_map).

  Args:
    x: [B, ...] float32, B sharded over `axis`.
    mask: [B, ...] bool, same shape as `x`.
    mesh: the mesh `x` is sharded on.

  Returns:
    [] float32, equal to `ops.masked_mean(x, mask)` on one device.
  """

  def local(x, mask):
    total = jax.lax.psum(jnp.sum(jnp.where(mask, x, 0.0)), axis)
    count = jax.lax.psum(jnp.sum(mask.astype(jnp.float32)), axis)
    return total / jnp.maximum(count, 1.0)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(axis), P(axis)), out_specs=P())(x, mask)


def make_fsdp_mesh(fsdp: int, devices: Optional[Any] = None) -> Mesh:
  """A 2-D mesh `('data', 'fsdp')` of shape `(n // fsdp, fsdp)` over `devices` (default all).

  Devices along `'fsdp'` are neighbours in `devices` order (on a host: the same host).
  """
  devices = jax.devices() if devices is None else list(devices)
  n = len(devices)
  if fsdp < 1 or n % fsdp:
    raise ValueError(f'`fsdp` ({fsdp}) must be a positive divisor of the {n} devices.')
  return Mesh(np.array(devices, dtype=object).reshape(n // fsdp, fsdp), BATCH_AXES)


def fsdp_spec(shape, num_shards: int, *, axis: str = FSDP_AXIS, min_size: int = 0) -> P:
  """PartitionSpec splitting the largest dimension of `shape` divisible by `num_shards`.

  Leaves with fewer than `min_size` elements, scalars and leaves with no divisible
  dimension are replicated (`P()`); ties go to the earlier dimension.
  """
  shape = tuple(shape)
  if num_shards == 1 or not shape or int(np.prod(shape)) < max(min_size, num_shards):
    return P()
  best = None
  for i, d in enumerate(shape):
    if d % num_shards == 0 and (best is None or d > shape[best]):
      best = i
  if best is None:
    return P()
  return P(*([None] * best), axis)


def fsdp_shardings(tree: Any, mesh: Mesh, *, axis: str = FSDP_AXIS, min_size: int = 0) -> Any:
  """A `NamedSharding` per leaf of `tree` (arrays or ShapeDtypeStructs), FSDP-style."""
  n = mesh.shape[axis]
  return jax.tree.map(
    lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), n, axis=axis, min_size=min_size)), tree
  )


def shard_params(tree: Any, mesh: Mesh, *, axis: str = FSDP_AXIS, min_size: int = 0) -> Any:
  """Host side: `device_put`s `tree` (e.g. host NumPy parameters of a checkpoint) with
  `fsdp_shardings`; no device ever holds a whole leaf."""
  shardings = fsdp_shardings(tree, mesh, axis=axis, min_size=min_size)
  if jax.process_count() == 1:
    return jax.device_put(tree, shardings)
  # Multi-host: every process read the same host arrays; each keeps its addressable shards.
  return jax.tree.map(
    lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda idx: np.asarray(x)[idx]),
    tree,
    shardings,
  )
