"""Placeholder: being written (issue 2)."""


def min_form_returns(rewards, mask=None):
  raise NotImplementedError


def min_form_rewards(rewards, temperature, mask=None):
  raise NotImplementedError
