"""Stage-1 models, state and the jitted generator / discriminator steps (SPEC §3.5).

The state is a plain dict so checkpoints split naturally into 'models' (what stage 2 and
sampling restore) and 'train' (optimisers, discriminators, rng):
  step, rng, encoder, decoder, d_t, d_s  (Flax variables: {'params', 'spectral'?}),
  opt_g (over {'encoder', 'decoder'} params), opt_dt, opt_ds.
Two generator steps are compiled: one for warm-up (no GAN/FM terms, no discriminator forward at
all) and one adversarial, so warm-up steps do not pay for discriminators they ignore.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from i2v_flax import errors, losses
from i2v_flax.models.decoder import Decoder, make_decoder
from i2v_flax.models.discriminators import (SpatialDiscriminator, TemporalDiscriminator,
                                            make_spatial_discriminator,
                                            make_temporal_discriminator)
from i2v_flax.models.encoder import Encoder, make_encoder
from i2v_flax.models.layers import SPECTRAL
from i2v_flax.train import common, optimizers

State = dict[str, Any]
MODEL_KEYS = ("encoder", "decoder")


class Stage1Models(NamedTuple):
  encoder: Encoder
  decoder: Decoder
  d_t: TemporalDiscriminator
  d_s: SpatialDiscriminator


def build_models(config: ml_collections.ConfigDict) -> Stage1Models:
  """The four stage-1 modules, every width/stride taken from config.stage1."""
  return Stage1Models(make_encoder(config), make_decoder(config),
                      make_temporal_discriminator(config), make_spatial_discriminator(config))


def check_stage1_config(config: ml_collections.ConfigDict) -> None:
  """Fail early, with the fix, on settings the steps cannot honour."""
  s1 = config.stage1
  frames = config.data.clip_length - 1
  if not 1 <= s1.dt_window <= frames:
    raise errors.InvalidInput(f"stage1.dt_window={s1.dt_window} must be in [1, {frames}] (frames to "
                     "predict). Fix: --config.stage1.dt_window=12")
  if s1.ds_num_frames > s1.batch_size * frames:
    raise errors.InvalidInput(
        f"stage1.ds_num_frames={s1.ds_num_frames} exceeds the {s1.batch_size * frames} generated "
        "frames per batch. Fix: lower --config.stage1.ds_num_frames or raise the batch size.")


def make_optimizer(config: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  s1 = config.stage1
  return optimizers.adam_coupled_wd(s1.lr, s1.b1, s1.b2, s1.weight_decay, s1.steps_per_epoch,
                                s1.lr_decay_per_epoch)


def _frames(video: jax.Array) -> jax.Array:
  return video.reshape((-1,) + video.shape[2:])


def _window(video: jax.Array, key: jax.Array, length: int) -> jax.Array:
  start = jax.random.randint(key, (), 0, video.shape[1] - length + 1)
  return jax.lax.dynamic_slice_in_dim(video, start, length, axis=1)


def _pick_frames(video: jax.Array, key: jax.Array, n: int) -> jax.Array:
  frames = _frames(video)
  return frames[jax.random.choice(key, frames.shape[0], (n,), replace=False)]


def make_init_fn(config: ml_collections.ConfigDict, models: Stage1Models
                 ) -> Callable[[jax.Array, jax.Array], State]:
  """(video (B, 17, H, W, 3), rng) -> initial state. D_S's ActNorm initialises from real frames."""
  s1 = config.stage1
  tx, _ = make_optimizer(config)

  def init(video: jax.Array, rng: jax.Array) -> State:
    k_init, k_state = jax.random.split(rng)
    # Parameter init draws hundreds of random tensors; threefry's unrolled hash makes XLA-CPU
    # compile that for minutes, the 'rbg' generator compiles in seconds. Step-time randomness
    # stays threefry (sharding-invariant, so 1 device == 8 devices).
    rbg = jax.random.wrap_key_data(jax.random.bits(k_init, (4,), jnp.uint32), impl="rbg")
    k_enc, k_z, k_dec, k_dt, k_ds = jax.random.split(rbg, 5)
    k_frames = jax.random.fold_in(k_state, 0)
    x0, target = video[:, 0], video[:, 1:]
    enc = models.encoder.init(k_enc, target, k_z)
    dec = models.decoder.init(k_dec, x0, jnp.zeros((video.shape[0], s1.z_dim)))
    d_t = models.d_t.init(k_dt, target[:, :s1.dt_window])
    d_s = models.d_s.init(k_ds, _pick_frames(target, k_frames, s1.ds_num_frames))
    g_params = {"encoder": enc["params"], "decoder": dec["params"]}
    return {"step": jnp.zeros((), jnp.int32), "rng": k_state, "encoder": enc, "decoder": dec,
            "d_t": d_t, "d_s": d_s, "opt_g": tx.init(g_params),
            "opt_dt": tx.init(d_t["params"]), "opt_ds": tx.init(d_s["params"])}

  return init


