"""Stage-1 models, training state and the per-step random draws (SPEC §3.5).

The state is a plain dict so checkpoints split naturally into 'models' (what stage 2 and
sampling restore) and 'train' (optimisers, discriminators, rng):
  step, rng, encoder, decoder, d_t, d_s  (Flax variables: {'params', 'spectral'?}),
  opt_g (over {'encoder', 'decoder'} params), opt_dt, opt_ds.
The steps that update it are in stage1_steps.py.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from i2v_flax import config_lib, errors
from i2v_flax.models.decoder import Decoder, make_decoder
from i2v_flax.models.discriminators import (SpatialDiscriminator, TemporalDiscriminator,
                                            make_spatial_discriminator,
                                            make_temporal_discriminator)
from i2v_flax.models.encoder import Encoder, make_encoder
from i2v_flax.models.layers import spatial_z_channels
from i2v_flax.train import optimizers

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
  if s1.get("w_rec_unmixed", 0.0) > 0 and s1.get("dec_output", "rgb") == "rgb":
    raise errors.InvalidInput(
        "stage1.w_rec_unmixed > 0 scores the frames before they are mixed with x_0, but "
        "stage1.dec_output='rgb' mixes nothing. Fix: --config.stage1.dec_output=blend or "
        "--config.stage1.w_rec_unmixed=0")
  if s1.get("dec_local_style", False) and not s1.get("z_spatial", False):
    raise errors.InvalidInput(
        "stage1.dec_local_style reads z as a 4 x 4 map. Fix: --config.stage1.z_spatial=True "
        "or --config.stage1.dec_local_style=False")
  if s1.get("z_spatial", False):
    spatial_z_channels(s1.z_dim)


def make_optimizer(config: ml_collections.ConfigDict, shapes_only: bool = False,
                   discriminator: bool = False
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """torch Adam (coupled wd) + per-epoch decay. Each optimiser counts its own updates, so the
  discriminators' lr decays from the end of warm-up, as the reference steps their schedulers
  only after its pretrain epochs; `stage1.lr_cooldown_steps` (demo) anneals every lr to 0 at
  the run's last step, so the discriminators' cooldown starts warm-up updates earlier in their
  count. `shapes_only`: for abstract states (see stage2_steps)."""
  s1 = config.stage1
  steps = config_lib.steps_per_epoch(s1, default=1 if shapes_only else None)
  cooldown, start = int(s1.get("lr_cooldown_steps", 0)), 0
  if cooldown > 0 and not shapes_only:
    total = config_lib.steps(s1)
    cooldown = min(cooldown, total)  # A shorter run than the cooldown anneals all the way.
    warmup = steps if s1.warmup_steps < 0 else int(s1.warmup_steps)  # -1: one epoch.
    start = total - cooldown - (warmup if discriminator else 0)
  return optimizers.adam_coupled_wd(s1.lr, s1.b1, s1.b2, s1.weight_decay, steps,
                                    s1.lr_decay_per_epoch, cooldown_start=start,
                                    cooldown_steps=cooldown)


def frames(video: jax.Array) -> jax.Array:
  return video.reshape((-1,) + video.shape[2:])


def frame_indices(key: jax.Array, video: jax.Array, n: int) -> jax.Array:
  """n indices into the (B*T) frames of `video`, drawn WITH replacement (the reference's
  np.random.randint), so n may exceed B*T."""
  return jax.random.randint(key, (n,), 0, video.shape[0] * video.shape[1])


def step_keys(state: State) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(k_z, k_window, k_frames) of the step `state` is about to take (tests reuse them)."""
  k_z, k_win, k_frames = jax.random.split(jax.random.fold_in(state["rng"], state["step"]), 3)
  return k_z, k_win, k_frames


def window_start(key: jax.Array, num_frames: int, length: int) -> jax.Array:
  return jax.random.randint(key, (), 0, num_frames - length + 1)


def window(video: jax.Array, start: jax.Array, length: int) -> jax.Array:
  return jax.lax.dynamic_slice_in_dim(video, start, length, axis=1)


def make_init_fn(config: ml_collections.ConfigDict, models: Stage1Models
                 ) -> Callable[[jax.Array, jax.Array], State]:
  """(video (B, 17, H, W, 3), rng) -> initial state.

  D_S's ActNorm initialises from GENERATED frames of the fresh encoder/decoder (the reference's
  first D_S call is on the detached fakes; it runs in train mode, so the convs' power iteration
  comes first, hence `update_stats=True` here too).
  """
  s1 = config.stage1
  tx, _ = make_optimizer(config, shapes_only=True)

  def init(video: jax.Array, rng: jax.Array) -> State:
    k_init, k_state = jax.random.split(rng)
    # Parameter init draws hundreds of random tensors; threefry's unrolled hash makes XLA-CPU
    # compile that for minutes, the 'rbg' generator compiles in seconds. Step-time randomness
    # stays threefry (sharding-invariant, so 1 device == 8 devices).
    rbg = jax.random.wrap_key_data(jax.random.bits(k_init, (4,), jnp.uint32), impl="rbg")
    k_enc, k_z, k_dec, k_dt, k_ds = jax.random.split(rbg, 5)
    k_frames = jax.random.fold_in(k_state, 0)
    x0, target = video[:, 0], video[:, 1:]
    enc = models.encoder.init(k_enc, target, k_z, x0)
    z, _, _ = models.encoder.apply(enc, target, k_z, x0)
    dec = models.decoder.init(k_dec, x0, z)
    fake = jax.lax.stop_gradient(models.decoder.apply(dec, x0, z))
    d_t = models.d_t.init(k_dt, target[:, :s1.dt_window])
    idx = frame_indices(k_frames, fake, s1.ds_num_frames)
    d_s = models.d_s.init(k_ds, frames(fake)[idx], True)
    g_params = {"encoder": enc["params"], "decoder": dec["params"]}
    return {"step": jnp.zeros((), jnp.int32), "rng": k_state, "encoder": enc, "decoder": dec,
            "d_t": d_t, "d_s": d_s, "opt_g": tx.init(g_params),
            "opt_dt": tx.init(d_t["params"]), "opt_ds": tx.init(d_s["params"])}

  return init


def generator_params(state: State) -> dict:
  return {k: state[k]["params"] for k in MODEL_KEYS}


def with_params(variables: dict, params: Any) -> dict:
  return {**variables, "params": params}
