"""Models: networks, likelihoods p(x|z), priors p(z), conditions c, and the VAE that composes them."""
