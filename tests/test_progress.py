"""What `python -m i2v_flax.main` shows: one bar per phase, no TensorFlow/absl chatter (that goes
to WORKDIR/logs/), and the end-of-run summary. One subprocess, on a copy of the session's
trained workdir with one more step per stage (so both training bars move and show metrics)."""

import glob
import os
import re
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_main_console_has_bars_summary_and_no_chatter(trained_workdir, shapes_data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained_workdir, workdir)
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # Full chatter.
  proc = subprocess.run(
      [sys.executable, "-m", "i2v_flax.main", "--config=configs/shapes.py:tiny",
       f"--workdir={workdir}", f"--config.data.data_dir={shapes_data_dir}",
       "--config.stage1.num_train_steps=5", "--config.stage2.num_train_steps=5",
       "--config.report.num_videos=0"],
      capture_output=True, text=True, cwd=REPO, timeout=900, env=env)
  console = proc.stdout + proc.stderr
  assert proc.returncode == 0, console[-3000:]
  for bar in (r"data i2v_shapes/res32_single: 100%.*1/1", r"stage 1: 100%.*5/5.*l1=.*psnr=",
              r"stage 2: 100%.*5/5.*nll=", r"report: 100%.*6/6"):
    assert re.search(bar, console), (bar, console[-3000:])
  for chatter in ("WARNING", "I0000", "tensorflow", "absl", "Traceback", "W0000"):
    assert chatter not in console, (chatter, console[-3000:])
  assert f"report GIFs   {workdir}/report/" in proc.stdout
  assert f"tensorboard --logdir {workdir}/tensorboard" in proc.stdout
  logs = glob.glob(os.path.join(workdir, "logs", "main-*.log"))
  assert len(logs) == 1 and os.path.getsize(logs[0]) > 0
