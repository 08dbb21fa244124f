"""Serving: the retrieve -> pre-rank -> rank cascade, DCAF computation allocation."""
