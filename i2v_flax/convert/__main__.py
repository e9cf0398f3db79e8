"""Convert the authors' released PyTorch models into an i2v_flax workdir.

  pip install -e '.[convert]'      # torch, only to read .pth files (a CPU wheel is enough)
  python -m i2v_flax.convert --config=configs/bair.py --from=RELEASE_DIR --workdir=OUT

RELEASE_DIR holds best_PFVD_ENC.pth (or .pth.tar), best_PFVD_GEN.pth, cINN.pth and
Encoder_stage2.pth, optionally with config_stage1.yaml / config_stage2.yaml. Then:
  python -m i2v_flax.sample --workdir=OUT --image=x0.png --out=s.gif, or sampling.load(OUT)
"""

from absl import flags
from ml_collections import config_flags

from i2v_flax import cli, console, errors

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Dataset config, e.g. configs/bair.py: supplies "
                                "what the files do not (strides, resolution, data).",
                                lock_config=True, allow_override=True)
flags.DEFINE_string("from", None, "Folder with the authors' .pth files (see above).")
flags.DEFINE_string("workdir", None, "Output workdir (must not exist or be empty).",
                    allow_override=True)
flags.DEFINE_list("stages", ["stage1", "stage2"], "Which stages to convert.")
flags.DEFINE_bool("overwrite", False, "Replace an existing non-empty workdir.")


def main(argv: list[str]) -> None:
  """Convert, then say where the workdir is (errors: one line, see i2v_flax.cli)."""
  del argv
  if FLAGS.config is None or not FLAGS["from"].value or not FLAGS.workdir:
    raise errors.InvalidInput("--config, --from and --workdir are required. Fix: e.g. "
                              "--config=configs/bair.py --from=RELEASE_DIR --workdir=OUT.")
  from i2v_flax.convert.release import convert_release
  convert_release(FLAGS.config, FLAGS["from"].value, FLAGS.workdir, stages=FLAGS.stages,
                  overwrite=FLAGS.overwrite)
  print(f"Converted {FLAGS['from'].value} into {FLAGS.workdir}. Sample with "
        f"python -m i2v_flax.sample --workdir={FLAGS.workdir} --image=x0.png",
        file=console.terminal_out(), flush=True)


if __name__ == "__main__":
  raise SystemExit(cli.execute(main, log_prefix="convert"))
