"""The authors' released PyTorch models -> a normal i2v_flax workdir (`sampling.load` reads it).

    convert_release(config, release_dir, workdir)

`release_dir` holds the files as the reference reads them for inference (each `{'state_dict':
...}`): `best_PFVD_ENC.pth` (or `.pth.tar`), `best_PFVD_GEN.pth`, `cINN.pth`, `Encoder_stage2.pth`
(`.npz` files of the same state_dicts also work, without torch). Optional `config_stage1.yaml` /
`config_stage2.yaml` beside them supply what shapes cannot tell: strides, upsampling, resolution,
control. Widths are read off the files; `config` (e.g. configs/bair.py) supplies the rest.

The result is the workdir layout of `train/stage1.py` and `train/stage2.py`: config.json, the
'models' item of checkpoints/stage1 ({'encoder', 'decoder'}) and checkpoints/stage2 ({'flow',
'embedder'}) at step 0, plus convert_info.json (sources). There is no 'train' item (no
optimiser or discriminator state): the workdir is for sampling, evaluation, and as a frozen stage
1 (`--config.stage2.stage1_workdir`), not for resuming the authors' training.
Everything is converted and checked before anything is written, then written to a temporary
folder beside `workdir` and renamed into place, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from typing import Any, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from flax import traverse_util

from i2v_flax import errors
from i2v_flax.convert import stage1 as conv1
from i2v_flax.convert.torch_layout import ConversionError

STAGES = ("stage1", "stage2")
# Role -> file stem as the reference names it (config_stage2.yaml may rename the first three).
FILE_STEMS = {"encoder": "best_PFVD_ENC", "decoder": "best_PFVD_GEN", "cinn": "cINN",
              "embedder": "Encoder_stage2"}
EXTENSIONS = (".pth", ".pth.tar", ".pt", ".npz")
INFO_FILE = "convert_info.json"


# ---------------------------------------------------------------------------- reading
def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A state_dict as numpy: `.npz` directly, torch files through the project's one torch reader
  (`convert.evaluation.read_torch_state_dict`, which explains how to install torch)."""
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as npz:
      return {k: npz[k] for k in npz.files}
  from i2v_flax.convert import evaluation  # Looked up at call time (tests replace the reader).
  return evaluation.read_torch_state_dict(path)


def read_yaml(path: str) -> dict[str, Any]:
  if not os.path.exists(path):
    return {}
  import yaml
  with open(path) as f:
    data = yaml.safe_load(f) or {}
  if not isinstance(data, dict):
    raise ConversionError(f"{path} is not a YAML mapping of sections (Encoder:, Decoder:, ...).")
  return data


def find_release_files(release_dir: str, stages: Sequence[str] = STAGES,
                       stems: Mapping[str, str] = FILE_STEMS) -> dict[str, str]:
  """{role: path} of the files needed for `stages`; one error lists every missing file."""
  if not os.path.isdir(release_dir):
    raise errors.MissingInput(f"--from={release_dir!r} is not a folder. Fix: point it at the "
                              "folder holding the authors' best_PFVD_ENC.pth, best_PFVD_GEN.pth, "
                              "cINN.pth and Encoder_stage2.pth.")
  roles = [r for r, s in (("encoder", "stage1"), ("decoder", "stage1"), ("cinn", "stage2"),
                          ("embedder", "stage2")) if s in stages]
  found, missing = {}, []
  for role in roles:
    paths = [os.path.join(release_dir, stems[role] + ext) for ext in EXTENSIONS]
    existing = [p for p in paths if os.path.isfile(p)]
    if existing:
      found[role] = existing[0]
    else:
      missing.append(f"{stems[role]}{{{','.join(EXTENSIONS)}}}")
  if missing:
    raise errors.MissingInput(
        f"{release_dir} lacks {', '.join(missing)}. Fix: copy the authors' files there (stage-1 "
        "files from the stage-1 model folder, cINN.pth from the stage-2 folder, "
        "Encoder_stage2.pth from the conditioning AE folder), or pass --stages=stage1 to "
        "convert stage 1 alone.")
  return found


# ---------------------------------------------------------------------------- config
def _set(config: ml_collections.ConfigDict, name: str, values: Mapping[str, Any],
         source: str) -> None:
  section = config[name]
  for key, value in values.items():
    if key in section and section[key] != value:
      logging.info("convert: %s.%s = %r (from %s; the config had %r)", name, key, value, source,
                   section[key])
    section[key] = value


