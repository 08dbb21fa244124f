"""``reelrec datasets``: list every registered dataset with found/missing, rows, users, items."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from reelrec.data import sources


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec datasets``."""
    p = argparse.ArgumentParser(
        prog="reelrec datasets",
        description="List the datasets reelrec knows, whether each is found under the data "
        f"root (${sources.ENV_VAR}), and its size once loaded. With --download NAME, fetch a "
        "dataset from its official source into ~/.cache/reelrec and check its sha256.",
    )
    p.add_argument("--data-dir", default="", help=f"data root (default: ${sources.ENV_VAR})")
    p.add_argument("--download", metavar="NAME", help="download NAME from its official source")
    p.add_argument("--no-count", action="store_true", help="do not load datasets to count rows")
    return p


def dataset_rows(data_dir: str = "", count: bool = True) -> list[dict[str, object]]:
    """One row per dataset: name, folder, status ("found"/"missing"/"error: ..."), rows, users, items."""
    return list(iter_dataset_rows(data_dir, count))


def iter_dataset_rows(data_dir: str = "", count: bool = True) -> Iterator[dict[str, object]]:
    """Like :func:`dataset_rows`, one dataset at a time (loading all takes about 30 s)."""
    root = sources.data_root(data_dir or None)
    for name, spec in sources.DATASETS.items():
        row: dict[str, object] = {"name": name, "folder": str(root / spec.folder)}
        if not (root / spec.folder).is_dir():
            row["status"] = "missing"
        elif not count:
            row["status"] = "found"
        else:
            try:
                inter = sources.load(name, root).interactions
                row.update(
                    status="found",
                    rows=len(inter),
                    users=int(inter["user_id"].nunique()),
                    items=int(inter["item_id"].nunique()),
                )
            except Exception as exc:  # report, keep listing the others
                row["status"] = f"error: {exc}"
        yield row


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec datasets``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.download:
        folder = sources.fetch(args.download)
        print(f"downloaded {args.download} into {folder}; use --data-dir {folder.parent}")
        return 0
    root = sources.data_root(args.data_dir or None)
    print(f"data root: {root}")
    print(f"{'name':<15} {'status':<8} {'rows':>10} {'users':>8} {'items':>8}  folder")
    for r in iter_dataset_rows(args.data_dir, count=not args.no_count):
        status = str(r["status"])
        print(
            f"{r['name']:<15} {status.split(':')[0]:<8} {r.get('rows', ''):>10} "
            f"{r.get('users', ''):>8} {r.get('items', ''):>8}  {r['folder']}",
            flush=True,
        )
        if status.startswith("error"):
            print(f"    {status}")
    return 0
