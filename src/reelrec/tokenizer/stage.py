"""The ``tokenize`` stage of a run: item embeddings -> semantic IDs (balanced RQ-Kmeans, RQ-Kmeans,
RQ-VAE) or VQ codes in ``RUN/tokenizer/``. ``reelrec tokenize`` is its command line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from reelrec.config import ConfigError, to_dict, to_yaml
from reelrec.content.items import load_embeddings
from reelrec.data.prepare import read_json
from reelrec.io import atomic_path, atomic_write_json, run_metadata, sha256_file
from reelrec.tokenizer.semantic_ids import (
    TokenizerConfig,
    fit_semantic_ids,
    plot_stats,
    save_semantic_ids,
    vq_codes,
)

#: --tokenizer.embeddings value -> RUN/content file stem
EMBEDDING_FILES = {"aligned": "aligned_embeddings", "raw": "item_embeddings"}


@dataclass
class TokenizeStage:
    """Config tree of ``reelrec tokenize`` (saved as OUT/config.yaml)."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)


def tokenize_run(
    run_dir: Path, cfg: TokenizeStage, out: Path | None = None, log=print
) -> dict[str, object]:
    """Fit ``cfg.tokenizer`` on the run's embeddings and write the tokenizer; returns its stats.

    Raises:
        ConfigError: unknown embeddings choice.
        FileNotFoundError: the embeddings file is missing (names the command that makes it).
        ValueError: bad embeddings, fewer items than codes, bad config values.
    """
    tcfg = cfg.tokenizer
    if tcfg.embeddings not in EMBEDDING_FILES:
        raise ConfigError(
            f"tokenizer.embeddings must be one of {', '.join(EMBEDDING_FILES)}, got {tcfg.embeddings!r}"
        )
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "tokenizer"
    content = run_dir / "content"
    if tcfg.embeddings == "aligned" and not (content / "aligned_embeddings.npy").exists():
        hint = (
            "; or quantise the unaligned ones with --tokenizer.embeddings=raw"
            if (content / "item_embeddings.npy").exists()
            else " (after `reelrec encode --run RUN`)"
        )
        raise FileNotFoundError(
            f"{content / 'aligned_embeddings.npy'} not found: run `reelrec align --run {run_dir}`"
            + hint
        )
    if tcfg.embeddings == "aligned" and (content / "align.json").exists():
        made_from = read_json(content / "align.json").get("item_embeddings_sha256")
        if made_from and made_from != sha256_file(content / "item_embeddings.npy"):
            raise ConfigError(
                f"{content / 'aligned_embeddings.npy'} was aligned from other item embeddings "
                f"(re-encoded since): run `reelrec align --run {run_dir}` again"
            )
    ids, x = load_embeddings(content, EMBEDDING_FILES[tcfg.embeddings])
    dataset = (
        read_json(run_dir / "run.json").get("dataset") if (run_dir / "run.json").exists() else None
    )
    t0 = time.perf_counter()
    if tcfg.method == "vq":
        table, stats = vq_codes(ids, x, tcfg.vq_topk)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_path(out / "vq_codes.parquet") as tmp:
            table.to_parquet(tmp, index=False)
        stats |= {"seconds": round(time.perf_counter() - t0, 2), **run_metadata()}
        atomic_write_json(out / "vq_stats.json", stats)
        log(f"VQ codes: top-{tcfg.vq_topk} nearest items for {len(ids):,} items -> {out}")
        return stats
    if (out / "stats.json").exists():
        old = read_json(out / "stats.json").get("method")
        log(f"replacing the {old} tokenizer in {out} (use --out DIR to keep several)")
    sid = fit_semantic_ids(ids, x, tcfg, log=log)
    sid.stats |= {
        "embeddings": tcfg.embeddings,
        "dataset": dataset,
        "seconds": round(time.perf_counter() - t0, 2),
        **run_metadata(),
    }
    # the plot first: if its folder cannot be written, no file of the old tokenizer is replaced
    plot_stats(
        {tcfg.method: sid.stats},
        out / "plots" / "tokenizer.png",
        title=f"{dataset or run_dir}: {tcfg.method} on {tcfg.embeddings} embeddings",
    )
    save_semantic_ids(sid, out, to_dict(tcfg))
    to_yaml(cfg, out / "config.yaml")
    s = sid.stats
    log(
        f"{tcfg.method}: {s['items']:,} items, {s['levels']} levels x {s['codebook_size']} codes; "
        f"utilisation {[round(u, 3) for u in s['utilisation']]}, entropy (bits) "
        f"{[round(e, 2) for e in s['entropy_bits']]}, recon loss {s['recon_loss']:.4f}, "
        f"collision rate {s['collision_rate']:.4f} -> unique IDs in {out}"
    )
    return s
