"""Data sources, the sample contract, window sampling and normalisation."""
