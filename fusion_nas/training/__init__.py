"""Data, devices and the one training loop every trained network goes through."""
