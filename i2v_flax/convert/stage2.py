"""Stage-2 conversion: the authors' torch state_dicts -> Flax variables, plus fixture runners.

Public API (all numpy in, numpy/jax out; no torch needed):

  cinn_arch(state_dict, eta_dim=30, control_every=4, control=None) -> CinnArch
      The flow's shape read off the checkpoint (blocks, D, hidden, depth, cond_dim, control).
  cinn_variables(state_dict, eta_dim=30, control_every=4, control=None) -> {'params', 'consts'}
      For `cinn_arch(...).build()`: a ConditionalFlow with the reference's semantics (no clamp,
      reference logdet). Permutations are `forward_shuffle_idx`, copied (our coupling returns
      [b', a'] as the reference, so no fold is needed).
  embedder_variables(state_dict, norm=None) -> {'params'[, 'batch_stats']}
      For `ResNet50Embedder(cond_dim=embedder_cond_dim(sd), norm=embedder_norm(sd))`.
  read_state_dict(path) -> {torch key: array}    .npz (torch keys) or .pth (needs torch)
  PARITY_RUNNERS: {fixture.meta['reference']['class']: fixture -> {output name: our value}}

`cinn.pth` and `Encoder_stage2.pth` hold `{'state_dict': ...}`; pass the inner dict. Every
converter checks the key set and every shape first and names the offending key, both shapes
and the fix, so a wrong file fails before any array is copied.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Mapping

import numpy as np

from i2v_flax import errors


class ConvertError(errors.InvalidInput):
  """A state_dict does not fit the stage-2 module (the message names the key and the fix)."""


_CINN_NETS = {"s.0": "s1", "t.0": "t1", "s.1": "s2", "t.1": "t2"}  # torch -> Flax names.
RESNET50_STAGES = (3, 4, 6, 3)


def _strip(state_dict: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
  """Drop a `module.` (DataParallel) prefix if every key has it; arrays as numpy."""
  sd = {k: np.asarray(v) for k, v in state_dict.items()}
  if sd and all(k.startswith(prefix) for k in sd):
    sd = {k[len(prefix):]: v for k, v in sd.items()}
  return sd


def _check_keys(what: str, sd: Mapping[str, np.ndarray], expected: Mapping[str, tuple],
                ignore: Callable[[str], bool] = lambda k: False) -> None:
  """Missing keys, unknown keys and shape mismatches, each named, in one error."""
  problems = []
  missing = [k for k in expected if k not in sd]
  unknown = [k for k in sd if k not in expected and not ignore(k)]
  if missing:
    problems.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
  if unknown:
    problems.append(f"unknown keys {unknown[:8]}{' ...' if len(unknown) > 8 else ''}")
  for k, shape in expected.items():
    if k in sd and tuple(sd[k].shape) != tuple(shape):
      problems.append(f"{k} has shape {tuple(sd[k].shape)}, expected {tuple(shape)}")
  if problems:
    raise ConvertError(f"{what}: " + "; ".join(problems) + ". Fix: pass the inner "
                       "torch.load(f)['state_dict'] of the matching reference model, with the "
                       "architecture arguments it was trained with.")


# ---------------------------------------------------------------------------------------- cINN
@dataclasses.dataclass(frozen=True)
class CinnArch:
  """The reference ConditionalFlow's constructor arguments, as read off a state_dict."""
  num_blocks: int
  dim: int  # in_channels: the stage-1 z_dim.
  hidden: int  # hidden_dim.
  num_hidden_layers: int  # hidden_depth.
  cond_dim: int  # c alone (embedding_dim minus eta_dim when control is on).
  eta_dim: int  # 0 without control.
  control_every: int = 4

  def in_dim(self, index: int) -> int:
    """Input size of block `index`'s s/t nets: [x_half, c, eta], or [c, eta] for 'cond' blocks."""
    cond = self.cond_dim + self.eta_dim
    return cond if (self.eta_dim and index % self.control_every) else self.dim // 2 + cond

  def build(self, seed: int = 0):
    """The ConditionalFlow computing the reference's function (no clamp, reference logdet)."""
    from i2v_flax.models.cinn import ConditionalFlow
    return ConditionalFlow(
        num_blocks=self.num_blocks, hidden=self.hidden, num_hidden_layers=self.num_hidden_layers,
        clamp=None, leaky_slope=0.9, cond_dim=self.cond_dim, eta_dim=self.eta_dim,
        control_every=self.control_every, seed=seed, actnorm_data_init=False,
        exact_leaky_logdet=False)

  def stage2_config(self) -> dict[str, Any]:
    """`config.stage2` fields of a converted model (z_dim is `stage1.z_dim` = `dim`)."""
    return {"num_blocks": self.num_blocks, "hidden": self.hidden,
            "num_hidden_layers": self.num_hidden_layers, "cond_dim": self.cond_dim,
            "eta_dim": self.eta_dim, "control": "bins" if self.eta_dim else "",
            "control_every": self.control_every, "clamp": None, "leaky_slope": 0.9,
            "exact_leaky_logdet": False}


