"""i2v_flax.paths: atomic writes to local and gs:// targets, and shared files written by
process 0 only (the multi-process run in test_multiprocess.py shows the end result; this shows
the rule on its own, cheaply)."""

from __future__ import annotations

import os

import pytest

import fake_gcs
from i2v_flax import paths


@pytest.fixture()
def fake_bucket(tmp_path, monkeypatch):
  yield from fake_gcs.fake_bucket_fixture(tmp_path, monkeypatch)


@pytest.mark.parametrize("remote", [False, True])
def test_atomic_write_is_all_or_nothing(remote, tmp_path, request):
  if remote:
    bucket = request.getfixturevalue("fake_bucket")
    target = "gs://b/run/out/x.json"
    local = bucket.local(target)
  else:
    target = local = str(tmp_path / "out" / "x.json")
  with pytest.raises(RuntimeError):
    with paths.atomic_local(target) as tmp:
      with open(tmp, "w") as f:
        f.write("half")
      raise RuntimeError("interrupted")
  assert not os.path.exists(local) and not os.path.exists(tmp)
  paths.write_json(target, {"a": 1})
  assert paths.read_text(target).replace(" ", "").replace("\n", "") == '{"a":1}'
  assert paths.exists(target) and paths.isfile(target)
  assert paths.listdir(target[:-len("/x.json")]) == ["x.json"]
  assert not os.path.exists("gs:")


def test_only_process_zero_writes_shared_files(tmp_path, monkeypatch):
  from i2v_flax import config_lib, report
  from i2v_flax.train import run_config
  monkeypatch.setattr(paths.jax, "process_index", lambda: 1)
  config = config_lib.load_config("configs/shapes.py:tiny")
  run_config.write_config(str(tmp_path), config)
  report._write_json(str(tmp_path / "report" / "summary.json"), {"x": 1})
  report._write_video(str(tmp_path / "report" / "a.gif"), None, scale=1)
  assert os.listdir(tmp_path) == []
  monkeypatch.setattr(paths.jax, "process_index", lambda: 0)
  run_config.write_config(str(tmp_path), config)
  assert run_config.read_config(str(tmp_path)).data.name == "shapes"


def test_join_keeps_uris():
  assert paths.join("gs://b/run", "checkpoints", "stage1") == "gs://b/run/checkpoints/stage1"
  assert paths.join("/tmp/run", "a") == "/tmp/run/a"
  assert paths.is_remote("gs://b") and not paths.is_remote("/gs/b")
