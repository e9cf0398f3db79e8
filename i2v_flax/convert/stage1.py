"""The authors' stage-1 PyTorch models -> i2v_flax variables, and their parity runners.

Covers the encoder q_phi (`best_PFVD_ENC.pth`), the decoder (`best_PFVD_GEN.pth`), and the two
discriminators (`latest_checkpoint_DISC_{t,s}.pth`, only needed to resume GAN training). Key
mapping and layouts: shared/reference/MAPPING.md, Part 1. The only non-mechanical step is the
decoder's fc: torch reshapes its output channel-major to (16nf, 1, 4, 4), we reshape to
(1, 4, 4, 16nf), so the Dense columns (and bias) are permuted once here.

Modules are always built from a config (the reference constructor's dict, or ours), never from
the published widths, and the converter checks every shape against the module built from it.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from i2v_flax.convert import torch_layout as tl
from i2v_flax.convert.torch_layout import ConversionError, Path
from i2v_flax.models.decoder import Decoder
from i2v_flax.models.discriminators import SpatialDiscriminator, TemporalDiscriminator
from i2v_flax.models.encoder import Encoder
from i2v_flax.models.layers import SPECTRAL, resolve_conv3d_impl

_KEY = jax.random.PRNGKey(0)
_F32 = jnp.float32


# ---------------------------------------------------------------------------- torch names
_RESNET_TOP = {"stem": "conv1", "stem_norm": "norm1", "mu": "conv_mu", "logvar": "conv_var",
               "head": "fc"}
_RESNET_SUB = {"conv0": "conv1", "norm0": "bn1", "conv1": "conv2", "norm1": "bn2",
               "shortcut": "downsample.0", "shortcut_norm": "downsample.1"}
_DEC_TOP = {"fc": "fc", "head": "head_0", "out": "conv_img"}
_DEC_SUB = {("conv0",): "conv_0", ("conv1",): "conv_1", ("shortcut",): "conv_s",
            ("shortcut_norm",): "norm_s.bn", ("spade", "shared"): "norm_0.conv",
            ("spade", "gamma"): "norm_0.conv_gamma", ("spade", "beta"): "norm_0.conv_beta",
            ("adain", "style"): "norm_1.linear"}
_DS_CONV = (0, 2, 5, 8, 11)  # state_dict indices `main.{i}` of D_S's convs ...
_DS_ACTNORM = (None, 3, 6, 9)  # ... and of its ActNorms (actnorm1..3).


def _unnamed(module: Path) -> ConversionError:
  return ConversionError(f"No torch name for the Flax module {'/'.join(module)}: the model has a "
                         "layer the reference does not (e.g. config.stage1.dec_coords=True). "
                         "Fix: convert into the paper's architecture.")


def resnet_module_key(module: Path) -> str:
  """Encoder / D_T module path -> torch prefix ('stage1_0/shortcut' -> 'layer.1.0.downsample.0')."""
  if len(module) == 1 and module[0] in _RESNET_TOP:
    return _RESNET_TOP[module[0]]
  m = re.fullmatch(r"stage(\d+)_(\d+)", module[0])
  if m and len(module) == 2 and module[1] in _RESNET_SUB:
    return f"layer.{m[1]}.{m[2]}.{_RESNET_SUB[module[1]]}"
  raise _unnamed(module)


def decoder_module_key(module: Path) -> str:
  """Decoder module path -> torch prefix ('g1/spade/gamma' -> 'g_1.norm_0.conv_gamma')."""
  top = module[0]
  if len(module) == 1 and top in _DEC_TOP:
    return _DEC_TOP[top]
  m = re.fullmatch(r"g(\d+)", top)
  block = "head_0" if top == "head" else (f"g_{m[1]}" if m else None)
  if block is None or tuple(module[1:]) not in _DEC_SUB:
    raise _unnamed(module)
  return f"{block}.{_DEC_SUB[tuple(module[1:])]}"


def spatial_disc_module_key(module: Path) -> str:
  """D_S module path -> torch prefix ('conv3' -> 'main.8', 'actnorm2' -> 'main.6')."""
  m = re.fullmatch(r"(conv|actnorm)(\d)", module[0]) if len(module) == 1 else None
  if not m:
    raise _unnamed(module)
  idx = (_DS_CONV if m[1] == "conv" else _DS_ACTNORM)[int(m[2])]
  return f"main.{idx}"


def _name_fn(module_key: Callable[[Path], str], template: Mapping[Path, Any]
             ) -> Callable[[Path], str]:
  sn = tl.spectral_modules(template)
  return lambda path: f"{module_key(path[1:-1])}.{tl.leaf_name(path, sn)}"


# ---------------------------------------------------------------------------- templates
def _template(module: Any, *shapes: tuple[int, ...]) -> dict[Path, tuple[int, ...]]:
  args = [jax.ShapeDtypeStruct(s, _F32) for s in shapes]
  return tl.abstract_template(jax.eval_shape(module.init, _KEY, *args))


def _decoder_rule(key: str, path: Path, shape: tuple[int, ...], template) -> tl.Rule:
  """fc: channel-major (16nf, 1, 4, 4) torch columns -> our channel-minor (1, 4, 4, 16nf)."""
  if path[:2] != ("params", "fc"):
    return tl.standard_rule(key, path, shape, template)
  if path[-1] == "kernel":
    z, n = shape
    c = n // 16
    return tl.Rule(key, (n, z), lambda w: np.ascontiguousarray(
        w.T.reshape(z, c, 4, 4).transpose(0, 2, 3, 1).reshape(z, n)))
  c = shape[0] // 16
  return tl.Rule(key, shape, lambda b: b.reshape(c, 4, 4).transpose(1, 2, 0).reshape(-1))


def _hint(what: str, fields: str) -> str:
  return (f"Fix: check that the file is the {what} and that the config's {fields} match it "
          "(i2v_flax.convert infers widths from the file; strides and upsampling come from "
          "config_stage1.yaml or --config).")


def convert_encoder(state_dict: Mapping[str, np.ndarray], encoder: Encoder, resolution: int,
                    num_frames: int = 16) -> dict:
  """`best_PFVD_ENC.pth` state_dict -> Encoder variables ({'params'})."""
  t = _template(encoder, (1, num_frames, resolution, resolution, 3))
  return tl.convert(state_dict, t, _name_fn(resnet_module_key, t), "stage-1 encoder",
                    _hint("encoder (best_PFVD_ENC.pth)", "stage1.z_dim / enc_widths / strides"),
                    ignore=tl.ignore_integer_buffers)


def convert_decoder(state_dict: Mapping[str, np.ndarray], decoder: Decoder,
                    resolution: int) -> dict:
  """`best_PFVD_GEN.pth` state_dict -> Decoder variables ({'params', 'spectral'})."""
  t = _template(decoder, (1, resolution, resolution, 3), (1, _decoder_z_dim(decoder, state_dict)))
  return tl.convert(state_dict, t, _name_fn(decoder_module_key, t), "stage-1 decoder",
                    _hint("decoder (best_PFVD_GEN.pth)", "stage1.z_dim / dec_nf / dec_up_s"),
                    ignore=tl.ignore_integer_buffers, rule_fn=_decoder_rule)


def _decoder_z_dim(decoder: Decoder, state_dict: Mapping[str, np.ndarray]) -> int:
  """z_dim is an input of our decoder (not a field): read it from fc.weight (out, z)."""
  w = tl.strip_module_prefix(state_dict).get("fc.weight")
  if w is None or np.ndim(w) != 2:
    raise ConversionError("The decoder state_dict has no 2-D 'fc.weight' (Linear z -> 256nf). "
                          "Fix: pass the generator file best_PFVD_GEN.pth.")
  return int(np.shape(w)[1])


def convert_temporal_discriminator(state_dict: Mapping[str, np.ndarray],
                                   d_t: TemporalDiscriminator, resolution: int,
                                   window: int = 12) -> dict:
  """`latest_checkpoint_DISC_t.pth` state_dict -> TemporalDiscriminator variables."""
  t = _template(d_t, (1, window, resolution, resolution, 3))
  return tl.convert(state_dict, t, _name_fn(resnet_module_key, t), "temporal discriminator",
                    _hint("temporal discriminator", "stage1.dt_widths / dt_stride_s"),
                    ignore=tl.ignore_integer_buffers)


def convert_spatial_discriminator(state_dict: Mapping[str, np.ndarray],
                                  d_s: SpatialDiscriminator, resolution: int) -> dict:
  """`latest_checkpoint_DISC_s.pth` state_dict -> SpatialDiscriminator variables."""
  t = _template(d_s, (2, resolution, resolution, 3))
  return tl.convert(state_dict, t, _name_fn(spatial_disc_module_key, t), "spatial discriminator",
                    _hint("spatial discriminator", "stage1.ds_width"),
                    ignore=tl.ignore_integer_buffers)


def spectral_to_torch(spectral: Mapping[str, Any], params: Mapping[str, Any],
                      module_key: Callable[[Path], str]) -> dict[str, np.ndarray]:
  """Our 'spectral' collection -> {torch key 'X.weight_u' / 'X.weight_v': torch-layout array}."""
  from flax import traverse_util
  flat_p = traverse_util.flatten_dict(dict(params))
  out = {}
  for path, value in traverse_util.flatten_dict(dict(spectral)).items():
    prefix = module_key(path[:-1])
    if path[-1] == "u":
      out[f"{prefix}.weight_u"] = np.asarray(value)
    else:
      kshape = tuple(flat_p[path[:-1] + ("kernel",)].shape)
      out[f"{prefix}.weight_v"] = tl.sn_v_to_torch(np.asarray(value), kshape)
  return out


# ---------------------------------------------------------------------------- reference configs
def _require(cfg: Mapping[str, Any], key: str, allowed: Any, what: str) -> None:
  if key in cfg and cfg[key] != allowed:
    raise ConversionError(f"{what} with {key}={cfg[key]!r} has no i2v_flax counterpart (only "
                          f"{key}={allowed!r}). Fix: convert a model with the paper's "
                          "architecture.")


def encoder_from_reference(cfg: Mapping[str, Any], impl: str = "native") -> Encoder:
  """Encoder for the reference constructor dict (config_stage1.yaml section 'Encoder').

  `impl` is the 3-D conv implementation; 'native' compiles fastest for one-off parity runs."""
  _require(cfg, "res_type_encoder", "resnet18", "A stage-1 encoder")
  _require(cfg, "use_max_pool", False, "A stage-1 encoder")
  return Encoder(widths=tuple(cfg["channels"]), stride_t=tuple(cfg["stride_t"]),
                 stride_s=tuple(cfg["stride_s"]), z_dim=int(cfg["z_dim"]),
                 impl=resolve_conv3d_impl(impl))


def decoder_from_reference(cfg: Mapping[str, Any], impl: str = "native") -> Decoder:
  """Decoder for the reference 'Decoder' dict: nf = channel_factor; x2 in T, H, W before g_0..g_2,
  then (upsample_t[i], upsample_s[i]) before g_3 and g_4."""
  up_t, up_s = [int(u) for u in cfg["upsample_t"]], [int(u) for u in cfg["upsample_s"]]
  return Decoder(nf=int(cfg["channel_factor"]), up_t=(2, 2, 2, *up_t), up_s=(2, 2, 2, *up_s),
                 spectral_norm=bool(cfg.get("spectral_norm", True)),
                 impl=resolve_conv3d_impl(impl))


def temporal_discriminator_from_reference(cfg: Mapping[str, Any], impl: str = "native"
                                          ) -> TemporalDiscriminator:
  """D_T for the reference 'Discriminator_Temporal' dict (temporal stride 2 in every stage)."""
  _require(cfg, "res_type_encoder", "resnet18", "A temporal discriminator")
  _require(cfg, "use_max_pool", True, "A temporal discriminator")
  if any(int(s) != 2 for s in cfg.get("stride_t", (2, 2, 2, 2))):
    raise ConversionError(f"A temporal discriminator with stride_t={cfg['stride_t']} has no "
                          "i2v_flax counterpart (stride 2 in every stage).")
  return TemporalDiscriminator(widths=tuple(cfg["channels"]), stride_s=tuple(cfg["stride_s"]),
                               spectral_norm=bool(cfg.get("spectral_norm", True)),
                               impl=resolve_conv3d_impl(impl))


def spatial_discriminator_from_reference(cfg: Mapping[str, Any]) -> SpatialDiscriminator:
  """D_S for the reference 'Discriminator_Patch' dict (3 layers, ActNorm, RGB input)."""
  for key, allowed in (("n_layers", 3), ("use_actnorm", True), ("in_channels", 3)):
    _require(cfg, key, allowed, "A spatial discriminator")
  return SpatialDiscriminator(width=int(cfg["ndf"]),
                              spectral_norm=bool(cfg.get("spectral_norm", True)))


def stage1_overrides_from_reference(sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
  """Our `config.stage1` fields from config_stage1.yaml's sections (those present)."""
  out: dict[str, Any] = {}
  enc, dec = sections.get("Encoder"), sections.get("Decoder")
  if enc:
    out.update(z_dim=int(enc["z_dim"]), enc_widths=tuple(enc["channels"]),
               enc_stride_t=tuple(enc["stride_t"]), enc_stride_s=tuple(enc["stride_s"]))
  if dec:
    d = decoder_from_reference(dec)
    out.update(dec_nf=d.nf, dec_up_t=tuple(d.up_t), dec_up_s=tuple(d.up_s),
               spectral_norm=d.spectral_norm)
  if sections.get("Discriminator_Temporal"):
    dt = sections["Discriminator_Temporal"]
    out.update(dt_widths=tuple(dt["channels"]), dt_stride_s=tuple(dt["stride_s"]))
  if sections.get("Discriminator_Patch"):
    out.update(ds_width=int(sections["Discriminator_Patch"]["ndf"]))
  return out


