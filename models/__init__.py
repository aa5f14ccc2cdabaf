"""Diffusion priors behind one interface (models.base.Prior). Knows torch and diffusers."""
