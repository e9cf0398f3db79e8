"""Data layer: the offline `i2v_shapes` TFDS builder, manual-dir builders and the input pipeline.

Importing this package registers `i2v_shapes`, `i2v_iper`, `i2v_landscape`, `i2v_dtdb` with TFDS
and hides every accelerator from TensorFlow, which is only used for tf.data.
"""

from i2v_flax.data import manual  # noqa: F401  (registers the manual-dir builders)
from i2v_flax.data import shapes_builder  # noqa: F401  (registers i2v_shapes)
from i2v_flax.data.augment import stage2_data
from i2v_flax.data.control import bair_eta, shapes_eta
from i2v_flax.data.pipeline import create_iterator, num_examples, prepare
from i2v_flax.data.shapes import generate_example

__all__ = ["bair_eta", "create_iterator", "generate_example", "num_examples", "prepare",
           "shapes_eta", "stage2_data"]
