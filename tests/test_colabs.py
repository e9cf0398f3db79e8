"""The Colab notebooks executed as Colab would run them.

Colab opens a notebook with its working directory at /content, outside any checkout, and without
i2v_flax installed. So each test runs the kernel from a temporary directory outside the
repository, with the installed i2v_flax hidden from it (a `sitecustomize` on PYTHONPATH drops the
editable-install finder). The notebook must then clone the repository through its REPO_URL
parameter and import the clone: a notebook that depends on its working directory or on an
existing install fails here. The clone source is a snapshot of this working tree (tracked and
untracked, not ignored files: what a push would publish), so uncommitted edits are what is
tested. Only the pip install of the dependencies is skipped (`I2V_COLAB_PIP_INSTALL=0`): they are
installed in this environment already, and reinstalling would rewire the shared virtualenv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
from reference_state_dicts import cinn_state_dict

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Run after the .pth files (site.main imports sitecustomize last): remove the editable finder that
# maps `i2v_flax` to this checkout, so the kernel sees a Python without i2v_flax, as on Colab.
HIDE_INSTALL = textwrap.dedent("""\
    import sys
    sys.meta_path[:] = [f for f in sys.meta_path
                        if "__editable___i2v_flax" not in getattr(f, "__module__", "")]
    """)



def _snapshot_repository(dest: str) -> str:
  """A git repository holding this working tree as one commit; returns its file:// URL."""
  files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                         check=True, capture_output=True).stdout.decode().split("\0")
  for rel in filter(None, files):
    src = os.path.join(REPO, rel)
    if os.path.isfile(src):  # Deleted-but-tracked files are listed too.
      os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
      shutil.copy2(src, os.path.join(dest, rel))
  git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c",
         "commit.gpgsign=false"]
  subprocess.run(git + ["init", "-q"], cwd=dest, check=True)
  subprocess.run(git + ["add", "-A"], cwd=dest, check=True)
  subprocess.run(git + ["commit", "-q", "-m", "snapshot"], cwd=dest, check=True)
  return "file://" + dest


@pytest.fixture
def colab_like(tmp_path, monkeypatch):
  """(run_notebook, cwd): executes a notebook from `cwd`, outside the checkout, with i2v_flax
  hidden and I2V_COLAB_REPO_URL pointing at a snapshot of this working tree."""
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  hide = tmp_path / "hide_install"
  hide.mkdir()
  (hide / "sitecustomize.py").write_text(HIDE_INSTALL)
  cwd = tmp_path / "content"  # Colab's /content.
  cwd.mkdir()
  assert not str(cwd).startswith(REPO)
  monkeypatch.setenv("PYTHONPATH", str(hide))
  monkeypatch.setenv("I2V_COLAB_REPO_URL", _snapshot_repository(str(tmp_path / "remote")))
  monkeypatch.setenv("I2V_COLAB_PIP_INSTALL", "0")

  def run(name: str):
    nb = nbformat.read(os.path.join(REPO, "colabs", name), as_version=4)
    nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return nb
  return run, cwd


def _text(nb) -> str:
  return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))


def _gifs(nb) -> int:
  return sum("image/gif" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
             for o in c.get("outputs", []))


def test_hidden_install_really_hides_i2v_flax(tmp_path):
  """The premise of the tests below: with the sitecustomize, i2v_flax is not importable."""
  (tmp_path / "sitecustomize.py").write_text(HIDE_INSTALL)
  proc = subprocess.run([sys.executable, "-c", "import importlib.util as u; "
                         "print(u.find_spec('i2v_flax') is None)"], cwd=tmp_path,
                        env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True,
                        text=True, check=True)
  assert proc.stdout.strip() == "True"


def test_quickstart_notebook_runs_top_to_bottom(colab_like, shapes_data_dir, tmp_path,
                                                monkeypatch):
  run, cwd = colab_like
  monkeypatch.setenv("I2V_COLAB_WORKDIR", str(tmp_path / "nb"))
  monkeypatch.setenv("I2V_COLAB_DATA_DIR", shapes_data_dir)
  nb = run("quickstart.ipynb")
  out = _text(nb)
  # The library came from the clone in the notebook's working directory, not from this checkout.
  assert f"i2v_flax from {cwd / 'i2v_flax_src' / 'i2v_flax'}" in out
  assert re.search(r"JAX \S+ runs on (CPU|GPU|TPU): \d+ device", out)  # The backend is named.
  assert _gifs(nb) >= 3
  assert os.path.isdir(tmp_path / "nb" / "checkpoints")


# ------------------------------------------------------------------------------ pretrained.ipynb
FIXTURES = os.path.join(REPO, "tests", "fixtures", "reference")




