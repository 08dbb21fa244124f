"""``reelrec clean-text INPUT --out OUTPUT``: the MAP-CC Chinese text-cleaning pipeline of CT-LLM.

Input: ``.jsonl`` (one JSON object per line, the text in ``--text-field``) or ``.txt`` (one
document per line); blank lines are skipped in both. Output: ``.jsonl``, one line per kept
document: the input object with its text replaced by the cleaned text (``.txt``: ``{"text"}``),
plus ``"source_line"`` (1-based line number in INPUT). The report (``OUTPUT`` with
``.report.json``) has the per-rule drop counts and rates. Both are written to temp files and
renamed, so an error or Ctrl-C leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

from reelrec.config import ConfigError
from reelrec.content.text_cleaning import PRESETS, RULES, CleaningConfig, TextCleaner
from reelrec.data.readers import DataFormatError
from reelrec.io import atomic_path, atomic_write_json, run_metadata


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec clean-text``."""
    p = argparse.ArgumentParser(
        prog="reelrec clean-text",
        description="Clean a Chinese (or other) text corpus with the MAP-CC pipeline of CT-LLM "
        "(arXiv 2404.04167): heuristic filters (length, sentence count, word length, symbol / "
        "digit ratios, bullet and 'read more' lines, character entropy, language ID, n-gram "
        "repetition), exact and MinHash-LSH near-duplicate removal, and similar-line removal "
        "inside documents. Writes the kept documents as JSONL and a report with per-rule "
        "drop counts.",
        epilog="rules, in order: " + ", ".join(RULES) + ". Thresholds: --set KEY=VALUE with "
        "the fields of reelrec.content.text_cleaning.CleaningConfig, e.g. --set min_chars=20, "
        "--set max_top_ngram_share=0.2,0.18,0.16; English too: --set languages=zh,en --set "
        "min_char_entropy=2.5 (English letters carry about 2.9 nats, under the default 3).",
    )
    p.add_argument(
        "input",
        type=Path,
        help=".jsonl (objects with a text field) or .txt (one document per line)",
    )
    p.add_argument("--out", "-o", type=Path, required=True, help="output .jsonl of kept documents")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (text)")
    p.add_argument(
        "--report",
        type=Path,
        default=None,
        help="report path (default: OUTPUT with suffix .report.json)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a CleaningConfig threshold (repeatable)",
    )
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="documents",
        help="threshold set: documents (CT-LLM's released thresholds, for long text) or "
        "captions (short-video captions and cover text: one short line is enough); --set "
        "overrides either (default: documents)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress display")
    return p


def parse_overrides(items: list[str], base: CleaningConfig | None = None) -> CleaningConfig:
    """``base`` (default: the released thresholds) with ``KEY=VALUE`` overrides (values typed
    like the defaults).

    Raises:
        ConfigError: unknown key, malformed item or value of the wrong type / range.
    """
    kinds = {f.name: f for f in fields(CleaningConfig)}
    default = base or CleaningConfig()
    values: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        if key not in kinds:
            raise ConfigError(f"--set {key}: unknown setting; known: {', '.join(kinds)}")
        old = getattr(default, key)
        try:
            if isinstance(old, bool):
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                values[key] = raw.lower() in ("true", "1")
            elif isinstance(old, tuple):
                parts = [x.strip() for x in raw.strip().strip("()[]").split(",") if x.strip()]
                values[key] = tuple(type(old[0])(x) for x in parts)
            else:
                values[key] = type(old)(raw)
        except ValueError:
            example = ",".join(map(str, old)) if isinstance(old, tuple) else repr(old)
            raise ConfigError(
                f"--set {key}={raw!r}: expected {type(old).__name__} like {example}"
            ) from None
    try:
        return CleaningConfig(**{**{k: getattr(default, k) for k in kinds}, **values})
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"--set: {exc}") from None


