"""Placeholder: being written (issue 2)."""


def discounted_returns(rewards, discounts, bootstrap_value=0.0, mask=None):
  raise NotImplementedError
