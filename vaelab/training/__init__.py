"""Training: the run (set-up, checkpoints, resume), the epoch loop, and data-parallel processes."""