def read_documents(path: Path, text_field: str = "text") -> Iterator[tuple[int, str, dict | None]]:
    """``(line number (1-based), text, JSON object or None)`` of each non-blank line of a
    ``.txt`` (one document per line) or ``.jsonl`` file, in order.

    Raises:
        FileNotFoundError: ``path`` does not exist or is not a file.
        DataFormatError: a line is not UTF-8, not JSON, not an object, or lacks a string
            ``text_field`` (the error names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    jsonl = path.suffix.lower() in (".jsonl", ".json", ".ndjson")
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataFormatError(f"{path}:{n}: not UTF-8 ({exc.reason})") from None
            if n == 1:
                line = line.removeprefix("\ufeff")  # a UTF-8 byte-order mark
            if not line.strip():
                continue
            if not jsonl:
                yield n, line, None
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{path}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataFormatError(
                    f"{path}:{n}: expected a JSON object, got {type(row).__name__}"
                )
            if "\\ud" in line.lower():  # JSON escapes may encode lone surrogates
                try:
                    json.dumps(row, ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise DataFormatError(
                        f"{path}:{n}: a string holds a lone UTF-16 surrogate ({exc.reason})"
                    ) from None
            text = row.get(text_field)
            if not isinstance(text, str):
                raise DataFormatError(
                    f"{path}:{n}: field {text_field!r} is "
                    + ("missing" if text_field not in row else type(text).__name__)
                    + f" (fields: {sorted(row)[:10]}); set --text-field"
                )
            yield n, text, row


def count_lines(path: Path) -> int:
    """Number of lines in ``path`` (for the progress bar)."""
    with Path(path).open("rb") as f:
        return sum(1 for _ in f)


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec clean-text``; returns the exit status."""
    args = build_parser().parse_args(argv)
    cfg = parse_overrides(args.set, PRESETS[args.preset])
    out = args.out
    if str(out) in ("", ".") or out.is_dir():
        raise ConfigError(f"--out {str(out)!r}: needs a file name, not a directory")
    report_path = args.report or out.with_suffix(".report.json")
    paths = {"INPUT": args.input, "--out": out, "--report": report_path}
    if args.input.is_dir():
        raise IsADirectoryError(f"{args.input}: is a directory, not a file of documents")
    if not args.input.is_file():
        raise FileNotFoundError(f"{args.input}: no such file")
    for name in ("--out", "--report"):
        p = paths[name]
        if str(p) in ("", ".") or p.is_dir():
            raise ConfigError(f"{name} {str(p)!r}: needs a file name, not a directory")
        if p.exists() and not p.is_file():
            raise ConfigError(f"{name} {p}: exists and is not a regular file (a device?)")
    resolved = {name: Path(p).resolve() for name, p in paths.items()}
    for a, b in (("--out", "INPUT"), ("--report", "INPUT"), ("--report", "--out")):
        if resolved[a] == resolved[b]:
            raise ConfigError(f"{a} {paths[a]} is the same file as {b}: choose another path")
    total = count_lines(args.input)
    cleaner = TextCleaner(cfg)
    lines: list[int] = []
    rows: list[dict | None] = []

    def texts():
        for n, text, row in read_documents(args.input, args.text_field):
            lines.append(n)
            rows.append(row)
            yield text

    with atomic_path(out) as tmp, tmp.open("w", encoding="utf-8") as f:
        kept, report = cleaner.clean(texts(), progress=not args.no_progress, total=total)
        for index, text in kept:
            row = dict(rows[index]) if rows[index] is not None else {}
            row[args.text_field if rows[index] is not None else "text"] = text
            row["source_line"] = lines[index]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    info = {
        "input": str(args.input),
        "output": str(out),
        "blank_lines_skipped": total - len(lines),
        **report.to_json(),
        "config": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
        **run_metadata(),
    }
    atomic_write_json(report_path, info)
    width = max(map(len, RULES))
    summary = [
        f"{report.docs:,} documents read, {report.kept:,} kept "
        f"({report.kept / max(report.docs, 1):.1%}) in {report.seconds:.1f}s"
    ]
    summary += [
        f"  {rule:<{width}}  {n:>8,}  {report.drop_rate[rule]:7.2%}"
        for rule, n in report.dropped.items()
        if n
    ]
    summary.append(f"  similar segments removed inside kept documents: {report.segments_removed:,}")
    summary.append(f"-> {out}, {report_path}")
    print("\n".join(summary), file=sys.stdout)
    return 0
