"""Second-order descriptor probe on scikit-learn's digits.

Command:
  python main.py --config configs/digits_probe.py --mode=probe --workdir /tmp/gcp_probe

Pools the 3 x 3 patches (+ position) of each 8 x 8 digit with every
representation of `gcp_jax.ops` and with first-order averaging (`gap`), fits a
logistic regression on each descriptor and writes held-out accuracies to
`WORKDIR/probe_results.json`. About half a minute on 2 CPU cores; the numbers
measured with this config are in benchmarks/RESULTS.md ("Descriptor probe
on the digits").
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.dataset = "digits"
  config.seed = 0
  config.test_fraction = 0.25
  config.patch_size = 3
  config.representations = ("gap", "none", "isqrt", "eig", "epn", "svpn",
                            "bcnn")
  config.representation_options = ml_collections.ConfigDict({
      "isqrt": {"num_iters": 5},
      "eig": {"p": 0.5},
  })
  config.probe = ml_collections.ConfigDict()
  config.probe.steps = 500
  config.probe.learning_rate = 0.05
  config.probe.weight_decay = 1e-3
  return config
