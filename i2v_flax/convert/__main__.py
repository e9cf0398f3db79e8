"""Convert the authors' released PyTorch models into an i2v_flax workdir.

  pip install -e '.[convert]'      # torch, only to read .pth files (a CPU wheel is enough)
  python -m i2v_flax.convert --config=configs/bair.py --from=RELEASE_DIR --workdir=OUT

RELEASE_DIR holds best_PFVD_ENC.pth (or .pth.tar), best_PFVD_GEN.pth, cINN.pth and
Encoder_stage2.pth, optionally with config_stage1.yaml / config_stage2.yaml. Then:
  python -m i2v_flax.sample --workdir=OUT --image=x0.png --out=s.gif, or sampling.load(OUT)
"""

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Dataset config, e.g. configs/bair.py: supplies "
                                "what the files do not (strides, resolution, data).",
                                lock_config=True)
flags.DEFINE_string("from", None, "Folder with the authors' .pth files (see above).")
flags.DEFINE_string("workdir", None, "Output workdir (must not exist or be empty).")
flags.DEFINE_list("stages", ["stage1", "stage2"], "Which stages to convert.")
flags.DEFINE_bool("overwrite", False, "Replace an existing non-empty workdir.")
flags.mark_flags_as_required(["config", "from", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from i2v_flax.convert.release import convert_release
  convert_release(FLAGS.config, FLAGS["from"].value, FLAGS.workdir, stages=FLAGS.stages,
                  overwrite=FLAGS.overwrite)
  print(f"Converted {FLAGS['from'].value} into {FLAGS.workdir}. Sample with "
        f"i2v_flax.sampling.load({FLAGS.workdir!r}).")


if __name__ == "__main__":
  app.run(main)
