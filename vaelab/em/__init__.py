"""Expectation maximisation with exact E-steps: Gaussian mixtures, factor analysis, linear-Gaussian models."""