def stage1_overrides_from_state_dicts(encoder_sd: Mapping[str, np.ndarray],
                                      decoder_sd: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Widths that the files themselves fix (strides and upsampling cannot be read from shapes)."""
  enc, dec = tl.strip_module_prefix(encoder_sd), tl.strip_module_prefix(decoder_sd)
  need = ["conv1.weight", "conv_mu.weight"] + [f"layer.{s}.0.conv1.weight" for s in range(4)]
  for key in need:
    if key not in enc:
      raise ConversionError(f"The encoder file lacks '{key}' (3-D ResNet-18 of the reference). "
                            "Fix: pass best_PFVD_ENC.pth(.tar), not another model's file.")
  for key in ("fc.weight", "conv_img.weight", "head_0.norm_0.conv.weight"):
    if key not in dec:
      raise ConversionError(f"The decoder file lacks '{key}'. Fix: pass best_PFVD_GEN.pth, not "
                            "another model's file.")
  return {
      "z_dim": int(enc["conv_mu.weight"].shape[0]),
      "enc_widths": (int(enc["conv1.weight"].shape[0]),) + tuple(
          int(enc[f"layer.{s}.0.conv1.weight"].shape[0]) for s in range(4)),
      "dec_nf": int(dec["conv_img.weight"].shape[1]),
      "spade_hidden": int(dec["head_0.norm_0.conv.weight"].shape[0]),
      "spectral_norm": "head_0.conv_0.weight_orig" in dec,
  }


# ---------------------------------------------------------------------------- parity runners
def _ncthw(x: Any) -> np.ndarray:
  return np.asarray(x).transpose(0, 4, 1, 2, 3)


def _captured(inter: Mapping[str, Any], *path: str) -> np.ndarray:
  node = inter["intermediates"]
  for p in path:
    node = node[p]
  return node["__call__"][0]


def _sn_outputs(prefix: str, fx: Any, spectral: Mapping, params: Mapping,
                module_key: Callable[[Path], str]) -> dict[str, np.ndarray]:
  """u, v after a train-mode call as `<prefix>/<torch key>`, only those the fixture stores."""
  wanted = {o["name"] for o in fx.meta["outputs"]}
  return {f"{prefix}/{k}": v for k, v in spectral_to_torch(spectral, params, module_key).items()
          if f"{prefix}/{k}" in wanted}


def run_encoder(fx: Any) -> dict[str, np.ndarray]:
  enc = encoder_from_reference(fx.config)
  video = fx.inputs["video"].transpose(0, 2, 3, 4, 1)
  variables = convert_encoder(fx.state_dict, enc, video.shape[2], video.shape[1])
  last = f"stage{len(enc.stride_s) - 1}_1"

  @jax.jit
  def fn(variables, video, eps):
    (_, mu, logvar), inter = enc.apply(
        variables, video, capture_intermediates=lambda m, _: m.name == last,
        mutable=["intermediates"])
    z = mu + jnp.exp(0.5 * logvar) * eps  # torch's own draw, fed in.
    return mu, logvar, z, _captured(inter, last)

  mu, logvar, z, trunk = jax.device_get(fn(variables, video, fx.output("output/eps")))
  return {"output/mu": mu, "output/logvar": logvar, "output/z": z,
          "intermediate/trunk": _ncthw(trunk)}


def run_decoder(fx: Any) -> dict[str, np.ndarray]:
  dec = decoder_from_reference(fx.config)
  x0, z = fx.inputs["x0"].transpose(0, 2, 3, 1), fx.inputs["z"]
  variables = convert_decoder(fx.state_dict, dec, x0.shape[1])
  picked = (("fc",), ("head", "spade"), ("head", "adain"), ("head",), ("g0",))

  @jax.jit  # One compile for everything: far faster than op-by-op on a CPU.
  def fn(variables, x0, z):
    video, inter = dec.apply(variables, x0, z, False, capture_intermediates=True,
                             mutable=["intermediates"])
    _, upd = dec.apply(variables, x0, z, True, mutable=[SPECTRAL])
    return video, [_captured(inter, *p) for p in picked], upd[SPECTRAL]

  video, (fc, spade, adain, head, g0), spectral = jax.device_get(fn(variables, x0, z))
  b = fc.shape[0]  # fc: (B, 4*4*16nf) in (h, w, c) order -> torch's (c, h, w) order.
  out = {"output/video": video.transpose(0, 1, 4, 2, 3),
         "intermediate/fc_out": fc.reshape(b, 4, 4, -1).transpose(0, 3, 1, 2).reshape(b, -1),
         "intermediate/head_0.spade_out": _ncthw(spade),
         "intermediate/head_0.adain_out": _ncthw(adain),
         "intermediate/head_0.out": _ncthw(head), "intermediate/g_0.out": _ncthw(g0)}
  out.update(_sn_outputs("train_step_sn", fx, spectral, variables["params"], decoder_module_key))
  return out


def run_temporal_discriminator(fx: Any) -> dict[str, np.ndarray]:
  d_t = temporal_discriminator_from_reference(fx.config)
  video = fx.inputs["video"].transpose(0, 2, 3, 4, 1)
  variables = convert_temporal_discriminator(fx.state_dict, d_t, video.shape[2], video.shape[1])

  @jax.jit
  def fn(variables, video):
    logits, feats = d_t.apply(variables, video, False)
    (train_logits, _), upd = d_t.apply(variables, video, True, mutable=[SPECTRAL])
    return logits, feats, train_logits, upd[SPECTRAL]

  logits, feats, train_logits, spectral = jax.device_get(fn(variables, video))
  out = {"output/logits": logits[:, None],
         "train_step/logits_after_train_mode_forward": train_logits[:, None]}
  out.update({f"output/feature_{i}": _ncthw(f) for i, f in enumerate(feats)})
  out.update(_sn_outputs("train_step_sn", fx, spectral, variables["params"], resnet_module_key))
  return out


def run_spatial_discriminator(fx: Any) -> dict[str, np.ndarray]:
  """Eval logits, and the reference's first train call: one power iteration per conv, then each
  ActNorm initialises from its input (our ActNorm does so when its params are absent)."""
  d_s = spatial_discriminator_from_reference(fx.config)
  frames = fx.inputs["frames"].transpose(0, 2, 3, 1)
  variables = convert_spatial_discriminator(fx.state_dict, d_s, frames.shape[1])
  out = {"output/logits": np.asarray(jax.jit(d_s.apply, static_argnums=2)(
      variables, frames, False))[:, None]}
  if "init_frames" in fx.inputs:
    init_frames = fx.inputs["init_frames"].transpose(0, 2, 3, 1)
    params = {k: v for k, v in variables["params"].items() if not k.startswith("actnorm")}

    @jax.jit
    def first_train_call(variables, frames):
      return d_s.apply(variables, frames, True, mutable=["params", SPECTRAL],
                       rngs={"params": _KEY})

    logits, new = jax.device_get(first_train_call({**variables, "params": params}, init_frames))
    out["train_init/logits_first_train_call"] = logits[:, None]
    for i in (1, 2, 3):
      for leaf in ("loc", "scale"):
        value = np.asarray(new["params"][f"actnorm{i}"][leaf])
        out[f"train_init/main.{_DS_ACTNORM[i]}.{leaf}"] = value.reshape(1, -1, 1, 1)
    out.update(_sn_outputs("train_init_sn", fx, new[SPECTRAL], new["params"],
                           spatial_disc_module_key))
  return out


PARITY_RUNNERS: dict[str, Callable[[Any], dict[str, np.ndarray]]] = {
    "stage1_VAE/modules/resnet3D.py:Encoder": run_encoder,
    "stage1_VAE/modules/decoder.py:Generator": run_decoder,
    "stage1_VAE/modules/resnet3D.py:Discriminator": run_temporal_discriminator,
    "stage1_VAE/modules/patch_disc.py:NLayerDiscriminator": run_spatial_discriminator,
}
# Fixture outputs that are inputs in disguise: not compared (reason shown in the parity report).
SKIPPED_OUTPUTS: dict[str, dict[str, str]] = {
    "stage1_VAE/modules/resnet3D.py:Encoder": {
        "output/eps": "torch's normal draw inside the forward; fed in to compute output/z"},
}
