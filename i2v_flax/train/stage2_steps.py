"""Stage-2 pure pieces: the flow API (both directions), the NLL, state init and the jitted step.

Directions (SPEC §4 writes the generative map as z = T(nu; c)):
  flow_forward(flow, vars, nu, cond) -> z            T, sampling
  flow_inverse(flow, vars, z, cond) -> (nu, logdet)  T^-1, explaining; the NLL is computed here
The Linen module names its normalising direction (z -> nu) `forward` because that is the one that
returns the log-determinant (see i2v_flax/models/cinn.py); these functions use the SPEC's naming.

The state is a plain dict: 'flow' and 'embedder' (Flax variables; what sampling restores) and
'step', 'rng', 'opt' (training only). The frozen stage-1 encoder is an argument of the step, never
part of the state, so stage-2 checkpoints hold no stage-1 weights.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from i2v_flax.models.cinn import ConditionalFlow, build_conditional_flow
from i2v_flax.models.embedder import build_embedder, embedder_is_frozen
from i2v_flax import config_lib
from i2v_flax.train import common, optimizers
from i2v_flax.train import stage1

State = dict[str, Any]
MODEL_KEYS = ("flow", "embedder")
LOG_2PI = math.log(2.0 * math.pi)


def build_flow(config: ml_collections.ConfigDict) -> tuple[ConditionalFlow, nn.Module]:
  """(flow, embedder) modules of config.stage2; the permutations are seeded by config.seed.

  The embedder is the small 2-D ResNet or, with `stage2.embedder='resnet50'`, the reference's
  ResNet-50 (frozen; BatchNorm statistics, if any, in its `batch_stats` collection)."""
  return build_conditional_flow(config.stage2, seed=int(config.seed)), build_embedder(config.stage2)


def optional_eta(config: ml_collections.ConfigDict, eta: jax.Array | None,
                 given: jax.Array | None = None) -> jax.Array | None:
  """eta as the flow sees it. With `stage2.eta_dropout > 0` (optional control, a departure from
  the reference for the one-model demo) it is `[eta * given, given]`: `given` (B,) is 1 where
  eta is known and 0 where the model must sample without it, so one flow serves both
  unconditional sampling (several futures per x_0) and control. Otherwise eta unchanged."""
  if eta is None or float(config.stage2.get("eta_dropout", 0.0)) <= 0:
    return eta
  given = jnp.ones(eta.shape[:1], eta.dtype) if given is None else given.astype(eta.dtype)
  return jnp.concatenate([eta * given[:, None], given[:, None]], axis=-1)


def condition(embedder: nn.Module, emb_vars: dict, x0: jax.Array,
              eta: jax.Array | None = None) -> jax.Array:
  """The flow's condition [c(x_0), eta] (eta only for control models). Jit-friendly."""
  c = embedder.apply(emb_vars, x0)
  if eta is None:
    return c
  return jnp.concatenate([c, eta.astype(c.dtype)], axis=-1)


def flow_forward(flow: ConditionalFlow, flow_vars: dict, nu: jax.Array, cond: jax.Array
                 ) -> jax.Array:
  """Sampling direction z = T(nu; c) (the module's `inverse`). Jit-friendly."""
  return flow.apply(flow_vars, nu, cond, method=flow.inverse)


def flow_inverse(flow: ConditionalFlow, flow_vars: dict, z: jax.Array, cond: jax.Array
                 ) -> tuple[jax.Array, jax.Array]:
  """Explaining direction (nu, log|det dnu/dz|) = T^-1(z; c): the "forward" of the NLL (the
  module's `forward`). logdet is per sample and includes ActNorm, LeakyReLU and coupling terms."""
  return flow.apply(flow_vars, z, cond, method=flow.forward)


def nll_metrics(nu: jax.Array, logdet: jax.Array, z: jax.Array) -> dict[str, jax.Array]:
  """Batch-mean NLL terms in nats. Constants, stated once:

  loss       = mean ½‖nu‖² − mean logdet            (what is minimised; no constant, as the
                                                     reference prints it)
  nll        = loss + d/2·log 2π                     (the true −log p(z|x_0), constant included)
  nll_ref    = mean ½‖z‖² + d/2·log 2π               (−log N(z; 0, I) on the same z: the NLL the
                                                     flow must beat; constant included)
  bits_per_dim = nll / (d·ln 2); logdet = mean log|det dnu/dz|.
  """
  d = z.shape[-1]
  loss = jnp.mean(0.5 * jnp.sum(nu**2, -1)) - jnp.mean(logdet)
  nll = loss + 0.5 * d * LOG_2PI
  return {"loss": loss, "nll": nll, "logdet": jnp.mean(logdet),
          "bits_per_dim": nll / (d * math.log(2.0)),
          "nll_ref": jnp.mean(0.5 * jnp.sum(z**2, -1)) + 0.5 * d * LOG_2PI,
          "nu_std": jnp.std(nu)}


