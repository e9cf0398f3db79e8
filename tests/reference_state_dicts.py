"""Reference-format state_dicts for converter and notebook tests (numpy only, no torch)."""

import numpy as np


def cinn_state_dict(blocks: int, dim: int, cond: int, eta: int = 0, control_every: int = 4,
                    hidden: int = 16, depth: int = 2, seed: int = 0) -> dict:
  """A reference ConditionalFlow state_dict (conditioning_option 'None'); with eta > 0 a control
  flow, whose 'cond' blocks (index % control_every != 0) see [c, eta] without the x half."""
  rng = np.random.default_rng(seed)
  sd = {}
  for i in range(blocks):
    p = f"sub_layers.{i}."
    in_dim = cond + eta if (eta and i % control_every) else dim // 2 + cond + eta
    dims = [in_dim] + [hidden] * (depth + 1) + [dim // 2]
    sd[p + "norm_layer.loc"] = 0.1 * rng.standard_normal((1, dim, 1, 1)).astype(np.float32)
    sd[p + "norm_layer.scale"] = 1 + 0.1 * rng.standard_normal((1, dim, 1, 1)).astype(np.float32)
    sd[p + "norm_layer.initialized"] = np.ones((), np.uint8)
    for net in ("s.0", "t.0", "s.1", "t.1"):
      for j in range(len(dims) - 1):
        w = rng.standard_normal((dims[j + 1], dims[j])) / np.sqrt(dims[j])
        sd[f"{p}coupling.{net}.main.{2 * j}.weight"] = (0.3 * w).astype(np.float32)
        sd[f"{p}coupling.{net}.main.{2 * j}.bias"] = np.zeros(dims[j + 1], np.float32)
    perm = rng.permutation(dim)
    sd[p + "shuffle.forward_shuffle_idx"] = perm.astype(np.int64)
    sd[p + "shuffle.backward_shuffle_idx"] = np.argsort(perm).astype(np.int64)
  return sd
