"""Golden test: every learner path's parameters, optimizer state and metrics, pinned.

Each case runs one experiment's `:smoke` config through the CLI (a few RL iterations) into a
fresh workdir, then reads back every number the run leaves: each record of `metrics.jsonl`
(wall-clock fields aside) and the latest checkpoint of every phase (parameters, optimizer
state, learner state, with their tree keys). The recorded values live in
`tests/golden/<case>.npz`; a refactor must reproduce them.

Runs are bit-reproducible on one CPU model but not across CPU models (XLA picks different
kernels), so the comparison is exact where the recording machine's CPU model matches and
`rtol=RTOL_OTHER_CPU` elsewhere (CI machines). Tree keys, metric names and record counts are
compared exactly everywhere.

Re-record (only for an intended change, in its own commit that says so):
  python -m tests.golden.golden_test --record [case ...]
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from jaxca import bench

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RTOL_OTHER_CPU = 2e-3
ATOL_OTHER_CPU = 1e-5
# Record fields that measure the machine, not the computation.
_CLOCK_WORDS = ('time', 'seconds', 'wall', 'compile', 'load', 'per_s', 'throughput', 'elapsed')

# case -> (experiment module, --config argument, extra flags)
CASES = {
  'arith_grpo': ('arith_rl', 'configs/arith_rl.py:smoke', []),
  'arith_gae_value_head': ('arith_rl', 'configs/arith_rl.py:smoke,estimator=gae', []),
  'arith_min_form': (
    'arith_rl',
    'configs/arith_rl.py:smoke,estimator=min_form',
    ['--config.rl.reward=process'],
  ),
  'arith_objectives_kl': (
    'arith_rl',
    'configs/arith_rl.py:smoke',
    [
      '--config.loss.clip_eps_high=0.28',
      '--config.loss.kl_coef=0.05',
      '--config.loss.kl_ctrl=adaptive',
    ],
  ),
  'arith_dynamic_sampling': (
    'arith_rl',
    'configs/arith_rl.py:smoke',
    [
      '--config.rl.dynamic_sampling=True',
      '--config.rl.steps_per_call=1',
      '--config.rl.reward_shaping.overlong_buffer=2',
      '--config.rl.reward=exact_match',
    ],
  ),
  'pure_credit': ('pure_credit', 'configs/pure_credit.py:smoke', []),
  'mc_credit': ('mc_credit', 'configs/mc_credit.py:smoke', []),
  'tree_credit': ('tree_credit', 'configs/tree_credit.py:smoke', []),
  'token_credit': ('token_credit', 'configs/token_credit.py:smoke', []),
  'policy_objectives': ('policy_objectives', 'configs/policy_objectives.py:smoke', []),
  'gigpo_keydoor': ('gigpo_keydoor', 'configs/gigpo_keydoor.py:smoke', []),
  'tool_credit': ('tool_credit', 'configs/tool_credit.py:smoke', []),
  'ppo_gymnax': ('ppo_gymnax', 'configs/ppo_gymnax.py:smoke', []),
  'llm_rl': ('llm_rl', 'configs/llm_rl.py:smoke', []),
}


def _is_clock(name: str) -> bool:
  leaf = name.rsplit('/', 1)[-1].lower()
  return leaf.endswith('_s') or any(w in leaf for w in _CLOCK_WORDS)


def _flatten(tree, prefix, out):
  if isinstance(tree, dict):
    for k in sorted(tree):
      _flatten(tree[k], f'{prefix}/{k}', out)
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      _flatten(v, f'{prefix}/{i}', out)
  elif tree is None:
    out[prefix] = np.array([])
  else:
    out[prefix] = np.asarray(tree)


def _metrics(path, out):
  with open(path) as f:
    lines = [json.loads(line) for line in f if line.strip()]
  for i, rec in enumerate(lines):
    for k, v in rec.items():
      if _is_clock(k):
        continue
      if isinstance(v, str):
        out[f'metrics/{i:04d}/{k}'] = np.asarray(v)
      elif isinstance(v, (int, float, bool)) or v is None:
        out[f'metrics/{i:04d}/{k}'] = np.asarray(np.nan if v is None else v, np.float64)


def _checkpoints(ckpt_root, workdir, out):
  import orbax.checkpoint as ocp  # noqa: PLC0415  (only the collecting process needs orbax)

  for dirpath, dirnames, _ in os.walk(ckpt_root):
    steps = [d for d in dirnames if d.isdigit()]
    if not steps:
      continue
    dirnames[:] = [d for d in dirnames if not d.isdigit()]
    last = max(steps, key=int)
    item = os.path.join(dirpath, last, 'default')
    if not os.path.isdir(item):
      continue
    tree = ocp.StandardCheckpointer().restore(item)
    name = os.path.relpath(dirpath, workdir)
    _flatten(tree, f'ckpt/{name}@{last}', out)


def collect(workdir: str) -> dict:
  """Every number a finished run left in `workdir`: metrics records and latest checkpoints."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(workdir):
    dirnames.sort()
    if 'metrics.jsonl' in filenames:
      sub = os.path.relpath(dirpath, workdir)
      part = {}
      _metrics(os.path.join(dirpath, 'metrics.jsonl'), part)
      out.update({f'{sub}/{k}': v for k, v in part.items()})
    if os.path.basename(dirpath) == 'checkpoints':
      _checkpoints(dirpath, workdir, out)
      dirnames[:] = []
  return out


