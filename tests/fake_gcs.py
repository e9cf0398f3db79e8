"""A fake GCS bucket for tests: gs://<path> lives in a local folder.

Redirected at the three places a gs:// path leaves Python: etils.epath's backend
(`etils.epath.testing.mock_epath`, with EPATH_USE_TF=false so epath does not hand gs:// to
TensorFlow), TensorStore's kvstore spec (orbax's array files) and TensorFlow's summary writer
(TensorBoard). The working directory is moved to an empty folder, where any os.*/open() on a
gs:// path would create `./gs:`.
"""

from __future__ import annotations

import os

import pytest
from etils.epath import testing as epath_testing

_EPATH_FNS = ("copy", "exists", "glob", "isdir", "listdir", "makedirs", "mkdir", "open",
              "remove", "rename", "replace", "rmtree", "stat", "walk")


class FakeBucket:
  """gs://<anything> <-> <root>/<anything>, for path strings and epath's backend calls."""

  def __init__(self, root: str):
    self.root = root

  def local(self, p):
    s = os.fspath(p) if isinstance(p, (str, os.PathLike)) else p
    if isinstance(s, str) and s.startswith("gs://"):
      return os.path.join(self.root, s[len("gs://"):])
    return p

  def remote(self, p: str) -> str:
    return "gs://" + os.path.relpath(p, self.root) if p.startswith(self.root + os.sep) else p

  def backend_fn(self, name: str):
    def fn(original, path, *args, **kwargs):
      out = original(self.local(path), *[self.local(a) for a in args], **kwargs)
      if name == "glob":
        return [self.remote(p) for p in out]
      if name == "walk":
        return ((self.remote(d), dirs, files) for d, dirs, files in out)
      return out
    return fn


def fake_bucket_fixture(tmp_path, monkeypatch):
  import tensorflow as tf
  from orbax.checkpoint._src.serialization import tensorstore_utils as ts_utils
  bucket = FakeBucket(str(tmp_path / "bucket"))
  import sys
  import types
  from etils.epath import gpath
  from orbax.checkpoint._src.path import gcs_utils
  # The fake bucket is a flat (non-hierarchical-namespace) bucket; orbax would ask GCS.
  monkeypatch.setattr(gcs_utils, "is_hierarchical_namespace_enabled", lambda path: False)
  if "google.cloud.storage" not in sys.modules:  # config_check wants the package for gs://.
    try:
      from google.cloud import storage  # noqa: F401
    except ImportError:
      monkeypatch.setitem(sys.modules, "google.cloud.storage", types.ModuleType("storage"))
      import google.cloud
      monkeypatch.setattr(google.cloud, "storage", sys.modules["google.cloud.storage"],
                          raising=False)
  monkeypatch.setenv("EPATH_USE_TF", "false")
  monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # functools.cache'd env read.
  # Real GCS must never be contacted: fail fast if something bypasses the fakes below.
  monkeypatch.setenv("TENSORSTORE_GCS_HTTP_URL", "http://127.0.0.1:9")
  build = ts_utils.build_kvstore_tspec

  def build_local(directory, *args, **kwargs):
    return build(bucket.local(directory), *args, **kwargs)
  monkeypatch.setattr(ts_utils, "build_kvstore_tspec", build_local)
  create = tf.summary.create_file_writer
  monkeypatch.setattr(tf.summary, "create_file_writer",
                      lambda logdir, *a, **k: create(bucket.local(logdir), *a, **k))
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)  # Where a stray os.makedirs("gs://...") would land.
  with epath_testing.mock_epath(**{n: bucket.backend_fn(n) for n in _EPATH_FNS}):
    yield bucket
