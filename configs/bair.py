"""BAIR robot pushing (TFDS `bair_robot_pushing_small`, camera image_aux1), 64x64: SPEC §3-§4.

Args: 'tiny' shrinks widths/batch/steps for tests; 'control' turns on the end-effector control.
Usage: --config=configs/bair.py, --config=configs/bair.py:tiny, --config=configs/bair.py:control
"""

from i2v_flax import config_lib


def get_config(arg=None):
  variant, tiny = config_lib.parse_arg(arg)
  c = config_lib.base_config()
  c.data.name = "bair"  # TFDS bair_robot_pushing_small.
  c.data.resolution = 64  # Native BAIR resolution.
  c.data.max_start_frame = 13  # 30-frame videos: starts in [0, 13].
  # Colour jitter 0.1/0.1/0.1/0 (SPEC §7) is the base default.
  if variant == "control":
    c.data.control = True  # Emit eta = binned end-effector position at the clip's last frame.
    c.stage2.control = "bins"  # 3 coordinates x 10 one-hot bins.
    c.stage2.eta_dim = 30  # 3 x 10.
  elif variant is not None:
    raise ValueError(f"Unknown bair variant {variant!r}; use 'control' and/or 'tiny'.")
  return config_lib.shrink_to_tiny(c) if tiny else c