def make_optimizer(config: ml_collections.ConfigDict, shapes_only: bool = False
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """torch Adam(amsgrad=True) with a step decay, from config.stage2 (optimizers.py has the
  semantics). `shapes_only`: for abstract states (restore), where a DTDB config whose epoch
  depends on the data may not be resolved yet; the schedule does not change the state's shapes.
  """
  s2 = config.stage2
  steps = config_lib.steps_per_epoch(s2, default=1 if shapes_only else None)
  return optimizers.amsgrad_step_decay(
      float(s2.lr), float(s2.b1), float(s2.b2), steps, s2.decay_every_epochs,
      float(s2.decay_factor), semantics=str(s2.get("amsgrad", "torch")),
      weight_decay=float(s2.get("weight_decay", 0.0)))


def trainable(config: ml_collections.ConfigDict, state: State) -> dict[str, Any]:
  """The parameters the optimiser owns: the flow, plus the embedder unless it is frozen (always
  for 'resnet50': it is the reference's pretrained encoder)."""
  params = {"flow": state["flow"]["params"]}
  if not embedder_is_frozen(config.stage2):
    params["embedder"] = state["embedder"]["params"]
  return params


def _split_batch(config: ml_collections.ConfigDict, batch: dict
                 ) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  video = batch["video"]
  eta = batch.get("eta") if config.stage2.control else None
  return video[:, 0], video[:, 1:], eta


def make_init_fn(config: ml_collections.ConfigDict, flow: ConditionalFlow,
                 embedder: nn.Module) -> Callable[[jax.Array, jax.Array, Any, jax.Array],
                                                      State]:
  """(z, x0, eta, rng) -> state. ActNorm initialises from this z batch (data-dependent init)."""
  tx, _ = make_optimizer(config, shapes_only=True)

  def init(z: jax.Array, x0: jax.Array, eta: jax.Array | None, rng: jax.Array) -> State:
    k_emb, k_flow, k_state = jax.random.split(rng, 3)
    emb_vars = embedder.init(k_emb, x0)
    cond = condition(embedder, emb_vars, x0, optional_eta(config, eta))
    flow_vars = flow.init(k_flow, z, cond, method=flow.forward)
    state = {"step": jnp.zeros((), jnp.int32), "rng": k_state, "flow": flow_vars,
             "embedder": emb_vars}
    state["opt"] = tx.init(trainable(config, state))
    return state

  return init


def make_steps(config: ml_collections.ConfigDict, flow: ConditionalFlow, embedder: nn.Module,
               encoder: Any, decoder: Any, mesh: Mesh) -> dict[str, Callable]:
  """Jitted on the mesh:
  'encode' (enc_vars, video, rng) -> z            (frozen encoder, sampled z)
  'train'  (state, batch, enc_vars) -> (state, metrics)
  'sample' (state, dec_vars, batch, rng) -> (B, num_samples, 16, H, W, 3) videos
  """
  tx, schedule = make_optimizer(config)
  frozen_embedder = embedder_is_frozen(config.stage2)

  def encode_z(enc_vars, video, rng):
    # Sampled z (not the mean), as the reference: the flow models q(z|x) marginalised over clips.
    z, _, _ = stage1.encode(encoder, enc_vars, video[:, 1:], rng, video[:, 0])
    return jax.lax.stop_gradient(z)

  def train_step(state: State, batch: dict, enc_vars: dict) -> tuple[State, dict]:
    x0, _, eta = _split_batch(config, batch)
    rng, k_z, k_drop = jax.random.split(state["rng"], 3)
    z = encode_z(enc_vars, batch["video"], k_z)
    if eta is not None:
      keep = jax.random.bernoulli(k_drop, 1.0 - float(config.stage2.get("eta_dropout", 0.0)),
                                  eta.shape[:1])
      eta = optional_eta(config, eta, keep)

    def loss_fn(params):
      emb_params = (jax.lax.stop_gradient(state["embedder"]["params"]) if frozen_embedder
                    else params["embedder"])
      cond = condition(embedder, {**state["embedder"], "params": emb_params}, x0, eta)
      nu, logdet = flow_inverse(flow, {**state["flow"], "params": params["flow"]}, z, cond)
      metrics = nll_metrics(nu, logdet, z)
      return metrics["loss"], metrics

    params = trainable(config, state)
    grads, metrics = jax.grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, state["opt"], params)
    params = optax.apply_updates(params, updates)
    new = {**state, "step": state["step"] + 1, "rng": rng, "opt": opt,
           "flow": {**state["flow"], "params": params["flow"]}}
    if not frozen_embedder:
      new["embedder"] = {**state["embedder"], "params": params["embedder"]}
    metrics = {**metrics, "grad_norm": optax.global_norm(grads), "lr": schedule(state["step"])}
    return new, metrics

  def sample(state: State, dec_vars: dict, batch: dict, rng: jax.Array,
             num_samples: int = 4) -> jax.Array:
    x0, _, eta = _split_batch(config, batch)
    cond = condition(embedder, state["embedder"], x0, optional_eta(config, eta))
    nu = jax.random.normal(rng, (num_samples,) + (x0.shape[0], config.stage1.z_dim))
    z = jax.vmap(lambda n: flow_forward(flow, state["flow"], n, cond))(nu)
    videos = jax.vmap(lambda zz: stage1.decode(decoder, dec_vars, x0, zz))(z)
    return jnp.swapaxes(videos, 0, 1)

  rep, bat = common.REPLICATED, common.BATCH
  return {
      "encode": common.mesh_jit(encode_z, mesh, (rep, bat, rep), bat),
      "train": common.mesh_jit(train_step, mesh, (rep, bat, rep), (rep, rep), donate_argnums=(0,)),
      "sample": common.mesh_jit(sample, mesh, (rep, rep, bat, rep), bat),
  }
