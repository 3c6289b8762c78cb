"""Input data for gcp-jax.

  config.py      the data config: fields, defaults, checks (no TensorFlow)
  pipeline.py    create_datasets: one process's training batches and padded,
                 masked evaluation batches, deterministic and resumable
  preprocess.py  TensorFlow image ops: decode, crops, flip, normalisation
  randaugment.py timm's RandAugment (DeiT 'rand-m9-mstd0.5-inc1') in TF,
                 matching PIL's ops bit for bit
  erasing.py     timm's RandomErasing of normalised images, in TF
  mixing.py      Mixup / CutMix ('batch' mode) as jnp functions for the
                 train step, with soft targets
  sources.py     image folders and tensorflow-datasets as tf.data records
  digits.py      scikit-learn's digits, as arrays or as a PNG image folder
  corruptions.py the ImageNet-C corruptions (imagecorruptions, shimmed and
                 seeded per image)
  robustness.py  corrupted evaluation batches per (corruption, severity):
                 on the fly, the ImageNet-C folders, tfds
                 imagenet2012_corrupted
  perturbations.py ImageNet-P sequences from the released videos (OpenCV)
  tensorflow_cpu TensorFlow, imported once with every GPU hidden from it;
                 the library's only `import tensorflow`
"""
