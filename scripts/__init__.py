"""Command lines of jaxvae/torchvae: short files that parse arguments and call library functions."""
