"""Placeholder: being written (issue 2)."""


def gae(rewards, values, discounts, bootstrap_value, lambda_, mask=None):
  raise NotImplementedError
