"""Evaluation metrics and the SPEC §6 protocol (`--mode=eval` -> `protocol.evaluate`).

Modules (import the one you need; each pulls in only its own networks):
  resize.py          `resize_bilinear_tf1`: TF1 resize_bilinear bit-for-bit (FVD preprocessing).
  i3d.py             `InceptionI3d`, `load_i3d_variables`, `i3d_logits(videos) -> (N, 400)`
                     (float videos enter unrounded, as (x + 1) * 127.5).
  frechet.py         `frechet_distance(a, b)`: float64, unbiased covariances, eigh square roots.
  fvd.py             `fvd(real, fake)`, `fvd_features`, `fvd_from_features`.
  dtfvd.py           `DTFVDI3D` (DTDB I3D), `load_dtfvd(path)`, `dtfvd_features`, `dtfvd(real, fake)`.
  lpips_metrics.py   `lpips_video(real, fake)`, `lpips_per_video` (LPIPS-VGG v0.1, frame-wise).
  diversity.py       `div_vgg(samples)`, `div_i3d(samples)`, `div_from_features`.
  inception.py       `InceptionV3Pool3`, `load_fid_variables`, torch-checkpoint converter.
  fid.py             `fid(real, fake, weights_path)`, `fid_features`.
  shapes_metrics.py  `track_objects`, `shapes_metrics`, `final_position_spread`, `report_metrics`.
  protocol.py        `evaluate(config, workdir)` -> workdir/eval/<step>.{json,md}.
"""
