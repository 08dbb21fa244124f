"""Write the generated tables into docs/results.md between their markers.

Usage: python bench/update_results_md.py

Each block ``<!-- begin: CMD -->`` .. ``<!-- end: CMD -->`` of docs/results.md is replaced by the
output of ``CMD`` (a ``python bench/...`` command that prints markdown from bench/results/*.json),
so that no number in those tables is typed by hand. The file is written to a temp name, then
renamed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from reelrec.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
BLOCK = re.compile(r"<!-- begin: (?P<cmd>[^>]+?) -->\n.*?<!-- end: (?P=cmd) -->", re.S)


def main() -> int:
    """Regenerate every block; returns the exit status."""
    text = DOC.read_text(encoding="utf-8")

    def render(m: re.Match) -> str:
        cmd = m.group("cmd").split()
        if cmd[0] != "python" or not cmd[1].startswith("bench/"):
            raise SystemExit(f"docs/results.md: refusing to run {m.group('cmd')!r}")
        out = subprocess.run(
            [sys.executable, *cmd[1:]], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
        return f"<!-- begin: {m.group('cmd')} -->\n{out}\n<!-- end: {m.group('cmd')} -->"

    new = BLOCK.sub(render, text)
    with atomic_path(DOC) as tmp:
        Path(tmp).write_text(new, encoding="utf-8")
    print(f"{DOC}: {len(BLOCK.findall(text))} block(s) regenerated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
