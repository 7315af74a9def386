"""Datasets: the embedded RGB-D world, real photos, and loaders for the paper's datasets."""
