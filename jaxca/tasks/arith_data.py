"""The arithmetic-chain dataset as a tensorflow-datasets builder, used WITHOUT TensorFlow.

The only module of jaxca that imports `tensorflow_datasets` (host side). TensorFlow
itself is never imported: the data are written with `download_and_prepare(
file_format='array_record')` and read back with `builder.as_data_source()`
(random access, NumPy records). `as_dataset()` and the tfrecord format would need
TensorFlow and are not used.

`ArithChains` holds the arithmetic chains of `jaxca.tasks.arith`:
  * one BuilderConfig per knob setting (`ArithChainsConfig.from_arith`), named
    from all of them (e.g. 'k2_m10_add-sub-mul_train20000_test1000_tf100_seed0'),
    so different knobs or sizes never share files in `data_dir`;
  * features prompts [2K+3], targets [2K], answers [], intermediates [K]: int32
    `tfds.features.Tensor`s (the layout of `Task.generate`);
  * generated locally (no download) from `np.random.default_rng([seed, split])`;
  * the test split is disjoint from the train split BY PROBLEM: a problem (its
    prompt: x0, ops, operands) is a test problem iff a fixed 64-bit hash of its
    prompt falls in the first `round(1000*test_fraction)` of 1000 buckets
    (`tasks.arith.split_of`); each split draws only its own problems (rejection
    sampling). Train problems are drawn i.i.d. (they repeat: K=2, m=10 with 3
    ops has only 9000 problems, ~8100 of them train); test problems are drawn
    without replacement (`distinct=True`) while the test share lasts (~940 for
    K=2, m=10), then repeat in fresh random orders.
  * an optional validation split (`validation_fraction` > 0, `num_validation`
    problems, drawn distinct like test): its problems are carved out of the train
    side by the same hash (`tasks.arith.split_names`), and then train draws none of
    them; the test problems are unchanged. Configs with a validation split are
    named with a `_va<buckets>_nva<num_validation>` suffix, so they never share
    files with the two-split datasets.

Batching helpers (`get_batch`, `batch_iterator`) are task-independent: `jaxca.data`.
"""

from collections.abc import Mapping
from collections.abc import Sequence
import dataclasses
import os
import tempfile
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from jaxca.tasks import arith

_SPLIT_SEED = {'train': 0, 'test': 1, 'validation': 2}
_FEATURE_KEYS = ('prompts', 'targets', 'answers', 'intermediates')


@dataclasses.dataclass(eq=False)
class ArithChainsConfig(tfds.core.BuilderConfig):
  """BuilderConfig of `ArithChains`: the ArithConfig knobs plus sizes, split share and seed."""

  num_steps: int = 2
  modulus: int = 10
  ops: tuple[str, ...] = arith.OPS
  operand_range: tuple[int, int] | None = None
  invertible: bool = False
  num_train: int = 20_000
  num_test: int = 1_000
  test_fraction: float = 0.1
  seed: int = 0
  validation_fraction: float = 0.0
  num_validation: int = 0

  @classmethod
  def from_arith(
    cls,
    cfg: arith.ArithConfig,
    *,
    num_train: int,
    num_test: int,
    test_fraction: float = 0.1,
    seed: int = 0,
    name: str | None = None,
    validation_fraction: float = 0.0,
    num_validation: int = 0,
  ) -> 'ArithChainsConfig':
    """A config for `cfg`, named from every knob unless `name` is given."""
    for arg, val in (('num_train', num_train), ('num_test', num_test)):
      if not isinstance(val, (int, np.integer)) or val < 1:
        raise ValueError(f'`{arg}` must be an int >= 1; got {val!r}.')
    # validates test_fraction and validation_fraction
    arith.split_names(np.zeros((0, 1), np.int32), test_fraction, validation_fraction)
    has_val = validation_fraction > 0
    if has_val != (isinstance(num_validation, (int, np.integer)) and num_validation >= 1):
      raise ValueError(
        '`num_validation` must be an int >= 1 when validation_fraction > 0, else 0; got '
        f'{num_validation!r} with validation_fraction={validation_fraction}.'
      )
    buckets = max(1, round(arith.NUM_BUCKETS * test_fraction))
    if name is None:
      name = f'{cfg.name}_train{num_train}_test{num_test}_tf{buckets}_seed{seed}'
      if has_val:
        name += f'_va{max(1, round(arith.NUM_BUCKETS * validation_fraction))}_nva{num_validation}'
    return cls(
      name=name,
      description=f'Arithmetic chains {cfg}; {num_train} train / {num_test} test, seed {seed}.',
      num_steps=cfg.num_steps,
      modulus=cfg.modulus,
      ops=tuple(cfg.ops),
      operand_range=cfg.operand_range,
      invertible=cfg.invertible,
      num_train=int(num_train),
      num_test=int(num_test),
      test_fraction=float(test_fraction),
      seed=int(seed),
      validation_fraction=float(validation_fraction),
      num_validation=int(num_validation),
    )

  @property
  def task_config(self) -> arith.ArithConfig:
    """The ArithConfig these examples were drawn from."""
    return arith.ArithConfig(
      num_steps=self.num_steps,
      modulus=self.modulus,
      ops=self.ops,
      operand_range=self.operand_range,
      invertible=self.invertible,
    )


