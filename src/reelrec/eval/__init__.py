"""eval stage of reelrec; see the README file tree."""