def cinn_arch(state_dict: Mapping[str, Any], eta_dim: int = 30, control_every: int = 4,
              control: bool | None = None) -> CinnArch:
  """Infer the flow's shape from a `ConditionalFlow` state_dict.

  Control is detected from the 'cond' blocks, whose first Linear is narrower by D/2. A flow of
  `control_every` blocks or fewer has no 'cond' block to see, so pass `control=True` there.
  `eta_dim` is not visible in the weights (only cond_dim + eta_dim is): the reference always
  uses 30 (BAIR's 3 x 10 one-hot).
  """
  sd = _strip(state_dict, "module.")
  unknown = sorted({k.split(".")[0] for k in sd} - {"sub_layers"})
  if unknown:
    raise ConvertError(f"cINN state_dict has top-level entries {unknown} besides sub_layers. "
                       "Fix: only conditioning_option='None' checkpoints (all released ones) "
                       "are supported; pass the ConditionalFlow's own state_dict.")
  blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"sub_layers\.(\d+)\.", k))})
  if not blocks or blocks != list(range(len(blocks))):
    raise ConvertError(f"cINN state_dict blocks {blocks[:5]}... are not 0..n-1. Fix: pass "
                       "torch.load('cINN.pth')['state_dict'].")
  loc_key, first = "sub_layers.0.norm_layer.loc", "sub_layers.0.coupling.s.0.main."
  if loc_key not in sd or first + "0.weight" not in sd:
    raise ConvertError(f"cINN state_dict lacks {loc_key} or {first}0.weight. Fix: pass "
                       "torch.load('cINN.pth')['state_dict'] of a ConditionalFlow.")
  dim = int(sd[loc_key].size)
  linears = sorted(int(k[len(first):].split(".")[0]) for k in sd
                   if k.startswith(first) and k.endswith(".weight"))
  hidden, in0 = (int(s) for s in sd[first + "0.weight"].shape)
  embedding = in0 - dim // 2
  in_dims = [sd.get(f"sub_layers.{i}.coupling.s.0.main.0.weight", np.zeros((0, in0))).shape[1]
             for i in blocks]
  if control is None:
    control = any(d == embedding for d in in_dims[1:])
  if control and embedding <= eta_dim:
    raise ConvertError(f"The cINN's condition is {embedding}-d, not more than eta_dim={eta_dim}. "
                       "Fix: pass the eta_dim the model was trained with, or control=False.")
  return CinnArch(num_blocks=len(blocks), dim=dim, hidden=hidden,
                  num_hidden_layers=len(linears) - 2,
                  cond_dim=embedding - eta_dim if control else embedding,
                  eta_dim=eta_dim if control else 0, control_every=control_every)


