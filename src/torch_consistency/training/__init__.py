"""Training: the loop, methods, checkpoints and EMAs."""