def _with(variables: dict, params: Any) -> dict:
  return {**variables, "params": params}


def make_steps(config: ml_collections.ConfigDict, models: Stage1Models, mesh: Mesh,
               lpips_params: Any | None) -> dict[str, Callable]:
  """Jitted steps on the mesh: 'g_warmup', 'g_adv' (state, video) -> (state, metrics, fake);
  'd' (state, video, fake) -> (state, metrics); 'eval' (state, video, rng) -> (recon, prior, psnr,
  z_use)."""
  s1 = config.stage1
  tx, schedule = make_optimizer(config)
  enc_m, dec_m, dt_m, ds_m = models
  if s1.w_percep > 0 and lpips_params is None:
    raise errors.InvalidInput("stage1.w_percep > 0 needs the LPIPS weights (load_lpips_params()).")

  def g_step(state: State, video: jax.Array, adversarial: bool):
    rng = jax.random.fold_in(state["rng"], state["step"])
    k_z, k_win, k_frames = jax.random.split(rng, 3)
    x0, target = video[:, 0], video[:, 1:]
    if adversarial:
      real_win = _window(target, k_win, s1.dt_window)
      _, real_feats = dt_m.apply(state["d_t"], real_win)

    def loss_fn(g_params):
      z, mu, logvar = enc_m.apply(_with(state["encoder"], g_params["encoder"]), target, k_z)
      fake, dec_upd = dec_m.apply(_with(state["decoder"], g_params["decoder"]), x0, z, True,
                                  mutable=[SPECTRAL])
      terms = {"l1": losses.l1(fake, target), "kl": losses.kl_standard_normal(mu, logvar)}
      loss = s1.w_rec * terms["l1"] + s1.w_kl * terms["kl"]
      if s1.w_percep > 0:
        terms["lpips"] = losses.perceptual(lpips_params, fake, target)
        loss = loss + s1.w_percep * terms["lpips"]
      if adversarial:
        fake_logits, fake_feats = dt_m.apply(state["d_t"], _window(fake, k_win, s1.dt_window))
        terms["g_t"] = losses.generator_adversarial(fake_logits)
        terms["fm"] = losses.feature_matching(real_feats, fake_feats)
        terms["g_s"] = losses.generator_adversarial(
            ds_m.apply(state["d_s"], _pick_frames(fake, k_frames, s1.ds_num_frames)))
        loss = loss + terms["g_s"] + s1.w_t * terms["g_t"] + s1.w_fm * terms["fm"]
      terms["g_loss"] = loss
      return loss, (terms, fake, dec_upd)

    g_params = {k: state[k]["params"] for k in MODEL_KEYS}
    grads, (terms, fake, dec_upd) = jax.grad(loss_fn, has_aux=True)(g_params)
    updates, opt_g = tx.update(grads, state["opt_g"], g_params)
    g_params = optax.apply_updates(g_params, updates)
    new = dict(state, step=state["step"] + 1, opt_g=opt_g,
               encoder=_with(state["encoder"], g_params["encoder"]),
               decoder={**_with(state["decoder"], g_params["decoder"]), **dec_upd})
    metrics = dict(terms, g_grad_norm=common.global_norm(grads), lr=schedule(state["step"]))
    return new, metrics, jax.lax.stop_gradient(fake)

  def d_step(state: State, video: jax.Array, fake: jax.Array):
    rng = jax.random.fold_in(jax.random.fold_in(state["rng"], state["step"]), 1)
    k_win, k_real, k_fake = jax.random.split(rng, 3)
    target = video[:, 1:]

    def dt_loss(params):
      variables = _with(state["d_t"], params)

      def real_logits(x):
        (logits, _), upd = dt_m.apply(variables, x, True, mutable=[SPECTRAL])
        return logits, upd

      r1, real, upd = losses.r1_penalty(real_logits, _window(target, k_win, s1.dt_window),
                                        has_aux=True)
      fake_logits, _ = dt_m.apply({**variables, **upd}, _window(fake, k_win, s1.dt_window))
      hinge = losses.hinge_d(real, fake_logits)
      return hinge + s1.w_gp * r1, ({"dt_hinge": hinge, "r1": r1, "dt_real": jnp.mean(real),
                                     "dt_fake": jnp.mean(fake_logits)}, upd)

    def ds_loss(params):
      n = s1.ds_num_frames
      frames = jnp.concatenate([_pick_frames(target, k_real, n), _pick_frames(fake, k_fake, n)])
      logits, upd = ds_m.apply(_with(state["d_s"], params), frames, True, mutable=[SPECTRAL])
      hinge = losses.hinge_d(logits[:n], logits[n:])
      return hinge, ({"ds_hinge": hinge, "ds_real": jnp.mean(logits[:n]),
                      "ds_fake": jnp.mean(logits[n:])}, upd)

    new = dict(state)
    metrics = {}
    for key, opt_key, fn in (("d_t", "opt_dt", dt_loss), ("d_s", "opt_ds", ds_loss)):
      params = state[key]["params"]
      grads, (terms, upd) = jax.grad(fn, has_aux=True)(params)
      updates, new[opt_key] = tx.update(grads, state[opt_key], params)
      new[key] = {**_with(state[key], optax.apply_updates(params, updates)), **upd}
      metrics.update(terms)
      metrics[f"{key}_grad_norm"] = common.global_norm(grads)
    return new, metrics

  def eval_fn(state: State, video: jax.Array, rng: jax.Array):
    """Reconstruction from the posterior mean, a sample from the N(0, I) prior, per-video PSNR
    and per-video z-use.

    z-use is the mean |decode(x0, mu) - decode(x0, mu of another video)|: it falls to ~0 when the
    decoder ignores z (posterior collapse), which PSNR alone cannot tell from slow learning.
    """
    x0, target = video[:, 0], video[:, 1:]
    mu, _, _ = enc_m.apply(state["encoder"], target)
    recon = dec_m.apply(state["decoder"], x0, mu)
    prior = dec_m.apply(state["decoder"], x0, jax.random.normal(rng, mu.shape))
    swapped = dec_m.apply(state["decoder"], x0, jnp.roll(mu, 1, axis=0))
    z_use = jnp.mean(jnp.abs(recon - swapped), axis=tuple(range(1, recon.ndim)))
    return recon, prior, common.psnr(recon, target), z_use

  R, B = common.REPLICATED, common.BATCH
  return {
      "g_warmup": common.mesh_jit(lambda s, v: g_step(s, v, False), mesh, (R, B), (R, R, B),
                                  donate_argnums=(0,)),
      "g_adv": common.mesh_jit(lambda s, v: g_step(s, v, True), mesh, (R, B), (R, R, B),
                               donate_argnums=(0,)),
      "d": common.mesh_jit(d_step, mesh, (R, B, B), (R, R), donate_argnums=(0,)),
      "eval": common.mesh_jit(eval_fn, mesh, (R, B, R), (B, B, B, B)),
  }