def _cinn_expected(arch: CinnArch) -> dict[str, tuple]:
  expected: dict[str, tuple] = {}
  d, h = arch.dim, arch.hidden
  for i in range(arch.num_blocks):
    p = f"sub_layers.{i}."
    expected.update({p + "norm_layer.loc": (1, d, 1, 1), p + "norm_layer.scale": (1, d, 1, 1),
                     p + "norm_layer.initialized": (), p + "shuffle.forward_shuffle_idx": (d,),
                     p + "shuffle.backward_shuffle_idx": (d,)})
    dims = [arch.in_dim(i)] + [h] * (arch.num_hidden_layers + 1) + [d // 2]
    for net in _CINN_NETS:
      for j in range(len(dims) - 1):
        expected[f"{p}coupling.{net}.main.{2 * j}.weight"] = (dims[j + 1], dims[j])
        expected[f"{p}coupling.{net}.main.{2 * j}.bias"] = (dims[j + 1],)
  return expected


def cinn_variables(state_dict: Mapping[str, Any], eta_dim: int = 30, control_every: int = 4,
                   control: bool | None = None) -> dict[str, Any]:
  """Flax variables {'params', 'consts'} of `cinn_arch(state_dict, ...).build()`.

  ActNorm `scale` is copied signed (negative entries are fine); Linear weights are transposed
  to Dense kernels; `forward_shuffle_idx` becomes `consts/block_i/perm` unchanged and
  `backward_shuffle_idx` is checked to be its inverse.
  """
  sd = _strip(state_dict, "module.")
  arch = cinn_arch(sd, eta_dim, control_every, control)
  _check_keys("cINN state_dict", sd, _cinn_expected(arch))
  params, consts = {}, {}
  for i in range(arch.num_blocks):
    p = f"sub_layers.{i}."
    if not np.all(sd[p + "norm_layer.initialized"]):
      raise ConvertError(f"{p}norm_layer.initialized is 0: this ActNorm was never data-"
                         "initialised, so its loc/scale are placeholders. Fix: convert a trained "
                         "checkpoint, or re-initialise with cinn.data_init_actnorms on a batch.")
    perm = sd[p + "shuffle.forward_shuffle_idx"].astype(np.int64)
    if sorted(perm.tolist()) != list(range(arch.dim)):
      raise ConvertError(f"{p}shuffle.forward_shuffle_idx is not a permutation of "
                         f"0..{arch.dim - 1}: the checkpoint is corrupt.")
    if not np.array_equal(sd[p + "shuffle.backward_shuffle_idx"], np.argsort(perm)):
      raise ConvertError(f"{p}shuffle.backward_shuffle_idx is not argsort(forward_shuffle_idx); "
                         "the checkpoint is inconsistent.")
    coupling = {}
    for net, name in _CINN_NETS.items():
      linear = f"{p}coupling.{net}.main."
      coupling[name] = {
          f"Dense_{j}": {"kernel": sd[f"{linear}{2 * j}.weight"].T.astype(np.float32),
                         "bias": sd[f"{linear}{2 * j}.bias"].astype(np.float32)}
          for j in range(arch.num_hidden_layers + 2)}
    params[f"block_{i}"] = {
        "actnorm": {"loc": sd[p + "norm_layer.loc"].reshape(-1).astype(np.float32),
                    "scale": sd[p + "norm_layer.scale"].reshape(-1).astype(np.float32)},
        "coupling": coupling}
    consts[f"block_{i}"] = {"perm": perm.astype(np.int32)}
  return {"params": params, "consts": consts}


# ------------------------------------------------------------------------------------ embedder
def embedder_norm(state_dict: Mapping[str, Any]) -> str:
  """'bn' when the ResNet-50 state_dict carries norm entries, else 'in' (InstanceNorm has none)."""
  return "bn" if any(k.endswith("bn1.weight") for k in state_dict) else "in"


def embedder_cond_dim(state_dict: Mapping[str, Any]) -> int:
  """z of the reference encoder (its head outputs 2z: mean then logvar)."""
  sd = _strip(state_dict, "module.")
  key = "model.fc.sub_layers.0.weight"
  if key not in sd:
    raise ConvertError(f"{key} is missing: not a ResnetEncoder state_dict. Fix: pass "
                       "torch.load('Encoder_stage2.pth')['state_dict'].")
  return int(sd[key].shape[0]) // 2


def _resnet50_layout(z: int, norm: str) -> dict[str, tuple[str, tuple, tuple]]:
  """torch key -> (collection, Flax path, torch shape) for every entry of the reference encoder."""
  out: dict[str, tuple[str, tuple, tuple]] = {}

  def conv(tkey, path, o, i, k):
    out[f"model.{tkey}.weight"] = ("params", path + ("kernel",), (o, i, k, k))

  def bn(tkey, path, c):
    if norm != "bn":
      return
    for t, (col, leaf) in {"weight": ("params", "scale"), "bias": ("params", "bias"),
                           "running_mean": ("batch_stats", "mean"),
                           "running_var": ("batch_stats", "var")}.items():
      out[f"model.{tkey}.{t}"] = (col, path + (leaf,), (c,))

  conv("conv1", ("conv1",), 64, 3, 7)
  bn("bn1", ("bn1",), 64)
  cin = 64
  for layer, blocks in enumerate(RESNET50_STAGES):
    planes = 64 * 2**layer
    for b in range(blocks):
      t, f = f"layer{layer + 1}.{b}", (f"layer{layer + 1}_{b}",)
      for n, (o, i, k) in enumerate(((planes, cin, 1), (planes, planes, 3),
                                     (4 * planes, planes, 1)), 1):
        conv(f"{t}.conv{n}", f + (f"conv{n}",), o, i, k)
        bn(f"{t}.bn{n}", f + (f"bn{n}",), o)
      if b == 0:
        conv(f"{t}.downsample.0", f + ("downsample_0",), 4 * planes, cin, 1)
        bn(f"{t}.downsample.1", f + ("downsample_1",), 4 * planes)
      cin = 4 * planes
  out["model.fc.sub_layers.0.weight"] = ("params", ("fc", "kernel"), (2 * z, cin, 1, 1))
  out["model.fc.sub_layers.0.bias"] = ("params", ("fc", "bias"), (2 * z,))
  return out


def embedder_variables(state_dict: Mapping[str, Any], norm: str | None = None) -> dict[str, Any]:
  """Flax variables of `ResNet50Embedder(cond_dim=embedder_cond_dim(sd), norm)`.

  `norm` defaults to what the state_dict holds (`embedder_norm`); giving the other one is an
  error, since 'in' checkpoints have no norm entries and 'bn' ones need theirs. Conv weights go
  to HWIO, the 1x1-conv head to a Dense kernel, BatchNorm running stats to `batch_stats`;
  `num_batches_tracked` is dropped.
  """
  sd = _strip(state_dict, "module.")
  found = embedder_norm(sd)
  norm = norm or found
  if norm not in ("in", "bn"):
    raise ConvertError(f"norm must be 'in' or 'bn', got {norm!r}.")
  if norm != found:
    raise ConvertError(f"norm={norm!r} but the state_dict is a {found!r} encoder ("
                       f"{'has' if found == 'bn' else 'has no'} BatchNorm entries). Fix: set "
                       f"config.stage2.embedder_norm={found!r}.")
  layout = _resnet50_layout(embedder_cond_dim(sd), norm)
  _check_keys("ResNet-50 embedder state_dict", sd, {k: v[2] for k, v in layout.items()},
              ignore=lambda k: k.endswith("num_batches_tracked"))
  variables: dict[str, Any] = {}
  for key, (col, path, _) in layout.items():
    a = sd[key].astype(np.float32)
    if path[-1] == "kernel":
      a = a[:, :, 0, 0].T if path[0] == "fc" else a.transpose(2, 3, 1, 0)
    node = variables.setdefault(col, {})
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = a
  return variables


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """A torch state_dict from `.npz` (torch keys, numpy arrays; no torch needed) or from a torch
  file (`.pth`, `.pth.tar`, `.pt`: needs torch), unwrapping {'state_dict': ...}."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No state_dict file at {path!r}.")
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  from i2v_flax.convert.evaluation import read_torch_state_dict  # One torch reader for all.
  return read_torch_state_dict(path)


# The runners import this module's converters lazily, so this import is cycle-free.
from i2v_flax.convert.stage2_parity import PARITY_RUNNERS  # noqa: E402,F401  (re-export)
