"""Input data for gcp-jax.

  config.py      the data config: fields, defaults, checks (no TensorFlow)
  pipeline.py    create_datasets: one process's training batches and padded,
                 masked evaluation batches, deterministic and resumable
  preprocess.py  TensorFlow image ops: decode, crops, flip, normalisation
  sources.py     image folders and tensorflow-datasets as tf.data records
  digits.py      scikit-learn's digits, as arrays or as a PNG image folder
"""
