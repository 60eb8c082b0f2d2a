"""Mesh and sharding helpers for data parallelism with `jax.sharding` (no pmap).

The recipe used by the experiments: one 1-D `Mesh` over every device with a
`'data'` axis; parameters and optimizer state replicated (`replicated`); the
batch axis of every input sharded over `'data'` (`batch_sharding`); then a plain
`jax.jit(..., in_shardings=..., out_shardings=...)`. XLA inserts the all-reduces
for gradients and global statistics, so the sharded program computes the same
numbers as the single-device one (up to float summation order).
`jax.shard_map` is used only where explicit per-shard code and collectives are
wanted (`global_masked_mean`), and is tested against the jit-sharded result.

Multi-host: call `maybe_initialize_distributed(True)` (the experiments'
`--multihost` flag) before any other JAX call on every host; `jax.devices()`
then lists the devices of all hosts and the same mesh recipe applies.
"""

from typing import Any
from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

DATA_AXIS = 'data'


def maybe_initialize_distributed(enabled: bool, **kwargs) -> bool:
  """Calls `jax.distributed.initialize(**kwargs)` when `enabled`; returns `enabled`.

  On a managed cluster (SLURM, Cloud TPU, ...) the coordinator address, process
  count and process id are auto-detected; elsewhere pass them as kwargs or set
  the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID variables.
  Must run before any other JAX call in the process.
  """
  if enabled:
    jax.distributed.initialize(**kwargs)
  return bool(enabled)


def make_mesh(devices: Optional[Any] = None, axis: str = DATA_AXIS) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.array(devices, dtype=object).reshape(-1), (axis,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that keeps a full copy on every device (parameters, optimizer state)."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axis: int = 0, axis: str = DATA_AXIS) -> NamedSharding:
  """Shards dimension `batch_axis` over the mesh axis; other dimensions replicated."""
  return NamedSharding(mesh, P(*([None] * batch_axis), axis))


def shard_batch(tree: Any, mesh: Mesh, batch_axis: int = 0) -> Any:
  """`device_put`s every leaf of `tree` with its `batch_axis` sharded over `'data'`.

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
  sharding = batch_sharding(mesh, batch_axis)
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
