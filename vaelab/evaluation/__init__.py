"""Evaluation: importance-weighted likelihood, sample quality, imputation, latent summaries."""
