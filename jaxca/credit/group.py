"""Placeholder: being written (issue 2)."""


def group_relative(scores, mode='grpo', group_ids=None, num_groups=None, eps=1e-6, valid=None):
  raise NotImplementedError
