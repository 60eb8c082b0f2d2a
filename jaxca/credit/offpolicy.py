"""Placeholder: being written (issue 3)."""

OFF_POLICY_METHODS = (
  'is', 'q_lambda', 'tree_backup', 'retrace', 'truncated_is', 'recursive_retrace', 'rbis')


def off_policy_returns(q_taken, expected_next_q, rewards, discounts, log_rhos, lambda_, method,
                       target_probs=None, mask=None):
  raise NotImplementedError