def converted_config(config: ml_collections.ConfigDict, sds: Mapping[str, Mapping],
                     yaml1: Mapping[str, Any], yaml2: Mapping[str, Any]
                     ) -> ml_collections.ConfigDict:
  """`config` with the architecture of the release: yaml sections, then the files' shapes."""
  c = copy.deepcopy(config)
  s1 = c.stage1
  _set(c, "stage1", conv1.stage1_overrides_from_reference(yaml1), "config_stage1.yaml")
  if "Data" in yaml1 and "img_size" in yaml1["Data"]:
    c.data.resolution = int(yaml1["Data"]["img_size"])
  if "encoder" in sds:
    _set(c, "stage1", conv1.stage1_overrides_from_state_dicts(sds["encoder"], sds["decoder"]),
         "the checkpoint shapes")
  for field, reference_value in (("dec_coords", False), ("dec_output", "rgb")):
    if field in s1:
      s1[field] = reference_value  # Demo departures (config_lib): not in the reference.
  side = 4 * int(np.prod(s1.dec_up_s))
  if side != int(c.data.resolution):
    raise ConversionError(
        f"The decoder's upsampling {tuple(s1.dec_up_s)} gives {side}x{side} frames, but "
        f"data.resolution is {c.data.resolution}. Fix: use the dataset's config (--config="
        "configs/landscape.py for 128x128 models) or put config_stage1.yaml beside the files.")
  if "cinn" in sds:
    from i2v_flax.convert import stage2 as conv2
    control = yaml2.get("Training", {}).get("control")
    arch = conv2.cinn_arch(sds["cinn"], control=None if control is None else bool(control))
    if arch.dim != int(s1.z_dim):
      raise ConversionError(f"cINN.pth models a {arch.dim}-d z, the stage-1 files a "
                            f"{s1.z_dim}-d z. Fix: use the cINN trained on this stage 1.")
    cond = conv2.embedder_cond_dim(sds["embedder"])
    if cond != arch.cond_dim:
      raise ConversionError(f"cINN.pth expects a {arch.cond_dim}-d condition c, "
                            f"Encoder_stage2.pth gives {cond}-d. Fix: use the conditioning "
                            "encoder the cINN was trained with.")
    _set(c, "stage2", arch.stage2_config(), "cINN.pth")
    _set(c, "stage2", {"embedder": "resnet50",
                       "embedder_norm": conv2.embedder_norm(sds["embedder"]),
                       "freeze_embedder": True, "embedder_init": None, "stage1_workdir": None},
         "Encoder_stage2.pth")
    c.data.control = bool(arch.eta_dim)
  return c


# ---------------------------------------------------------------------------- conversion
def _match(abstract: Any, variables: Any, what: str) -> dict:
  """`variables` cast to the restore target's dtypes; any tree/shape difference is a bug here."""
  want = traverse_util.flatten_dict(abstract)
  got = traverse_util.flatten_dict(variables)
  if set(want) != set(got):
    raise ConversionError(f"internal: converted {what} variables differ from what restore "
                          f"expects: extra {sorted(set(got) - set(want))[:5]}, missing "
                          f"{sorted(set(want) - set(got))[:5]}.")
  out = {}
  for k, spec in want.items():
    if tuple(np.shape(got[k])) != tuple(spec.shape):
      raise ConversionError(f"internal: {what} {'/'.join(k)} is {np.shape(got[k])}, restore "
                            f"expects {spec.shape}.")
    out[k] = np.asarray(got[k]).astype(spec.dtype)
  return traverse_util.unflatten_dict(out)


