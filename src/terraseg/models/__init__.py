"""Architectures, losses and optimisers built from config."""
