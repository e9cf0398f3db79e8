"""Loading the authors' PyTorch models: state_dict -> Flax variables, fixtures, parity checks."""