def _fake_release(root: str) -> None:
  """The authors' Drive folder in miniature: per dataset stage1/, AE/ and stage2[_control]/
  folders with their yaml configs, weights from the parity fixtures saved as .npz (the converter
  reads them without torch). The landscape model's config_stage1.yaml says 64x64, so the same
  small weights convert under configs/landscape.py."""
  import numpy as np
  import yaml
  from i2v_flax.convert.fixtures import load_fixture
  enc = load_fixture(FIXTURES, "stage1_encoder")
  dec = load_fixture(FIXTURES, "stage1_decoder")
  emb = load_fixture(FIXTURES, "stage2_embedder_in")
  z, cond = dec.config["z_dim"], emb.config["z_dim"]

  def write(folder, files, configs):
    os.makedirs(folder, exist_ok=True)
    for name, sd in files.items():
      np.savez(os.path.join(folder, name + ".npz"), **sd)
    for name, data in configs.items():
      with open(os.path.join(folder, name), "w") as f:
        yaml.safe_dump(data, f)

  stage1_yaml = {"Encoder": {k: enc.config[k] for k in ("z_dim", "channels", "stride_t",
                                                        "stride_s")},
                 "Decoder": dict(dec.config), "Data": {"img_size": 64}}
  for dataset, stage2_folders in (("bair", ("stage2", "stage2_control")),
                                  ("landscape", ("stage2",))):
    base = os.path.join(root, dataset)
    write(os.path.join(base, "stage1"), {"best_PFVD_ENC": enc.state_dict,
                                         "best_PFVD_GEN": dec.state_dict},
          {"config_stage1.yaml": stage1_yaml} if dataset == "landscape" else {})
    write(os.path.join(base, "AE"), {"Encoder_stage2": emb.state_dict}, {})
    for folder in stage2_folders:
      control = folder.endswith("control")
      write(os.path.join(base, folder),
            {"cINN": cinn_state_dict(5, z, cond, eta=30 if control else 0)},
            {"config_stage2.yaml": {
                "First_stage_model": {"checkpoint_encoder": "best_PFVD_ENC",
                                      "checkpoint_decoder": "best_PFVD_GEN",
                                      "model_name": "stage1/", "model_path": f"models/{dataset}/"},
                "Conditioning_Model": {"checkpoint_name": "Encoder_stage2", "z_dim": cond,
                                       "model_name": "AE/", "model_path": f"models/{dataset}/"},
                "Training": {"control": control}}})


def _fake_assets(root: str) -> None:
  """The authors' example frames (assets/GT_samples) as small synthetic images."""
  import numpy as np
  from PIL import Image
  rng = np.random.default_rng(0)
  names = ([f"bair/sample{i}.png" for i in range(1, 5)]
           + [f"landscape/sample{i}.jpg" for i in (1, 2, 3)]
           + [f"landscape/transfer/sample1/frame{i}.jpg" for i in range(106, 123)])
  for name in names:
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    size = 64 if name.startswith("bair") else 96  # Landscape frames get resized, as real ones.
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _fake_bair_tfds(data_dir: str, num_test: int) -> None:
  """A prepared TFDS `bair_robot_pushing_small` (its real builder and features, synthetic
  examples: a disc moving over a flat background), so the evaluator reads it unchanged."""
  import numpy as np
  import tensorflow_datasets as tfds

  class FakeBair(tfds.builder_cls("bair_robot_pushing_small"), skip_registration=True):
    name = "bair_robot_pushing_small"

    def _split_generators(self, dl_manager):
      del dl_manager
      return [tfds.core.SplitGenerator(name=s, gen_kwargs={"split": s, "n": n})
              for s, n in (("train", 1), ("test", num_test))]

    def _generate_examples(self, split, n):
      rng = np.random.default_rng(len(split))
      yy, xx = np.mgrid[:64, :64]
      for i in range(n):
        frames = []
        for t in range(30):
          disc = ((xx - 15 - t - 3 * i) ** 2 + (yy - 30 - 5 * np.sin(t / 5 + i)) ** 2 < 64)
          img = np.where(disc[..., None], [200, 60, 40], [90, 110, 130]).astype(np.uint8)
          pos = np.array([0.43, -0.31, 0.19]) + 0.05 * rng.standard_normal(3)
          frames.append({"image_main": img, "image_aux1": img,
                         "action": np.zeros(4, np.float32),
                         "endeffector_pos": pos.astype(np.float32)})
        yield f"{split}_{i}", frames

  FakeBair(data_dir=data_dir).download_and_prepare()


def test_pretrained_notebook_runs_offline_on_fixture_weights(colab_like, tmp_path, monkeypatch):
  run, cwd = colab_like
  _fake_release(str(tmp_path / "release"))
  _fake_assets(str(tmp_path / "assets"))
  _fake_bair_tfds(str(tmp_path / "tfds"), num_test=4)
  work = tmp_path / "work"
  monkeypatch.setenv("I2V_COLAB_OFFLINE_RELEASE_DIR", str(tmp_path / "release"))
  monkeypatch.setenv("I2V_COLAB_ASSETS_URL", "file://" + str(tmp_path / "assets"))
  monkeypatch.setenv("I2V_COLAB_BAIR_DATA_DIR", str(tmp_path / "tfds"))
  monkeypatch.setenv("I2V_COLAB_EVAL_NUM_VIDEOS", "2")
  monkeypatch.setenv("I2V_COLAB_EVAL_METRICS", "fvd")
  monkeypatch.setenv("I2V_COLAB_WORKDIR", str(work))
  nb = run("pretrained.ipynb")
  out = _text(nb)
  assert f"i2v_flax from {cwd / 'i2v_flax_src' / 'i2v_flax'}" in out  # The clone, as on Colab.
  for name in ("bair", "bair_control", "landscape"):  # Converted by the CLI from the fixtures.
    with open(work / "converted" / name / "convert_info.json") as f:
      assert "cinn" in json.load(f)["files"], name
  assert "(4, 4, 16, 64, 64, 3)" in out  # BAIR futures: 4 start frames x NUM_SAMPLES.
  assert "(3, 16, 64, 64, 3)" in out  # Landscape transfer onto 3 start frames.
  assert _gifs(nb) >= 5  # futures, your image, transfer, control, control's last frames.
  (result_file,) = (work / "converted" / "bair" / "eval").glob("*.json")
  results = json.loads(result_file.read_text())
  assert results["num_videos"] == 2
  assert set(results["methods"]) == {"cinn", "w/o cINN", "static"}
  assert all(results["methods"][m]["fvd"]["first"] is not None for m in results["methods"])
