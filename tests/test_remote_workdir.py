"""The whole main job with a `gs://` workdir, on a fake bucket, and nothing in a local `gs:`.

`os.makedirs("gs://bucket/run")` silently creates a local folder named `gs:`; on a TPU VM that is
a run writing to the wrong disk. Here every gs:// access is redirected to a local "bucket"
folder at the three places a gs:// path leaves Python: etils.epath's backend
(`etils.epath.testing.mock_epath`, with EPATH_USE_TF=false so epath does not hand gs:// to
TensorFlow), TensorStore's kvstore spec (orbax's array files) and TensorFlow's summary writer
(TensorBoard). Any os.*/open() on a workdir path would instead create `./gs:` in the working
directory, which the test checks stays absent, while every artefact shows up in the bucket.
"""

from __future__ import annotations

import json
import os

import pytest

import fake_gcs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKDIR = "gs://fake-bucket/runs/shapes"
OVERRIDES = {  # The smallest main job that still writes every kind of file.
    "stage1.num_train_steps": 2, "stage1.warmup_steps": 1000, "stage1.val_videos": 0,
    "stage1.checkpoint_every": 1, "stage1.sample_every": 2, "stage2.num_train_steps": 2,
    "stage2.checkpoint_every": 1, "stage2.sample_every": 2, "report.num_videos": 0,
}


@pytest.fixture()
def fake_bucket(tmp_path, monkeypatch):
  yield from fake_gcs.fake_bucket_fixture(tmp_path, monkeypatch)


def test_main_job_writes_everything_to_the_bucket(fake_bucket, shapes_data_dir):
  from i2v_flax import main
  argv = ["main", f"--config={REPO}/configs/shapes.py:tiny", f"--workdir={WORKDIR}",
          f"--config.data.data_dir={shapes_data_dir}",
          *[f"--config.{k}={v}" for k, v in OVERRIDES.items()]]
  assert main.run(argv) == 0
  assert not os.path.exists("gs:"), os.listdir(".")
  assert not os.path.exists(os.path.join(REPO, "gs:"))
  run = fake_bucket.local(WORKDIR)
  listing = {os.path.relpath(os.path.join(d, f), run) for d, _, fs in os.walk(run) for f in fs}
  for expected in ("config.json", "report/summary.json", "report/samples.gif",
                   "report/transfer.gif", "samples/stage1_2.gif", "samples/stage2_2.gif"):
    assert expected in listing, sorted(listing)
  for folder in ("checkpoints/stage1/2/", "checkpoints/stage2/2/", "tensorboard/stage1/",
                 "tensorboard/stage2/", "logs/main-"):
    assert any(p.startswith(folder) for p in listing), (folder, sorted(listing))
  with open(os.path.join(run, "report", "summary.json")) as f:
    summary = json.load(f)
  assert summary["stage2_step"] == 2 and summary["final_losses"]["stage2"]  # Read back via epath.
  assert not [p for p in listing if os.path.basename(p).startswith(".tmp_")]
  # And the trained model loads back from the bucket path.
  from i2v_flax import sampling
  assert sampling.load(WORKDIR).step == 2
