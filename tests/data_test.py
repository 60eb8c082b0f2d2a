"""Tests for jaxca.data: the ArithChains tfds builder (no TensorFlow) and deterministic batching."""

import itertools
import sys

import numpy as np
import pytest

from jaxca import data
from jaxca.tasks import arith
from tests.reference import arith as ref

CFG = arith.ArithConfig(num_steps=2, modulus=10)
SIZES = dict(num_train=120, num_test=40)


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp('tfds')
  sources = data.load(CFG, str(root / 'a'), **SIZES)
  return root, sources


def test_build_load_layout_and_values(built):
  _, sources = built
  assert set(sources) == {'train', 'test'}
  assert len(sources['train']) == 120 and len(sources['test']) == 40
  task = arith.make_task(CFG)
  ids = ref.ids_of(task.vocab)
  for split, src in sources.items():
    arrays = data.to_arrays(src)
    assert {k: (v.shape, v.dtype) for k, v in arrays.items()} == {
      'prompts': ((len(src), 7), np.int32),
      'targets': ((len(src), 4), np.int32),
      'answers': ((len(src),), np.int32),
      'intermediates': ((len(src), 2), np.int32),
    }
    for row in range(len(src)):
      x0, ops, operands = ref.parse_prompt(arrays['prompts'][row], ids)
      values = ref.chain(x0, ops, operands, CFG.modulus)
      assert arrays['intermediates'][row].tolist() == values
      assert arrays['answers'][row] == values[-1]
      assert ref.exact(arrays['targets'][row], [True] * 4, arrays['targets'][row], ids) == 1.0
      assert ref.outcome(arrays['targets'][row], [True] * 4, values[-1], 2, ids) == 1.0
  # Random access equals the stacked view.
  rec = sources['train'][5]
  np.testing.assert_array_equal(rec['prompts'], data.to_arrays(sources['train'])['prompts'][5])


def test_no_tensorflow_imported(built):
  del built  # the fixture has built and read a dataset in this process
  assert 'tensorflow' not in sys.modules
  with pytest.raises(ImportError):
    import tensorflow  # noqa: F401  (this environment has no TensorFlow; the code must not need it)


def test_tfds_data_source_by_name_reads_array_record(built):
  root, sources = built
  name = 'arith_chains/' + data.ArithChainsConfig.from_arith(CFG, **SIZES).name
  by_name = data.tfds.data_source(name, data_dir=str(root / 'a'), download=False)
  for split in ('train', 'test'):
    _assert_batches_equal([data.to_arrays(by_name[split])], [data.to_arrays(sources[split])])
  # Builders default to array_record (tfds's tfrecord default would need TensorFlow).
  builder = data.make_builder(CFG, str(root / 'unused'), **SIZES)
  assert builder.info.file_format == data.tfds.core.FileFormat.ARRAY_RECORD
  assert not builder.is_prepared()


def test_splits_are_disjoint_by_problem(built):
  _, sources = built
  train = {tuple(p) for p in data.to_arrays(sources['train'])['prompts'].tolist()}
  test = {tuple(p) for p in data.to_arrays(sources['test'])['prompts'].tolist()}
  assert train and test and not train & test
  assert not arith.split_of(np.asarray(sorted(train)), 0.1).any()
  assert arith.split_of(np.asarray(sorted(test)), 0.1).all()


def test_validation_split_is_disjoint_and_leaves_test_and_old_names_unchanged(built, tmp_path):
  root, sources = built
  with_val = data.load(CFG, str(tmp_path), **SIZES, validation_fraction=0.05, num_validation=30)
  assert set(with_val) == {'train', 'validation', 'test'} and len(with_val['validation']) == 30
  rows = {s: {tuple(p) for p in data.to_arrays(with_val[s])['prompts'].tolist()} for s in with_val}
  assert len(rows['validation']) == 30  # distinct
  assert not rows['train'] & rows['validation'] and not rows['test'] & rows['validation']
  assert not rows['train'] & rows['test']
  names = arith.split_names(np.asarray(sorted(rows['validation'])), 0.1, 0.05)
  assert (names == 'validation').all()
  _assert_batches_equal([data.to_arrays(with_val['test'])], [data.to_arrays(sources['test'])])
  plain = data.ArithChainsConfig.from_arith(CFG, **SIZES).name
  assert plain == 'k2_m10_add-sub-mul_train120_test40_tf100_seed0'
  named = data.ArithChainsConfig.from_arith(
    CFG, **SIZES, validation_fraction=0.05, num_validation=30
  ).name
  assert named == plain + '_va50_nva30'
  with pytest.raises(ValueError, match='^`num_validation` must be an int >= 1'):
    data.ArithChainsConfig.from_arith(CFG, **SIZES, validation_fraction=0.05)


def test_test_split_is_distinct(built):
  _, sources = built
  prompts = data.to_arrays(sources['test'])['prompts']
  assert len(np.unique(prompts, axis=0)) == len(prompts)  # 40 of the ~940 test problems


