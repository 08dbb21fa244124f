"""Real Chinese short-video text through the content stages: KuaiRec captions -> CT-LLM cleaning
-> encoders -> balanced RQ-Kmeans semantic IDs, judged by KuaiRec's own category tree.

Usage: python bench/kuairec_captions.py [--encoders e5-small hashing] [--limit N]

Data: ``$REELREC_DATA_DIR/kuairec-caption-category`` (10,728 KuaiRec videos; cover text and
caption joined, :mod:`reelrec.data.kuairec`). Steps:

1. the MAP-CC cleaning of CT-LLM (:class:`reelrec.content.text_cleaning.TextCleaner`) over
   every item text, with the released (``documents``) thresholds and with the ``captions``
   preset: kept share and drops per rule;
2. each encoder embeds the cleaned texts of the items the captions preset keeps (e5-small: the bundled
   multilingual-e5-small; hashing: weight-free n-gram hashing, the floor);
3. balanced RQ-Kmeans (3 levels, automatic codebook size) makes semantic IDs;
4. **category purity** of the first semantic-ID level: items sharing a level-1 code are
   grouped (about N/K items per group), and purity is the share of items of a group in the
   group's most common first-level category, averaged over items (items without a category
   left out). The same groups with their items shuffled give the chance level. Higher = the
   codes follow what the videos are about, without ever seeing the categories. (Deeper
   prefixes are mostly single items here, whose purity is 1 by construction: not reported.)

Writes ``bench/results/kuairec_captions.json`` and prints a table. Times are wall seconds on
this machine (encoding: one process; e5-small embeddings are cached by text hash, so a second
run reports the cache's time: see ``cache_hit``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from reelrec.content.encoders import E5SmallEncoder, HashingEncoder, encode_cached  # noqa: E402
from reelrec.content.text_cleaning import PRESETS, TextCleaner  # noqa: E402
from reelrec.data.kuairec import load_kuairec_captions  # noqa: E402
from reelrec.data.sources import data_root  # noqa: E402
from reelrec.io import atomic_write_json  # noqa: E402
from reelrec.tokenizer.semantic_ids import TokenizerConfig, fit_semantic_ids  # noqa: E402

RESULTS = ROOT / "bench" / "results"
ENCODERS = {"e5-small": E5SmallEncoder, "hashing": lambda: HashingEncoder(256)}


def purity(groups: np.ndarray, labels: np.ndarray) -> float:
    """Item-weighted share of each group's most common label: groups, labels int (N,)."""
    _, g = np.unique(groups, return_inverse=True)
    _, lab = np.unique(labels, return_inverse=True)
    counts = np.zeros((g.max() + 1, lab.max() + 1), dtype=np.int64)
    np.add.at(counts, (g, lab), 1)
    return float(counts.max(1).sum() / len(labels))


def prefix_purity(codes: np.ndarray, labels: np.ndarray, depth: int, seed: int = 0) -> dict:
    """Purity of the groups of the first ``depth`` codes, and its chance level (shuffled)."""
    keys = np.unique(codes[:, :depth], axis=0, return_inverse=True)[1].ravel()
    rng = np.random.default_rng(seed)
    chance = np.mean([purity(keys, rng.permutation(labels)) for _ in range(5)])
    return {
        "groups": int(keys.max() + 1),
        "purity": round(purity(keys, labels), 4),
        "chance": round(float(chance), 4),
    }


def table(out: dict) -> str:
    """The markdown of docs/results.md from the JSON this script writes."""
    n = out["items_with_text"]
    lines = ["| cleaning preset | kept | the rules that dropped most |", "|---|---|---|"]
    for preset, c in out["cleaning"].items():
        top = sorted(c["dropped"].items(), key=lambda kv: -kv[1])[:3]
        lines.append(
            f"| `{preset}` | {c['kept']:,} of {n:,} ({c['kept_share']:.1%}) | "
            + ", ".join(f"`{k}` {v:,}" for k, v in top)
            + " |"
        )
    lines += [
        "",
        f"Semantic IDs of the {out['cleaning']['captions']['kept']:,} texts the `captions` preset "
        f"keeps ({out['items_with_category']:,} with a first-level category, "
        f"{out['first_level_categories']} categories):",
        "",
        "| encoder | D | encode s | K | level-1 category purity | chance | lift |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in out["encoders"].items():
        a = r["purity_level1"]
        cached = " (cached)" if r["cache_hit"] else ""
        lines.append(
            f"| {name} | {r['dim']} | {r['encode_seconds']}{cached} | {r['codebook_size']} | "
            f"{a['purity']:.3f} | {a['chance']:.3f} | {a['purity'] / a['chance']:.2f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoders", nargs="+", default=list(ENCODERS), choices=list(ENCODERS))
    p.add_argument("--limit", type=int, default=0, help="first N items only (0 = all)")
    p.add_argument("--table", action="store_true", help="print the tables of the last run")
    args = p.parse_args(argv)
    if args.table:
        print(table(json.loads((RESULTS / "kuairec_captions.json").read_text())))
        return 0

    cat = load_kuairec_captions(data_root() / "kuairec-caption-category")
    items = cat.items[cat.items["title"].notna()].reset_index(drop=True)
    if args.limit:
        items = items.head(args.limit)
    cleaning = {}
    for preset, cfg in PRESETS.items():
        kept, report = TextCleaner(cfg).clean(items["title"].tolist(), progress=True)
        cleaning[preset] = {
            "kept": report.kept,
            "kept_share": round(report.kept / max(report.docs, 1), 4),
            "dropped": {k: v for k, v in report.dropped.items() if v},
            "seconds": round(report.seconds, 1),
        }
    rows = [i for i, _ in kept]
    texts = [t for _, t in kept]
    ids = items["item_id"].to_numpy()[rows]
    level1 = items["category1"].to_numpy(dtype="float64", na_value=np.nan)[rows]
    has_cat = ~np.isnan(level1)
    out: dict = {
        "data": "kuairec-caption-category (cover text + caption)",
        "items": len(cat.items),
        "items_with_text": len(items),
        "cleaning": cleaning,
        "encoded": "the texts the captions preset keeps",
        "items_with_category": int(has_cat.sum()),
        "first_level_categories": int(len(np.unique(level1[has_cat]))),
        "encoders": {},
    }
    for name in args.encoders:
        enc = ENCODERS[name]()
        t0 = time.perf_counter()
        x, hit = encode_cached(enc, texts)
        seconds = time.perf_counter() - t0
        sid = fit_semantic_ids(ids, x, TokenizerConfig())
        order = np.argsort(ids)  # fit_semantic_ids returns rows sorted by item id
        codes = np.empty_like(sid.codes)
        codes[order] = sid.codes
        labels = level1[has_cat].astype(np.int64)
        out["encoders"][name] = {
            "dim": int(x.shape[1]),
            "encode_seconds": round(seconds, 1),
            "cache_hit": hit,
            "codebook_size": int(sid.stats["codebook_size"]),
            "utilisation": sid.stats["utilisation"],
            "collision_rate": round(float(sid.stats["collision_rate"]), 4),
            "purity_level1": prefix_purity(codes[has_cat], labels, 1),
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULTS / "kuairec_captions.json", out)
    print(table(out))
    print(f"-> {RESULTS / 'kuairec_captions.json'}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
