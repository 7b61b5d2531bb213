"""torchvae: the PyTorch reference twin of `jaxvae` (same module and function names)."""