def run_case(case: str, workdir: str) -> dict:
  module, config, flags = CASES[case]
  cmd = [
    sys.executable,
    '-m',
    f'experiments.{module}',
    f'--config={config}',
    f'--workdir={workdir}',
  ]
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
    cmd + flags, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
  )
  if proc.returncode != 0:
    raise AssertionError(
      f'{case}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}'
    )
  return collect(workdir)


def golden_path(case: str) -> str:
  return os.path.join(HERE, f'{case}.npz')


def record(case: str):
  with tempfile.TemporaryDirectory() as tmp:
    values = run_case(case, os.path.join(tmp, 'run'))
  np.savez_compressed(golden_path(case), __cpu_model__=np.asarray(bench.cpu_model()), **values)
  print(f'{case}: {len(values)} arrays recorded')


@pytest.mark.parametrize('case', sorted(CASES))
def test_golden(case, tmp_path):
  with np.load(golden_path(case)) as z:
    want = {k: z[k] for k in z.files}
  exact = str(want.pop('__cpu_model__')) == bench.cpu_model()
  want = {k: v for k, v in want.items() if 'metrics/' not in k or not _is_clock(k)}
  got = run_case(case, str(tmp_path / 'run'))
  assert sorted(got) == sorted(want), (
    f'keys differ: missing {sorted(set(want) - set(got))[:10]}, '
    f'new {sorted(set(got) - set(want))[:10]}'
  )
  bad = []
  for k in sorted(want):
    a, b = np.asarray(got[k]), want[k]
    if a.shape != b.shape or a.dtype != b.dtype:
      bad.append(f'{k}: {a.dtype}{a.shape} vs recorded {b.dtype}{b.shape}')
    elif a.dtype.kind in 'USb':
      if not np.array_equal(a, b):
        bad.append(f'{k}: {a} vs recorded {b}')
    elif exact:
      if not np.array_equal(a, b, equal_nan=True):
        bad.append(f'{k}: max abs diff {np.nanmax(np.abs(a.astype(np.float64) - b)):.3g}')
    elif not np.allclose(a, b, rtol=RTOL_OTHER_CPU, atol=ATOL_OTHER_CPU, equal_nan=True):
      bad.append(f'{k}: max abs diff {np.nanmax(np.abs(a.astype(np.float64) - b)):.3g}')
  assert not bad, (
    f'{len(bad)} of {len(want)} arrays differ ({"exact" if exact else "tolerant"}):\n'
    + '\n'.join(bad[:30])
  )


if __name__ == '__main__':
  args = sys.argv[1:]
  if not args or args[0] != '--record':
    sys.exit(__doc__)
  for c in args[1:] or sorted(CASES):
    record(c)
