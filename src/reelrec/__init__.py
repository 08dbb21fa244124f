"""reelrec: a short-video recommendation stack (datasets, semantic IDs, generative retrieval,
ranking, serving) built from the papers listed in docs/ and DESIGN.md."""

__version__ = "0.2.0"
