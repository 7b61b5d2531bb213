"""The commands (`scripts/<name>.py`, installed as `jaxvae-<name>`): parse, pick the twin, call it."""
