"""Shared config helpers: `parse_arg` for `--config configs/x.py:smoke,key=value`."""

import ml_collections


def parse_arg(arg, **defaults) -> ml_collections.ConfigDict:
  """'smoke,lambda_=0.8' -> ConfigDict(smoke=True, lambda_=0.8, ...), typed by the defaults.

  A bare name sets a bool to True. Unknown keys fail with the list of known ones.
  """
  out = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, _, value = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ValueError(f'Unknown config arg {key!r}; known: {sorted(defaults)}.')
    kind = type(defaults[key])
    if kind is bool:
      out[key] = value.strip().lower() in ('', 'true', '1', 'yes')
    else:
      out[key] = kind(value)
  return out
