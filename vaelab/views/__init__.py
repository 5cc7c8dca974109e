"""Views: image grids, plots, the HTML report, TensorBoard logging and the latent explorer."""
