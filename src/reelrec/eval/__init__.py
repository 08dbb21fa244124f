"""eval stage of reelrec; see docs/layout.md."""