def test_same_seed_same_data_other_seed_differs(built, tmp_path):
  root, sources = built
  again = data.load(CFG, str(tmp_path / 'b'), **SIZES)
  other = data.load(CFG, str(tmp_path / 'c'), **SIZES, seed=1)
  for split in ('train', 'test'):
    a, b = data.to_arrays(sources[split]), data.to_arrays(again[split])
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a['prompts'], data.to_arrays(other[split])['prompts'])
  # Loading again from the prepared directory does not regenerate (same files, same data).
  builder = data.build(CFG, str(root / 'a'), **SIZES)
  assert builder.is_prepared()
  np.testing.assert_array_equal(
    data.to_arrays(builder.as_data_source()['test'])['prompts'],
    data.to_arrays(sources['test'])['prompts'],
  )


def test_config_names_encode_every_knob():
  base = data.ArithChainsConfig.from_arith(CFG, **SIZES)
  assert base.name == 'k2_m10_add-sub-mul_train120_test40_tf100_seed0'
  assert base.task_config == CFG
  variants = [
    data.ArithChainsConfig.from_arith(arith.ArithConfig(num_steps=3), **SIZES),
    data.ArithChainsConfig.from_arith(arith.ArithConfig(modulus=11), **SIZES),
    data.ArithChainsConfig.from_arith(arith.ArithConfig(ops=('add',)), **SIZES),
    data.ArithChainsConfig.from_arith(arith.ArithConfig(operand_range=(1, 3)), **SIZES),
    data.ArithChainsConfig.from_arith(CFG, num_train=121, num_test=40),
    data.ArithChainsConfig.from_arith(CFG, **SIZES, seed=2),
    data.ArithChainsConfig.from_arith(CFG, **SIZES, test_fraction=0.2),
  ]
  names = {base.name} | {v.name for v in variants}
  assert len(names) == 1 + len(variants)
  with pytest.raises(ValueError, match='num_train'):
    data.ArithChainsConfig.from_arith(CFG, num_train=0, num_test=4)
  with pytest.raises(ValueError, match='test_fraction'):
    data.ArithChainsConfig.from_arith(CFG, **SIZES, test_fraction=1.5)


def _take(it, n):
  return list(itertools.islice(it, n))


def _assert_batches_equal(xs, ys):
  assert len(xs) == len(ys)
  for x, y in zip(xs, ys):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])


def test_batch_iterator_deterministic_and_resumable(built):
  _, sources = built
  src = sources['train']  # 120 examples, batch 32 -> 3 steps per epoch (24 dropped)
  fresh = _take(data.batch_iterator(src, 32, seed=3), 8)
  _assert_batches_equal(fresh, _take(data.batch_iterator(src, 32, seed=3), 8))
  for k in (1, 3, 5):  # resume mid-epoch and on an epoch boundary
    _assert_batches_equal(
      fresh[k:], _take(data.batch_iterator(src, 32, seed=3, start_step=k), 8 - k)
    )
  # In-memory arrays and the tfds source give the same batches.
  arrays = data.to_arrays(src)
  _assert_batches_equal(fresh, _take(data.batch_iterator(arrays, 32, seed=3), 8))
  # num_steps bounds the stream.
  assert len(list(data.batch_iterator(arrays, 32, seed=3, start_step=2, num_steps=4))) == 4
  # A different seed gives different batches.
  other = next(data.batch_iterator(src, 32, seed=4))
  assert not np.array_equal(other['prompts'], fresh[0]['prompts'])


def test_batch_indices_are_epoch_permutations():
  n, bs = 50, 16
  for epoch in range(3):
    idx = np.concatenate([data.batch_indices(n, bs, epoch * 3 + i, seed=0) for i in range(3)])
    assert len(np.unique(idx)) == 48 and idx.min() >= 0 and idx.max() < n
  e0 = data.batch_indices(n, bs, 0, seed=0)
  e1 = data.batch_indices(n, bs, 3, seed=0)
  assert not np.array_equal(e0, e1)  # reshuffled each epoch
  np.testing.assert_array_equal(
    data.batch_indices(n, bs, 4, seed=0, shuffle=False), np.arange(16, 32)
  )
  with pytest.raises(ValueError, match='batch_size'):
    data.batch_indices(n, 51, 0, seed=0)
  with pytest.raises(ValueError, match='step'):
    data.batch_indices(n, 5, -1, seed=0)


def test_get_batch_sources_agree(built):
  _, sources = built
  src = sources['test']
  idx = np.array([3, 0, 3, 39])
  from_source = data.get_batch(src, idx)
  from_list = data.get_batch([src[i] for i in range(len(src))], idx)
  from_arrays = data.get_batch(data.to_arrays(src), idx)
  _assert_batches_equal([from_source, from_source], [from_list, from_arrays])
  np.testing.assert_array_equal(from_source['prompts'][0], from_source['prompts'][2])


def test_building_prints_one_line_and_no_download_message(tmp_path, capsys):
  data.build(arith.ArithConfig(num_steps=1), tmp_path, num_train=16, num_test=4)
  out = capsys.readouterr()
  text = out.out + out.err
  assert 'Downloading' not in text and 'downloaded and prepared' not in text, text
  assert text.count('\n') == 1 and 'building the arith_chains dataset (16 train / 4 test)' in text
  data.build(arith.ArithConfig(num_steps=1), tmp_path, num_train=16, num_test=4)
  assert capsys.readouterr().out == ''  # already prepared: silent
