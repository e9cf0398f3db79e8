"""i2v_flax: Stochastic Image-to-Video Synthesis using cINNs, in JAX/Flax."""

__version__ = "0.1.0"
