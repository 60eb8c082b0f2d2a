"""experiments/bench_llm_peer.py: the per-round ratios, the one-line error without tunix, and
(where tunix is installed: `pip install -e ".[peer]"`) the smoke run, whose logits check must
pass and catch a different model. No timing asserts."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import bench_llm_peer as config_module
from experiments import bench_llm_peer
from jaxca import bench

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _has_tunix():
  try:
    bench_llm_peer.import_tunix()
  except bench_llm_peer.ConfigError:
    return False
  return True


def test_pair_ratios_are_per_round():
  timings = {
    'a': bench.Timing((1.0, 2.0, 4.0), 9.0),
    'b': bench.Timing((3.0, 2.0, 2.0), 9.0),
  }
  r = bench_llm_peer.pair_ratios(timings, 'a', 'b')
  assert r['timed'] == [3.0, 1.0, 0.5]
  assert (r['min'], r['median'], r['max']) == (0.5, 1.0, 3.0)


def test_without_tunix_the_error_is_one_line(monkeypatch):
  for name in ['tunix'] + [m for m in sys.modules if m.startswith('tunix.')]:
    monkeypatch.setitem(sys.modules, name, None)  # an import of it fails
  with pytest.raises(bench_llm_peer.ConfigError, match=r'pip install -e "\.\[peer\]"'):
    bench_llm_peer.import_tunix()


@pytest.mark.skipif(_has_tunix(), reason='tunix is installed: the CLI runs instead of exiting 2')
def test_cli_exits_2_without_tunix(tmp_path):
  proc = subprocess.run(
    [sys.executable, '-m', 'experiments.bench_llm_peer', '--config',
     'configs/bench_llm_peer.py:smoke', '--workdir', str(tmp_path / 'w')],
    cwd=ROOT, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert '.[peer]' in proc.stderr.strip().splitlines()[-1]
  assert 'Traceback' not in proc.stderr


@pytest.mark.slow
@pytest.mark.skipif(
  not _has_tunix(), reason='tunix is not installed (optional extra: pip install -e ".[peer]")'
)
def test_smoke_with_tunix(tmp_path):
  prev = jax.config.values['jax_disable_most_optimizations']
  jax.config.update('jax_disable_most_optimizations', True)
  # tunix's model relies on NumPy rank promotion (its RMSNorm), which tests/conftest.py raises on.
  with jax.numpy_rank_promotion('allow'):
    _smoke(tmp_path, prev)


def _smoke(tmp_path, prev):
  try:
    config = config_module.get_config('smoke')
    result = bench_llm_peer.run(config, str(tmp_path))
    # The check catches a different model: jaxca's weights scaled by 1.01.
    t = bench_llm_peer.import_tunix()
    policy, params, model = bench_llm_peer.load_both(t, config, str(tmp_path / 'ckpt'))
    tokens = jax.random.randint(jax.random.key(0), (2, 6), 2, config.model.vocab_size)
    same = bench_llm_peer.logits_check(policy, params, model, tokens)
    other = bench_llm_peer.logits_check(
      policy, jax.tree.map(lambda x: x * 1.01, params), model, tokens
    )
  finally:
    jax.config.update('jax_disable_most_optimizations', prev)
  assert same['relative'] <= config.logits_rtol < other['relative']
  assert result['logits_check']['relative'] <= config.logits_rtol
  assert result['greedy_agreement'] == 1.0  # float32, same weights: the same argmax tokens
  assert set(result['rows']) == set(bench_llm_peer.PAIRS)
  for row in result['rows'].values():
    r = row['ratio_tunix_over_jaxca_time']
    assert len(r['timed']) == config.reps and 0 < r['min'] <= r['median'] <= r['max']
    assert row['jaxca']['tokens_per_s'] > 0 and row['tunix']['tokens_per_s'] > 0
  assert np.isfinite(result['load_1min_before_after']).all()
  assert json.load(open(tmp_path / 'results.json'))['rows']
  assert 'tunix time / jaxca time' in open(tmp_path / 'results.md').read()
