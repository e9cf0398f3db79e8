"""Bad invocations of the CLIs: exit status 2, ONE `error: ... Fix: ...` line on stderr, no
traceback, nothing written. In-process (`main.run(argv)` / `sample.run(argv)`: the same code
path as `python -m`, without ~10 s of interpreter start-up per case), plus one real subprocess."""

import os
import subprocess
import sys

import pytest

from i2v_flax import config_check, config_lib, errors
from i2v_flax import main as main_cli
from i2v_flax import sample as sample_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "--config=configs/shapes.py:tiny"

MAIN_CASES = {
    "misspelt_config": (["--config=configs/shape.py"], "does not exist"),
    "bad_config_variant": (["--config=configs/shapes.py:bogus"], "Unknown shapes variant"),
    "negative_batch": ([TINY, "--config.stage1.batch_size=-2"], "stage1.batch_size=-2"),
    "zero_lr": ([TINY, "--config.stage2.lr=0"], "stage2.lr"),
    "negative_weight": ([TINY, "--config.stage1.w_kl=-1"], "stage1.w_kl"),
    "zero_temperature": ([TINY, "--config.eval.temperature=0"], "eval.temperature"),
    "zero_sample_sets": ([TINY, "--config.eval.num_sample_sets=0"], "eval.num_sample_sets"),
    "negative_steps": ([TINY, "--config.stage2.num_train_steps=-5"], "num_train_steps"),
    "resolution_vs_strides": ([TINY, "--config.data.resolution=48"], "dec_up_s"),
    "unknown_metric": ([TINY, "--config.eval.metrics=('fvd','nope')"], "nope"),
    "unknown_field": ([TINY, "--config.stage1.batch_sz=3"], "batch_sz"),
    "override_type": ([TINY, "--config.stage1.batch_size=abc"], "batch_size"),
    "unknown_flag": ([TINY, "--bogus"], "bogus"),
    "unknown_mode": ([TINY, "--mode=fast"], "mode"),
    "positional_arg": ([TINY, "extra"], "extra"),
    "stage2_without_stage1": ([TINY, "--mode=train_stage2"], "stage-1 checkpoint"),
    "eval_without_model": ([TINY, "--mode=eval"], "stage-2 checkpoint"),
    "manual_dir_unset": (["--config=configs/iper.py:tiny"], "manual_dir"),
}


def _check_one_error_line(capfd, rc, must_contain):
  out, err = capfd.readouterr()
  lines = [ln for ln in err.splitlines() if ln.strip()]
  assert rc == errors.EXIT_CODE, (rc, err[-2000:])
  assert len(lines) == 1 and lines[0].startswith("error: ") and "Fix:" in lines[0], err[-2000:]
  assert "Traceback" not in err + out
  assert must_contain in lines[0], lines[0]
  return lines[0]


@pytest.mark.parametrize("case", sorted(MAIN_CASES))
def test_main_bad_invocations(case, tmp_path, capfd):
  argv, must_contain = MAIN_CASES[case]
  workdir = tmp_path / "run"
  rc = main_cli.run(["main", *argv, f"--workdir={workdir}"])
  _check_one_error_line(capfd, rc, must_contain)
  assert not workdir.exists()  # Nothing written, not even the log.


def test_main_unwritable_workdir(tmp_path, capfd):
  (tmp_path / "file").write_text("x")
  rc = main_cli.run(["main", TINY, f"--workdir={tmp_path / 'file' / 'run'}"])
  _check_one_error_line(capfd, rc, "--workdir")


SAMPLE_CASES = {
    "zero_samples": (["--num_samples=0"], "--num_samples=0"),
    "negative_temperature": (["--temperature=-1"], "--temperature"),
    "zero_length": (["--length=0"], "--length"),
    "bad_eta": (["--eta=a,b"], "--eta"),
    "bad_out_ext": (["--out={out_dir}/o.png"], ".gif or .mp4"),
    "missing_image": (["--image={out_dir}/nope.png"], "does not exist"),
    "missing_workdir": (["--workdir={out_dir}/none"], "does not exist"),
    "untrained_workdir": (["--workdir={out_dir}"], "no trained stage-2 model"),
}


@pytest.mark.parametrize("case", sorted(SAMPLE_CASES))
def test_sample_bad_invocations(case, trained_workdir, tmp_path, capfd):
  from PIL import Image
  import numpy as np
  image = str(tmp_path / "x0.png")
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
  out_dir = tmp_path / "out"
  out_dir.mkdir()
  argv = [f"--workdir={trained_workdir}", f"--image={image}", f"--out={out_dir}/o.gif"]
  extra, must_contain = SAMPLE_CASES[case]
  extra = [a.format(out_dir=out_dir) for a in extra]
  names = {a.split("=")[0] for a in extra}
  argv = [a for a in argv if a.split("=")[0] not in names] + extra
  rc = sample_cli.run(["sample", *argv])
  _check_one_error_line(capfd, rc, must_contain)
  assert os.listdir(out_dir) == []


def test_every_shipped_config_passes_validation():
  for name in ("shapes", "bair", "iper", "landscape", "dtdb"):
    for arg in ("", ":tiny"):
      config_check.check_config(config_lib.load_config(f"configs/{name}.py{arg}"), 1)
  config_check.check_config(config_lib.load_config("configs/shapes.py:res64"), 1)


def test_batch_must_divide_devices():
  config = config_lib.load_config("configs/shapes.py:tiny")
  with pytest.raises(ValueError, match=r"stage1.batch_size=2 is not divisible by the 8 devices"):
    config_check.check_config(config, device_count=8)


def test_metric_names_match_the_protocol():
  from i2v_flax.evaluation import protocol
  assert set(config_check.KNOWN_METRICS) == set(protocol.KNOWN_METRICS)


def test_a_bug_keeps_its_traceback(capfd):
  from i2v_flax import cli

  def buggy(argv):
    del argv
    return 1 / 0

  with pytest.raises(ZeroDivisionError):
    cli.execute(buggy, ["prog"])
  assert "ZeroDivisionError" in capfd.readouterr().err


def test_subprocess_error_is_one_line(tmp_path):
  """The real `python -m` path: absl start-up, fd redirection, exit status."""
  proc = subprocess.run(
      [sys.executable, "-m", "i2v_flax.main", TINY, f"--workdir={tmp_path / 'run'}",
       "--config.stage1.batch_size=-2"], capture_output=True, text=True, cwd=REPO, timeout=300)
  assert proc.returncode == errors.EXIT_CODE
  assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
  assert proc.stderr.startswith("error: config.stage1.batch_size=-2 must be > 0. Fix:")
  assert not (tmp_path / "run").exists()