def convert_models(config: ml_collections.ConfigDict, sds: Mapping[str, Mapping]
                   ) -> dict[str, dict]:
  """{'stage1': {'encoder', 'decoder'}, 'stage2': {'flow', 'embedder'}} for the stages present,
  shaped exactly as `train.stage1/stage2` restore them."""
  from i2v_flax.train import stage1 as train1
  out: dict[str, dict] = {}
  if "encoder" in sds:
    models = train1.build_models(config)
    abstract = train1._abstract_models(config, models)  # What restore_stage1 expects.
    r, t = int(config.data.resolution), int(config.data.clip_length) - 1
    out["stage1"] = {
        "encoder": _match(abstract["encoder"],
                          conv1.convert_encoder(sds["encoder"], models.encoder, r, t), "encoder"),
        "decoder": _match(abstract["decoder"],
                          conv1.convert_decoder(sds["decoder"], models.decoder, r), "decoder")}
  if "cinn" in sds:
    from i2v_flax.convert import stage2 as conv2
    from i2v_flax.train import stage2 as train2
    abstract = train2._abstract_models(config)  # What restore_stage2 expects.
    control = bool(config.stage2.control)
    out["stage2"] = {
        "flow": _match(abstract["flow"], conv2.cinn_variables(sds["cinn"], control=control),
                       "cINN"),
        "embedder": _match(abstract["embedder"], conv2.embedder_variables(
            sds["embedder"], config.stage2.embedder_norm), "embedder")}
  return out


def _write_workdir(directory: str, config: ml_collections.ConfigDict, models: dict[str, dict],
                   info: dict[str, Any]) -> None:
  from i2v_flax.train import checkpoints, run_config
  from i2v_flax.train import stage1 as train1
  from i2v_flax.train import stage2 as train2
  run_config.write_config(directory, config)
  for stage, ckpt_dir in (("stage1", train1.checkpoint_dir(directory)),
                          ("stage2", train2.checkpoint_dir(directory))):
    if stage not in models:
      continue
    mngr = checkpoints.make_checkpoint_manager(ckpt_dir, save_interval_steps=1, max_to_keep=1,
                                          item_names=("models", "train"))
    try:
      checkpoints.save_checkpoint(mngr, 0, {"models": models[stage]}, force=True)
      mngr.wait_until_finished()
    finally:
      mngr.close()
  with open(os.path.join(directory, INFO_FILE), "w") as f:
    json.dump(info, f, indent=2, sort_keys=True)


def convert_release(config: ml_collections.ConfigDict, release_dir: str, workdir: str,
                    stages: Sequence[str] = STAGES, overwrite: bool = False
                    ) -> ml_collections.ConfigDict:
  """Convert the release in `release_dir` into `workdir`; returns the workdir's config.

  Raises FileNotFoundError (missing files), ConversionError (wrong file, key or shape: named with
  both shapes) or ImportError (torch needed for .pth files) before writing anything.
  """
  if unknown := set(stages) - set(STAGES):
    raise errors.InvalidInput(f"Unknown stages {sorted(unknown)}. Fix: --stages=a subset of "
                              f"{','.join(STAGES)}.")
  workdir = os.path.abspath(workdir)
  if os.path.isdir(workdir) and os.listdir(workdir) and not overwrite:
    raise errors.OutputExists(f"{workdir} exists and is not empty. Fix: choose a new --workdir, "
                              "or pass --overwrite to replace it.")
  yaml1 = read_yaml(os.path.join(release_dir, "config_stage1.yaml"))
  yaml2 = read_yaml(os.path.join(release_dir, "config_stage2.yaml"))
  stems = dict(FILE_STEMS)
  for role, key in (("encoder", "checkpoint_encoder"), ("decoder", "checkpoint_decoder")):
    stems[role] = yaml2.get("First_stage_model", {}).get(key, stems[role])
  stems["embedder"] = yaml2.get("Conditioning_Model", {}).get("checkpoint_name", stems["embedder"])
  files = find_release_files(release_dir, stages, stems)
  sds = {}
  for role, path in files.items():
    logging.info("convert: reading %s", path)
    sds[role] = read_state_dict(path)
  config = converted_config(config, sds, yaml1, yaml2)
  models = convert_models(config, sds)
  info = {"source": os.path.abspath(release_dir),
          "files": {r: os.path.basename(p) for r, p in files.items()}, "stages": list(stages)}
  parent = os.path.dirname(workdir)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(workdir)}.converting-", dir=parent)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would make the workdir private.
  try:
    _write_workdir(tmp, config, jax.device_get(models), info)
    if os.path.isdir(workdir):
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(workdir)}.old-", dir=parent)
      os.rename(workdir, os.path.join(old, "w"))
      os.rename(tmp, workdir)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(tmp, workdir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  logging.info("convert: wrote %s (%s)", workdir, ", ".join(stages))
  return config
