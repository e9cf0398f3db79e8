"""The jitted stage-1 generator / discriminator steps (SPEC §3.5) on a stage1_state state.

Two steps are compiled: 'g_warmup' (no GAN/FM terms, no discriminator forward at all, so warm-up
steps do not pay for discriminators they ignore) and 'adv', the reference's order in one step:
one generator forward kept as a `jax.vjp`, D_T and D_S step on the detached fakes, the
generator's loss is taken against the updated discriminators (`update_order='d_first'`; or the
old ones, 'g_first') and its gradient pulled back through the saved forward. So the update
order costs nothing: one generator forward and backward per step either way. With
`stage1.microbatches` > 1 both steps accumulate the gradient over microbatches (microbatch.py:
in a lax.scan, or one jitted call per microbatch on CPU), and 'adv' runs the generator forward
once more, for the fakes the D step sees first.
Random draws are shared within a step, as the reference: one D_T window for real and fake in
both phases, and one set of D_S frame indices (drawn with replacement) for real and fake frames
in the D step and the fake frames in the G step.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from i2v_flax import config_lib, errors, losses
from i2v_flax.models.layers import SPECTRAL
from i2v_flax.train import common, microbatch
from i2v_flax.train.stage1_state import (State, Stage1Models, frame_indices, frames,
                                         generator_params, make_optimizer, step_keys, window,
                                         window_start, with_params)


def make_steps(config: ml_collections.ConfigDict, models: Stage1Models, mesh: Mesh,
               lpips_params: Any | None) -> dict[str, Callable]:
  """Jitted steps on the mesh: 'g_warmup', 'adv' (state, video) -> (state, metrics, fake);
  'eval' (state, video, rng) -> (recon, prior, psnr, z_use); 'val_recon' (state, video, rng) ->
  (posterior-sampled reconstruction, per-video PSNR of the posterior mean)."""
  s1 = config.stage1
  tx, schedule = make_optimizer(config)
  tx_d, _ = make_optimizer(config, discriminator=True)
  enc_m, dec_m, dt_m, ds_m = models
  w_r1 = config_lib.r1_weight(s1)
  d_first = s1.get("update_order", "d_first") == "d_first"
  if s1.w_percep > 0 and lpips_params is None:
    raise errors.InvalidInput("stage1.w_percep > 0 needs the LPIPS weights (load_lpips_params()).")

  unmixed = s1.get("w_rec_unmixed", 0.0) > 0
  microbatches = int(s1.get("microbatches", 1))

  def z_noise(k_z: jax.Array, video: jax.Array) -> jax.Array:
    """The step's reparameterisation noise, one row per video, drawn for the whole batch so the
    same step split into microbatches samples the same z."""
    return jax.random.normal(k_z, (video.shape[0], s1.z_dim))

  def generator_forward(state: State, video: jax.Array, eps: jax.Array):
    """(outs, vjp_fn, spectral updates): outs = (fake, mu, logvar[, frames before mixing]) as a
    function of the generator params, kept for one backward pass through vjp_fn. eps: the
    reparameterisation noise of these videos (z_noise)."""
    x0, target = video[:, 0], video[:, 1:]

    def forward(g_params):
      _, mu, logvar = enc_m.apply(with_params(state["encoder"], g_params["encoder"]), target,
                                  None, x0)
      z = mu + jnp.exp(0.5 * logvar) * eps.astype(mu.dtype)
      fake, dec_upd = dec_m.apply(with_params(state["decoder"], g_params["decoder"]), x0, z, True,
                                  mutable=[SPECTRAL] + (["intermediates"] if unmixed else []))
      if not unmixed:
        return (fake, mu, logvar), dec_upd
      dec_upd = dict(dec_upd)
      return (fake, mu, logvar, dec_upd.pop("intermediates")["unmixed"][0]), dec_upd

    return jax.vjp(forward, generator_params(state), has_aux=True)

  rec = {"l1": losses.l1, "l2": losses.l2}[s1.rec_loss]  # l2: not the reference (README).

  def reconstruction_loss(outs, target, lpips_weights):
    fake, mu, logvar = outs[:3]
    terms = {s1.rec_loss: rec(fake, target), "kl": losses.kl_standard_normal(mu, logvar)}
    if s1.rec_loss != "l1":
      terms["l1"] = losses.l1(fake, target)  # Logged whichever loss trains.
    loss = s1.w_rec * terms[s1.rec_loss] + s1.w_kl * terms["kl"]
    if unmixed:
      terms["rec_unmixed"] = rec(outs[3], target)
      loss = loss + s1.w_rec * s1.w_rec_unmixed * terms["rec_unmixed"]
    if s1.w_percep > 0:
      terms["lpips"] = losses.perceptual(lpips_weights, fake, target)
      loss = loss + s1.w_percep * terms["lpips"]
    return loss, terms

  def apply_generator(state, grads, dec_upd, terms):
    g_params = generator_params(state)  # The D step leaves them as they were.
    updates, opt_g = tx.update(grads, state["opt_g"], g_params)
    g_params = optax.apply_updates(g_params, updates)
    new = dict(state, step=state["step"] + 1, opt_g=opt_g,
               encoder=with_params(state["encoder"], g_params["encoder"]),
               decoder={**with_params(state["decoder"], g_params["decoder"]), **dec_upd})
    return new, dict(terms, g_grad_norm=common.global_norm(grads), lr=schedule(state["step"]))

  def warmup_micro_grads(state: State, video: jax.Array, lpips_weights: Any, j):
    """Microbatch j's share of the warm-up step's generator gradient, its fakes and terms."""
    eps = microbatch.take(z_noise(step_keys(state)[0], video), microbatches, j)
    video = microbatch.take(video, microbatches, j)
    outs, vjp_fn, dec_upd = generator_forward(state, video, eps)

    def g_loss(outs):
      loss, terms = reconstruction_loss(outs, video[:, 1:], lpips_weights)
      return loss / microbatches, dict(terms, g_loss=loss)

    out_grads, terms = jax.grad(g_loss, has_aux=True)(outs)
    return vjp_fn(out_grads)[0], (dec_upd, terms, jax.lax.stop_gradient(outs[0]))

  def finish_warmup(state: State, grads: Any, aux: tuple):
    dec_upd, terms, fake = aux
    return (*apply_generator(state, grads, dec_upd, terms), fake)

  def warmup_step(state: State, video: jax.Array, lpips_weights: Any):
    grads, aux = microbatch.accumulate(
        lambda j: warmup_micro_grads(state, video, lpips_weights, j), microbatches)
    return finish_warmup(state, grads, aux)

  def update_discriminators(state: State, target: jax.Array, fake: jax.Array, start: jax.Array,
                            idx: jax.Array) -> tuple[State, dict, State]:
    """One optimiser step of D_T (hinge + R1, on the step's window) and D_S (hinge, on the
    step's frames) on detached fakes; also returns the discriminators G is scored by."""
    real_win, fake_win = window(target, start, s1.dt_window), window(fake, start, s1.dt_window)
    real_frames, fake_frames = frames(target)[idx], frames(fake)[idx]
    n = real_frames.shape[0]

    def dt_loss(params):
      variables = with_params(state["d_t"], params)

      def real_logits(x):
        (logits, _), upd = dt_m.apply(variables, x, True, mutable=[SPECTRAL])
        return logits, upd

      r1, real, upd = losses.r1_penalty(real_logits, real_win, has_aux=True)
      fake_logits, _ = dt_m.apply({**variables, **upd}, fake_win)
      hinge = losses.hinge_d(real, fake_logits)
      return hinge + w_r1 * r1, ({"dt_hinge": hinge, "r1": r1, "dt_real": jnp.mean(real),
                                  "dt_fake": jnp.mean(fake_logits)}, upd)

    def ds_loss(params):
      both = jnp.concatenate([real_frames, fake_frames])
      logits, upd = ds_m.apply(with_params(state["d_s"], params), both, True, mutable=[SPECTRAL])
      hinge = losses.hinge_d(logits[:n], logits[n:])
      return hinge, ({"ds_hinge": hinge, "ds_real": jnp.mean(logits[:n]),
                      "ds_fake": jnp.mean(logits[n:])}, upd)

    new, metrics = dict(state), {}
    for key, opt_key, fn in (("d_t", "opt_dt", dt_loss), ("d_s", "opt_ds", ds_loss)):
      params = state[key]["params"]
      grads, (terms, upd) = jax.grad(fn, has_aux=True)(params)
      updates, new[opt_key] = tx_d.update(grads, state[opt_key], params)
      new[key] = {**with_params(state[key], optax.apply_updates(params, updates)), **upd}
      metrics.update(terms)
      metrics[f"{key}_grad_norm"] = common.global_norm(grads)
    return new, metrics, (new if d_first else state)

  def temporal_terms(judge: State, fake: jax.Array, target: jax.Array, start: jax.Array):
    """The generator's D_T terms on the step's window of these videos, scored by `judge`."""
    _, real_feats = dt_m.apply(judge["d_t"], window(target, start, s1.dt_window))
    fake_logits, fake_feats = dt_m.apply(judge["d_t"], window(fake, start, s1.dt_window))
    return {"g_t": losses.generator_adversarial(fake_logits),
            "fm": losses.feature_matching(real_feats, fake_feats)}

  def step_draws(state: State, video: jax.Array):
    """(k_z, D_T window start, D_S frame indices) of the step `state` is about to take."""
    k_z, k_win, k_frames = step_keys(state)
    target = video[:, 1:]
    return (k_z, window_start(k_win, target.shape[1], s1.dt_window),
            frame_indices(k_frames, target, s1.ds_num_frames))

  def adversarial_step(state: State, video: jax.Array, lpips_weights: Any):
    if microbatches > 1:
      return adversarial_step_microbatched(state, video, lpips_weights)
    k_z, start, idx = step_draws(state, video)
    target = video[:, 1:]
    outs, vjp_fn, dec_upd = generator_forward(state, video, z_noise(k_z, video))
    fake = jax.lax.stop_gradient(outs[0])
    after_d, d_metrics, judge = update_discriminators(state, target, fake, start, idx)

    def g_loss(outs):
      loss, terms = reconstruction_loss(outs, target, lpips_weights)
      terms.update(temporal_terms(judge, outs[0], target, start))
      terms["g_s"] = losses.generator_adversarial(ds_m.apply(judge["d_s"], frames(outs[0])[idx]))
      loss = loss + terms["g_s"] + s1.w_t * terms["g_t"] + s1.w_fm * terms["fm"]
      return loss, dict(terms, g_loss=loss)

    out_grads, terms = jax.grad(g_loss, has_aux=True)(outs)
    new, metrics = apply_generator(after_d, vjp_fn(out_grads)[0], dec_upd, terms)
    return new, {**metrics, **d_metrics}, fake

  def micro_fake(state: State, video: jax.Array, j):
    """Microbatch j's fakes, for the D step: forward only, no activations kept."""
    eps = microbatch.take(z_noise(step_draws(state, video)[0], video), microbatches, j)
    fake = generator_forward(state, microbatch.take(video, microbatches, j), eps)[0][0]
    return jax.lax.stop_gradient(fake)

  def discriminator_phase(state: State, video: jax.Array, fake: jax.Array):
    _, start, idx = step_draws(state, video)
    return update_discriminators(state, video[:, 1:], fake, start, idx)

  def adv_micro_grads(state: State, judge: State, video: jax.Array, fake: jax.Array,
                      lpips_weights: Any, j):
    """Microbatch j's share of the adversarial generator gradient, scored by `judge`'s
    discriminators. D_S scores frames drawn across the whole batch: each microbatch scores
    them all with only its own frames live."""
    k_z, start, idx = step_draws(state, video)
    eps = microbatch.take(z_noise(k_z, video), microbatches, j)
    video = microbatch.take(video, microbatches, j)
    outs, vjp_fn, dec_upd = generator_forward(state, video, eps)
    target, fake_split = video[:, 1:], microbatch.split(fake, microbatches)

    def g_loss(outs):
      loss, terms = reconstruction_loss(outs, target, lpips_weights)
      terms.update(temporal_terms(judge, outs[0], target, start))
      loss = loss + s1.w_t * terms["g_t"] + s1.w_fm * terms["fm"]
      live = microbatch.join(jax.lax.dynamic_update_index_in_dim(fake_split, outs[0], j, 0))
      terms["g_s"] = losses.generator_adversarial(ds_m.apply(judge["d_s"], frames(live)[idx]))
      total = loss / microbatches + terms["g_s"]  # g_s: this microbatch's frames' share.
      return total, dict(terms, g_loss=loss + terms["g_s"])

    out_grads, terms = jax.grad(g_loss, has_aux=True)(outs)
    return vjp_fn(out_grads)[0], (dec_upd, terms)

  def finish_adversarial(after_d: State, d_metrics: dict, grads: Any, aux: tuple):
    new, metrics = apply_generator(after_d, grads, *aux)
    return new, {**metrics, **d_metrics}

  def adversarial_step_microbatched(state: State, video: jax.Array, lpips_weights: Any):
    """The same update as `adversarial_step`, computed `microbatches` videos at a time.

    The discriminators must see every fake before the generator is scored by them, so the
    generator runs forward twice: once, without keeping activations, for the fakes the D step
    needs; once per microbatch with its backward. Every loss is a mean over equal microbatches,
    so summing each microbatch's share of the gradient gives the whole batch's.
    """
    fake = microbatch.join(jax.lax.map(lambda j: micro_fake(state, video, j),
                                       jnp.arange(microbatches)))
    after_d, d_metrics, judge = discriminator_phase(state, video, fake)
    grads, aux = microbatch.accumulate(
        lambda j: adv_micro_grads(state, judge, video, fake, lpips_weights, j), microbatches)
    return (*finish_adversarial(after_d, d_metrics, grads, aux), fake)

  def eval_fn(state: State, video: jax.Array, rng: jax.Array):
    """Reconstruction from the posterior mean, a sample from the N(0, I) prior, per-video PSNR
    and per-video z-use.

    z-use is the mean |decode(x0, mu) - decode(x0, mu of another video)|: it falls to ~0 when the
    decoder ignores z (posterior collapse), which PSNR alone cannot tell from slow learning.
    """
    x0, target = video[:, 0], video[:, 1:]
    mu, _, _ = enc_m.apply(state["encoder"], target, None, x0)
    recon = dec_m.apply(state["decoder"], x0, mu)
    prior = dec_m.apply(state["decoder"], x0, jax.random.normal(rng, mu.shape))
    swapped = dec_m.apply(state["decoder"], x0, jnp.roll(mu, 1, axis=0))
    z_use = jnp.mean(jnp.abs(recon - swapped), axis=tuple(range(1, recon.ndim)))
    return recon, prior, common.psnr(recon, target), z_use

  def val_recon(models_state: State, video: jax.Array, rng: jax.Array):
    """Validation: the reconstruction from a posterior SAMPLE (what the reference's best_PFVD
    scores) and the per-video PSNR of the posterior-mean reconstruction."""
    x0, target = video[:, 0], video[:, 1:]
    z, mu, _ = enc_m.apply(models_state["encoder"], target, rng, x0)
    sampled = dec_m.apply(models_state["decoder"], x0, z)
    return sampled, common.psnr(dec_m.apply(models_state["decoder"], x0, mu), target)

  R, B = common.REPLICATED, common.BATCH

  def generator_step(step):
    """(state, video) -> ...; the LPIPS weights are a bound jit *argument*: closed over, XLA
    would bake VGG-16's 14.7M weights into each compiled step as constants."""
    jitted = common.mesh_jit(step, mesh, (R, B, R), (R, R, B), donate_argnums=(0,))
    return common.BoundTrailingArgs(jitted, lpips_params)

  steps = {
      "g_warmup": generator_step(warmup_step),
      "adv": generator_step(adversarial_step),
      "eval": common.mesh_jit(eval_fn, mesh, (R, B, R), (B, B, B, B)),
      "val_recon": common.mesh_jit(val_recon, mesh, (R, B, R), (B, B)),
  }
  if microbatches > 1 and microbatch.resolve_loop(s1.get("microbatch_loop", "auto")) == "host":
    # The same steps with the microbatch loop in Python: one jitted call per microbatch.
    j_fake = common.mesh_jit(micro_fake, mesh, (R, B, R), B)
    d_keys = ("d_t", "d_s", "opt_dt", "opt_ds")

    def updated_discriminators(state: State, video: jax.Array, fake: jax.Array):
      """Only what the D step changes: returning the whole state would copy the generator
      and its optimiser (bair: 3 GB) for nothing."""
      after_d, d_metrics, _ = discriminator_phase(state, video, fake)
      return {k: after_d[k] for k in d_keys}, d_metrics

    j_disc = common.mesh_jit(updated_discriminators, mesh, (R, B, B), (R, R))
    j_adv = common.mesh_jit(adv_micro_grads, mesh, (R, R, B, B, R, R), R)
    j_warm = common.mesh_jit(warmup_micro_grads, mesh, (R, B, R, R), (R, (R, R, B)))
    j_finish_adv = common.mesh_jit(finish_adversarial, mesh, (R,) * 4, (R, R),
                                   donate_argnums=(0,))
    j_finish_warm = common.mesh_jit(finish_warmup, mesh, (R, R, (R, R, B)), (R, R, B),
                                    donate_argnums=(0,))

    def warmup_on_host(state: State, video: jax.Array, lpips_weights: Any):
      grads, aux = microbatch.accumulate_on_host(
          lambda j: j_warm(state, video, lpips_weights, j), microbatches)
      return j_finish_warm(state, grads, aux)

    def adversarial_on_host(state: State, video: jax.Array, lpips_weights: Any):
      fake = microbatch.join(jnp.stack([j_fake(state, video, j) for j in range(microbatches)]))
      d_parts, d_metrics = j_disc(state, video, fake)
      after_d = {**state, **d_parts}
      judge = after_d if d_first else state
      grads, aux = microbatch.accumulate_on_host(
          lambda j: j_adv(state, judge, video, fake, lpips_weights, j), microbatches)
      return (*j_finish_adv(after_d, d_metrics, grads, aux), fake)

    steps["g_warmup"] = common.BoundTrailingArgs(warmup_on_host, lpips_params)
    steps["adv"] = common.BoundTrailingArgs(adversarial_on_host, lpips_params)
  return steps
