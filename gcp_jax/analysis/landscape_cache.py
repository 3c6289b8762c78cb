"""Identity of a computed landscape, and its resumable file.

A landscape file is reused only if EVERYTHING that determines its numbers is
unchanged. The cache key is the SHA-256 of a canonical JSON object of
"ingredients" (see `landscape.landscape_ingredients`): the model's
definition, the caller's checkpoint and data labels, content fingerprints of
the base weights, of the direction arrays and of the evaluation batches, the
direction recipe (seed, options), the exact grid coordinates, the BN mode and
the dropout key. Fingerprints hash the bytes, so a re-trained checkpoint at
the same path, a changed data subset or a re-drawn direction always gives a
new key (the stale-cache failures of loss-landscape#32 cannot happen).

The file `<cache_dir>/landscape-<key>.npz` holds the grid with a `done`
mask; it is rewritten atomically after every evaluated point, so after a
crash a new run with the same ingredients recomputes only the missing
points.

Synopsis:
  key = cache_key(ingredients)
  fp = fingerprint(variables)        # hex digest of a pytree's contents
"""

import hashlib
import json
import os
from typing import Any

import jax
import numpy as np

FORMAT_VERSION = 1


def fingerprint(tree: Any) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes (host copy)."""
  digest = hashlib.sha256()
  leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
  for path, leaf in leaves:
    array = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
    digest.update(jax.tree_util.keystr(path).encode())
    digest.update(f"{array.dtype.str}{array.shape}".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def canonical_json(obj: Any) -> str:
  """Sorted keys, no whitespace: equal objects give equal strings."""
  return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def cache_key(ingredients: dict[str, Any]) -> str:
  """SHA-256 hex digest of the canonical JSON of `ingredients`."""
  return hashlib.sha256(canonical_json(ingredients).encode()).hexdigest()


def cache_path(cache_dir: str, key: str) -> str:
  """Where the landscape with cache key `key` is stored."""
  return os.path.join(cache_dir, f"landscape-{key}.npz")