class ArithChains(tfds.core.GeneratorBasedBuilder):
  """Multi-step modular-arithmetic chains (generated locally; see the module docstring)."""

  VERSION = tfds.core.Version('1.1.0')
  RELEASE_NOTES = {
    '1.0.0': 'Initial release.',
    '1.1.0': 'Test problems are distinct while the test share of the problem space lasts.',
  }
  # tfds looks for a checksums file next to the builder's source (`code_path`); for a
  # builder inside a package that lookup imports `importlib_resources`, which tfds
  # 4.9.10 declares only for Python < 3.9 (it is missing here). Nothing is downloaded,
  # so there are no checksums: no code path.
  code_path = None

  # tfds prints "Downloading and preparing dataset Unknown size ..." and "downloaded and
  # prepared" for every builder; nothing is downloaded here, so `build` prints one line.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass

  BUILDER_CONFIGS = [
    ArithChainsConfig.from_arith(
      arith.ArithConfig(num_steps=2), num_train=20_000, num_test=1_000, name='k2_m10'
    ),
    ArithChainsConfig.from_arith(
      arith.ArithConfig(num_steps=3), num_train=20_000, num_test=1_000, name='k3_m10'
    ),
  ]

  def __init__(self, *, file_format=None, **kwargs):
    # tfds's default file format is tfrecord, whose writer needs TensorFlow; default to
    # array_record so `tfds.data_source('arith_chains/k2_m10', ...)` works without it.
    super().__init__(file_format=file_format or 'array_record', **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    # `self.dataset_info_from_configs` would read README/CITATIONS files next to this
    # module (tfds's dataset-folder layout) and fails for a builder defined in a plain
    # module, so the DatasetInfo is built directly.
    cfg = self.builder_config
    k = cfg.num_steps
    tensor = lambda *shape: tfds.features.Tensor(shape=shape, dtype=np.int32)
    return tfds.core.DatasetInfo(
      builder=self,
      description='Verifiable multi-step modular-arithmetic chains (jaxca.tasks.arith).',
      features=tfds.features.FeaturesDict(
        {
          'prompts': tensor(2 * k + 3),
          'targets': tensor(2 * k),
          'answers': tensor(),
          'intermediates': tensor(k),
        }
      ),
      supervised_keys=None,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    splits = {
      'train': self._generate_examples('train', cfg.num_train),
      'test': self._generate_examples('test', cfg.num_test),
    }
    if cfg.validation_fraction > 0:
      splits['validation'] = self._generate_examples('validation', cfg.num_validation)
    return splits

  def _generate_examples(self, split: str, num: int):
    cfg = self.builder_config
    task = arith.make_task(cfg.task_config)
    rng = np.random.default_rng([cfg.seed, _SPLIT_SEED[split]])
    data = task.generate(
      rng,
      num,
      split=split,
      test_fraction=cfg.test_fraction,
      validation_fraction=cfg.validation_fraction,
      distinct=split != 'train',
    )
    for i in range(num):
      yield i, {key: data[key][i] for key in _FEATURE_KEYS}


def make_builder(
  cfg: arith.ArithConfig,
  data_dir: str,
  *,
  num_train: int,
  num_test: int,
  test_fraction: float = 0.1,
  seed: int = 0,
  validation_fraction: float = 0.0,
  num_validation: int = 0,
) -> ArithChains:
  """The (not necessarily prepared) builder for these knobs under `data_dir`."""
  config = ArithChainsConfig.from_arith(
    cfg,
    num_train=num_train,
    num_test=num_test,
    test_fraction=test_fraction,
    seed=seed,
    validation_fraction=validation_fraction,
    num_validation=num_validation,
  )
  return ArithChains(config=config, data_dir=str(data_dir))


def build(
  cfg: arith.ArithConfig,
  data_dir: str,
  *,
  num_train: int = 20_000,
  num_test: int = 1_000,
  test_fraction: float = 0.1,
  seed: int = 0,
  validation_fraction: float = 0.0,
  num_validation: int = 0,
) -> ArithChains:
  """Prepares the dataset (array_record) under `data_dir` unless already there; returns it."""
  knobs = dict(
    num_train=num_train,
    num_test=num_test,
    test_fraction=test_fraction,
    seed=seed,
    validation_fraction=validation_fraction,
    num_validation=num_validation,
  )
  builder = make_builder(cfg, data_dir, **knobs)
  if builder.is_prepared():
    return builder
  print(f'building the {builder.name} dataset ({num_train} train / {num_test} test) in '
        f'{builder.data_dir}', flush=True)  # fmt: skip
  from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top

  # Built in a private directory and renamed into place: processes that build the same
  # dataset at once (runs sharing config.data.dir) each finish, and the first rename wins.
  os.makedirs(data_dir, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix='.building_', dir=data_dir) as tmp:
    staged = make_builder(cfg, tmp, **knobs)
    shown = tqdm_utils._active  # pylint: disable=protected-access
    tqdm_utils.display_progress_bar(False)  # seconds of generation: no per-split bars
    try:
      staged.download_and_prepare(file_format='array_record')
    finally:
      tqdm_utils.display_progress_bar(shown)
    os.makedirs(os.path.dirname(builder.data_dir), exist_ok=True)
    try:
      os.rename(staged.data_dir, builder.data_dir)
    except OSError:  # already in place: another process built the same dataset first
      if not make_builder(cfg, data_dir, **knobs).is_prepared():
        raise
  return make_builder(cfg, data_dir, **knobs)


def load(
  cfg: arith.ArithConfig,
  data_dir: str,
  *,
  num_train: int = 20_000,
  num_test: int = 1_000,
  test_fraction: float = 0.1,
  seed: int = 0,
  validation_fraction: float = 0.0,
  num_validation: int = 0,
) -> dict[str, Sequence[Mapping[str, Any]]]:
  """Builds if needed, then returns {'train': source, 'test': source} (random-access data sources).

  With `validation_fraction` > 0 it also holds 'validation' (`num_validation` problems).

  A source supports `len(source)`, `source[i]` -> dict of NumPy values and
  `source.__getitems__(indices)`; use `get_batch` / `batch_iterator` /
  `to_arrays` to get stacked int32 arrays.
  """
  builder = build(
    cfg,
    data_dir,
    num_train=num_train,
    num_test=num_test,
    test_fraction=test_fraction,
    seed=seed,
    validation_fraction=validation_fraction,
    num_validation=num_validation,
  )
  return dict(builder.as_data_source())
