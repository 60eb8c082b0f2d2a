"""The multi-host path, run for real: two processes on 127.0.0.1 joined by `jax.distributed`
(JAX's multi-controller runtime, CPU collectives over gloo), each with 2 forced host devices,
run the flagship's (experiments/arith_rl.py) warm start + data-parallel RL and the `llm_rl`
smoke's FSDP RL step over the 4 global devices; the final parameters equal a single process
over 4 devices running the same programs.

Each run is a fresh interpreter (XLA_FLAGS and `jax.distributed.initialize` must come before
any other JAX call), spawned here; the parameters come back as .npz files written by process 0
after a `process_allgather` (the FSDP state is not fully addressable on either process).
"""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = 4  # global devices in every run

_WORKER = textwrap.dedent(
  """
  import sys
  num_processes, out = int(sys.argv[1]), sys.argv[2]
  import jax
  from jaxca import parallel
  if num_processes > 1:  # what `--multihost` does, with the JAX_* variables set by the launcher
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    parallel.maybe_initialize_distributed(True)
  jax.config.update('jax_threefry_partitionable', True)
  import numpy as np
  from jax.experimental import multihost_utils
  from configs import arith_rl as arith_cfg
  from configs import llm_rl as llm_cfg
  from experiments import arith_rl, llm_rl

  assert jax.process_count() == num_processes and jax.device_count() == %(devices)d, jax.devices()

  def flat(tree):
    # Every leaf as a host array on every process (all-gathers the FSDP shards).
    leaves = jax.tree.leaves(tree)
    if num_processes > 1:
      leaves = [multihost_utils.process_allgather(x, tiled=True) for x in leaves]
    return {str(i): np.asarray(x) for i, x in enumerate(leaves)}

  c = arith_cfg.get_config('smoke')
  c.warmstart.update(steps=2, eval_every=2)
  c.rl.update(steps=2)
  c.eval.update(every=2)
  c.train.update(ckpt_every=2)
  arith = arith_rl.train(c, None)
  c = llm_cfg.get_config('smoke')
  c.rl.update(steps=1, prompts_per_step=4)
  c.mesh.update(fsdp=0)  # every device on the 'fsdp' axis: the weights are split across hosts
  llm = llm_rl.train(c, None)
  emb = llm['params']['embed']['embedding']
  assert 'fsdp' in emb.sharding.spec, emb.sharding
  assert emb.is_fully_addressable == (num_processes == 1)
  results = dict(arith=flat(arith['params']), llm=flat(llm['params']))
  if jax.process_index() == 0:
    for name, leaves in results.items():
      np.savez(f'{out}_{name}.npz', **leaves)
  print('OK', jax.process_index())
  """
  % dict(devices=DEVICES)
)


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _launch(num_processes, out):
  env = dict(os.environ)
  env.update(
    XLA_FLAGS=f'--xla_force_host_platform_device_count={DEVICES // num_processes}',
    JAX_PLATFORMS='cpu',
    JAX_DISABLE_MOST_OPTIMIZATIONS='1',  # compile time dominates; both sides use it
    PYTHONPATH=ROOT + os.pathsep + env.get('PYTHONPATH', ''),
  )
  # The same command on every process; only JAX_PROCESS_ID differs (README: more than one host).
  env.update(
    JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{_free_port()}', JAX_NUM_PROCESSES=str(num_processes)
  )
  return [
    subprocess.Popen(
      [sys.executable, '-c', _WORKER, str(num_processes), out],
      cwd=ROOT,
      env=dict(env, JAX_PROCESS_ID=str(i)),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(num_processes)
  ]


def _wait(procs, timeout):
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=timeout))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (stdout, stderr) in zip(procs, outs):
    assert p.returncode == 0, stdout[-3000:] + stderr[-6000:]
    assert 'OK' in stdout


@pytest.mark.slow
def test_two_processes_equal_one_process_over_the_same_devices(tmp_path):
  # Both runs at once: the two-process pair and the single process share the CPU.
  two, one = str(tmp_path / 'two'), str(tmp_path / 'one')
  pair, single = _launch(2, two), _launch(1, one)
  _wait(pair + single, timeout=900)
  for name in ('arith', 'llm'):
    a, b = np.load(f'{two}_{name}.npz'), np.load(f'{one}_{name}.npz')
    assert sorted(a.files) == sorted(b.files) and a.files
    for k in a.files:
      # Same programs and partitioning; gloo's all-reduce may sum in another order, and Adam
      # turns a last-bit gradient difference on a near-zero gradient into ~lr * 1e-3 (the
      # tolerance of the FSDP-vs-single-device test, tests/fsdp_test.py).
      np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=2e-5, err_msg=f'{name} leaf {k}')
