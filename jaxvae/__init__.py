"""jaxvae: MNIST autoencoders and VAEs in JAX + Flax NNX + Optax. Twin: `torchvae` (PyTorch)."""
