"""Policy objectives and the loss pieces around them, as pure kernels (no jit, no I/O).

Layers, each importing only the ones before it:
  * `aggregation`: loss aggregation modes (token mean, sequence means, Dr. GRPO's norm);
  * `kl`: KL estimators k1/k2/k3/abs, in the loss or in the reward, fixed or adaptive
    coefficients;
  * `corrections`: rollout corrections (truncated/masked importance weights, rejection);
  * `policy`: the policy objectives by name (PPO-clip, GSPO, CISPO, SAPO, GPG, REINFORCE,
    Clip-Cov, KL-Cov, GMPO, DPPO), `make`, `from_config`; re-exported here;
  * `losses`: the whole PPO objective (policy term + value loss + entropy + KL).
"""

from jaxca.objectives.aggregation import AGG_MODES
from jaxca.objectives.aggregation import aggregate
from jaxca.objectives.aggregation import check_agg_mode
from jaxca.objectives.policy import ALIASES
from jaxca.objectives.policy import OBJECTIVES
from jaxca.objectives.policy import check_name
from jaxca.objectives.policy import cispo
from jaxca.objectives.policy import clip_cov
from jaxca.objectives.policy import dppo_kl
from jaxca.objectives.policy import dppo_tv
from jaxca.objectives.policy import from_config
from jaxca.objectives.policy import gmpo
from jaxca.objectives.policy import gpg
from jaxca.objectives.policy import gspo
from jaxca.objectives.policy import gspo_token
from jaxca.objectives.policy import hyperparameters
from jaxca.objectives.policy import kl_cov
from jaxca.objectives.policy import make
from jaxca.objectives.policy import ppo_clip
from jaxca.objectives.policy import reinforce
from jaxca.objectives.policy import sapo

__all__ = [
  'AGG_MODES',
  'ALIASES',
  'OBJECTIVES',
  'aggregate',
  'check_agg_mode',
  'check_name',
  'cispo',
  'clip_cov',
  'dppo_kl',
  'dppo_tv',
  'from_config',
  'gmpo',
  'gpg',
  'gspo',
  'gspo_token',
  'hyperparameters',
  'kl_cov',
  'make',
  'ppo_clip',
  'reinforce',
  'sapo',
]
