"""jaxca: accelerator-native reinforcement learning for credit assignment.

Import modules, not names: `from jaxca import credit` ... `credit.gae(...)`.
Nothing here imports TensorFlow; `jaxca.data` is the only module that touches
tensorflow-datasets.
"""

__version__ = '0.1.0'
