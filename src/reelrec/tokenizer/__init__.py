"""Semantic IDs: item alignment (QARM), residual k-means (OneRec), RQ-VAE (TIGER), VQ codes."""
