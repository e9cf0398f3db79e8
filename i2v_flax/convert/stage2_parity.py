"""Stage-2 parity runners: reproduce a reference fixture's outputs with the converted modules.

`PARITY_RUNNERS[fixture.meta['reference']['class']](fixture)` returns {output name as in the
fixture JSON: our value in torch layout}; `python -m i2v_flax.convert.parity DIR` compares them
with the stored torch outputs. Modules are built from the fixture's weights and `config` only
(no published widths are assumed), so any seed, width or resolution runs.

The cINN runs with the reference's semantics (`CinnArch.build`: no clamp, logdet without the
LeakyReLU term). The `init/*` outputs re-run the reference's first-forward ActNorm
initialisation on the converted couplings (`cinn.data_init_actnorms`).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from i2v_flax.convert.fixtures import Fixture
from i2v_flax.models import cinn

CINN_CLASS = "stage2_cINN/modules/flow_blocks.py:ConditionalFlow"
EMBEDDER_CLASS = "stage2_cINN/AE/modules/AE.py:ResnetEncoder"


def _check_config(fx: Fixture, found: dict) -> None:
  """The fixture's constructor arguments must agree with what the converter inferred."""
  bad = {k: (fx.config[k], v) for k, v in found.items() if k in fx.config and fx.config[k] != v}
  if bad:
    ours, theirs = {k: v[1] for k, v in bad.items()}, {k: v[0] for k, v in bad.items()}
    raise ValueError(f"{fx.name}: inferred {ours} from the weights, but the fixture config says "
                     f"{theirs}: the converter misreads this architecture.")


def run_cinn(fx: Fixture) -> dict[str, np.ndarray]:
  """Forward, reverse, per-block outputs, LeakyReLU counts and the ActNorm data init."""
  from i2v_flax.convert.stage2 import cinn_arch, cinn_variables  # Lazy: stage2 imports us.
  from i2v_flax.data.control import bair_eta_from_unit  # Lazy: it imports TensorFlow.
  control = bool(fx.config.get("control", False))
  sd = fx.state_dict
  arch = cinn_arch(sd, control=control)
  _check_config(fx, {"in_channels": arch.dim, "hidden_dim": arch.hidden,
                     "hidden_depth": arch.num_hidden_layers, "n_flows": arch.num_blocks,
                     "embedding_dim": arch.cond_dim + arch.eta_dim})
  flow, variables = arch.build(), cinn_variables(sd, control=control)
  z, nu_in = jnp.asarray(fx.inputs["z"]), jnp.asarray(fx.inputs["nu"])
  out: dict[str, np.ndarray] = {}
  cond = np.asarray(fx.inputs["c"], np.float32)
  if control:
    out["output/eta_onehot"] = bair_eta_from_unit(fx.inputs["eta_pos"])
    cond = np.concatenate([cond, out["output/eta_onehot"]], -1)
  out["intermediate/cond"] = cond
  forward = jax.jit(lambda v, x, c: flow.apply(v, x, c, method=flow.forward))
  inverse = jax.jit(lambda v, y, c: flow.apply(v, y, c, method=flow.inverse))
  nu, logdet = forward(variables, z, cond)
  out.update({"output/nu": nu, "output/logdet": logdet,
              "output/z_reconstructed": inverse(variables, nu, cond),
              "output/z_from_nu": inverse(variables, nu_in, cond)})
  x, total, blocks, cumulative, counts = z, 0.0, [], [], []
  for i in range(arch.num_blocks):
    bv = cinn.block_variables(variables, i)
    an = bv["params"]["actnorm"]
    counts.append(np.sum(np.asarray(an["scale"] * (x + an["loc"])) < 0, -1).astype(np.int64))
    x, ld = cinn.flow_block(flow, i).apply(bv, x, cond)
    total = total + ld
    blocks.append(x)
    cumulative.append(total)
  out.update({"intermediate/block_outputs": np.stack(blocks),
              "intermediate/block_logdets_cumulative": np.stack(cumulative),
              "intermediate/lrelu_negative_count": np.stack(counts)})
  if "init_z" in fx.inputs:
    init_z, init_c = jnp.asarray(fx.inputs["init_z"]), jnp.asarray(fx.inputs["init_c"])
    init_vars = cinn.data_init_actnorms(flow, variables, init_z, init_c)
    init_nu, init_ld = forward(init_vars, init_z, init_c)
    actnorms = [init_vars["params"][f"block_{i}"]["actnorm"] for i in range(arch.num_blocks)]
    out.update({"init/nu": init_nu, "init/logdet": init_ld,
                "init/actnorm_loc": np.stack([a["loc"] for a in actnorms]),
                "init/actnorm_scale": np.stack([a["scale"] for a in actnorms])})
  return {k: np.asarray(v) for k, v in out.items()}


def run_embedder(fx: Fixture) -> dict[str, np.ndarray]:
  """The ResNet-50 x_0 embedder: 2z head, its mean half and the pooled 2048-d features."""
  from i2v_flax.convert.stage2 import (ConvertError, embedder_cond_dim, embedder_norm,
                                       embedder_variables)
  from i2v_flax.models.resnet50 import ResNet50Embedder
  if fx.config.get("encoder_type", "resnet50") != "resnet50":
    raise ConvertError(f"{fx.name}: encoder_type {fx.config['encoder_type']!r} is not supported; "
                       "only the released resnet50 encoders are.")
  sd = fx.state_dict
  norm, z = embedder_norm(sd), embedder_cond_dim(sd)
  _check_config(fx, {"norm": norm, "z_dim": z})
  model = ResNet50Embedder(cond_dim=z, norm=norm)
  x0 = jnp.asarray(np.asarray(fx.inputs["x0"], np.float32).transpose(0, 2, 3, 1))  # NCHW->NHWC
  res = jax.jit(lambda v, x: model.apply(v, x, all_outputs=True))(embedder_variables(sd, norm), x0)
  return {"output/head": np.asarray(res["head"]), "output/mean": np.asarray(res["mean"]),
          "intermediate/pooled_features": np.asarray(res["pooled"])}


def _highest_precision(fn: Callable[[Fixture], dict]) -> Callable[[Fixture], dict]:
  """Parity is about float32 semantics: no TF32/bf16 matmul passes on accelerators."""
  def run(fx: Fixture) -> dict[str, np.ndarray]:
    with jax.default_matmul_precision("highest"):
      return fn(fx)
  run.__doc__, run.__name__ = fn.__doc__, fn.__name__
  return run


PARITY_RUNNERS: dict[str, Callable[[Fixture], dict[str, np.ndarray]]] = {
    CINN_CLASS: _highest_precision(run_cinn),
    EMBEDDER_CLASS: _highest_precision(run_embedder),
    EMBEDDER_CLASS + " (torchvision resnet50)": _highest_precision(run_embedder),
}
