"""reelrec: a short-video recommendation stack (datasets, semantic IDs, generative retrieval,
ranking, serving) built from the papers listed in docs/ and DESIGN.md.

The library API is :class:`reelrec.run.Run` (``from reelrec import Run``); it is imported on
first use, so that ``import reelrec`` stays light.
"""

__version__ = "0.2.0"

__all__ = ["ConfigError", "Run", "RunError", "__version__"]


def __getattr__(name: str):
    if name in ("Run", "RunError"):
        from reelrec import run

        return getattr(run, name)
    if name == "ConfigError":
        from reelrec.config import ConfigError

        return ConfigError
    raise AttributeError(f"module 'reelrec' has no attribute {name!r}")
