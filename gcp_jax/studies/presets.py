"""Named settings of the studies ("default" for users, "test" for CI)."""

from typing import Mapping, TypeVar

Settings = TypeVar("Settings")


def choose(presets: Mapping[str, Settings], name: str) -> Settings:
  """presets[name], or a ValueError naming the choices."""
  if name not in presets:
    raise ValueError(f"Unknown preset {name!r}; choose one of "
                     f"{', '.join(presets)}.")
  return presets[name]
