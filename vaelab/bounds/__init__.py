"""Bounds on log p(x): the one importance-weighting estimator and the training objectives built on it."""
