"""jaxca: accelerator-native RL credit assignment in JAX."""

from setuptools import find_packages
from setuptools import setup

# Floors only: the exact versions of the last green environment are in constraints.txt
# (pip install -e ".[test]" -c constraints.txt, what .ci/run does).
setup(
  name='jaxca',
  version='0.1.0',
  description='Exact, fast, vectorized credit-assignment kernels and RL loops in JAX.',
  packages=find_packages(include=['jaxca', 'jaxca.*']),
  python_requires='>=3.11',
  install_requires=[
    'jax>=0.7',
    'flax>=0.10',
    'optax>=0.2.4',
    'orbax-checkpoint>=0.11',
    'tensorflow-datasets>=4.9.7',
    'array_record>=0.5',
    'ml-collections>=1.0',
    'absl-py>=2.1',
    'numpy>=1.26',
    'scipy>=1.15',  # statistics of jaxca.report (bootstrap's rng argument: 1.15)
    'gymnax>=1.0',  # classic envs for experiments/ppo_gymnax.py
    'matplotlib>=3.8',  # result plots written by experiments
    'tqdm>=4.66',  # progress bars on long runs
    'etils[epath]>=1.7',  # orbax's path type, for checkpoint metadata (jaxca.checkpoint)
    'tensorboardX>=2.6',  # TensorBoard event files without TensorFlow
    'safetensors>=0.4',  # reads Hugging Face checkpoints (jaxca.networks.hf)
    'ml-dtypes>=0.5',  # bfloat16 in NumPy: BF16 safetensors checkpoints (jaxca.networks.hf)
    'tokenizers>=0.19',  # tokenizer.json text <-> ids (jaxca.tokenizer)
    'jinja2>=3.1',  # chat templates of pretrained checkpoints (jaxca.tokenizer)
    'pyarrow>=14',  # Parquet files of GSM8K-format datasets (jaxca.tasks.gsm8k)
  ],
  extras_require={
    'test': [
      'pytest>=8',
      'pytest-xdist>=3.5',
      'hypothesis>=6.100',
      'jupytext>=1.16',
      'ruff==0.17.6',  # exact: a ruff release can change `ruff format --check` (style_test)
      'chex>=0.1.89',  # test assertions only (jaxca never imports it)
      'rlax>=0.1.6',  # reference GAE for cross-checks and the benchmark baseline
      'nbclient>=0.10',  # tests run every notebook in a Jupyter kernel
      'ipykernel>=6.29',
      'ipython>=8',  # report.show_markdown renders results.md in a kernel (IPython.display)
    ],
    # Reference implementations for tests/crosscheck only (jaxca never imports them).
    # torch: install the CPU build first where pip would otherwise pick a CUDA one.
    'crosscheck': [
      'torch>=2.4',
      'transformers>=4.45',
    ],
    # The peer library of experiments/bench_llm_peer.py (imported there only); it pulls in
    # many packages (grain, numba, transformers, ...): install it in its own environment
    # (BUILD_NOTES.md > Environment). Never part of the test command.
    'peer': [
      'google-tunix>=0.1.7',
    ],
    # pip install -e ".[notebooks]": open notebooks/*.py (jupytext) in JupyterLab.
    'notebooks': [
      'jupyterlab>=4',
      'jupytext>=1.16',
      'ipykernel>=6.29',
      'nbclient>=0.10',
    ],
  },
)
