"""The ``align`` stage (QARM item alignment) of a run: ``RUN/content/item_embeddings.npy`` ->
``RUN/content/aligned_embeddings.npy`` + ``align.json``. ``reelrec align`` is its command line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from reelrec.config import to_yaml
from reelrec.content.items import load_embeddings, save_embeddings
from reelrec.data.prepare import load_prepared, read_json
from reelrec.io import atomic_path, atomic_write_json, run_metadata, sha256_file
from reelrec.tokenizer.align import AlignConfig, align, mine_pairs


@dataclass
class AlignStage:
    """Config tree of ``reelrec align`` (saved as RUN/content/align_config.yaml)."""

    align: AlignConfig = field(default_factory=AlignConfig)


def align_run(run_dir: Path, cfg: AlignStage, log=print) -> dict[str, object]:
    """Align the embeddings of ``run_dir``; returns what ``align.json`` records.

    Raises:
        FileNotFoundError: no prepared data or no item embeddings.
        ValueError: too few pairs, bad embeddings or config values.
    """
    from safetensors.torch import save_file

    run_dir = Path(run_dir)
    content = run_dir / "content"
    ids, x = load_embeddings(content, "item_embeddings")
    prep = load_prepared(run_dir)
    t0 = time.perf_counter()
    pairs, counts = mine_pairs(prep.interactions, prep.protocol, cfg.align, ids)
    log(
        f"mined {counts['u2i_mined']:,} U2I + {counts['i2i_mined']:,} I2I pairs "
        f"-> {counts['pairs_unique']:,} unique"
    )
    res = align(ids, x, pairs, cfg.align, log=log)
    save_embeddings(content, "aligned_embeddings", ids, res.aligned)
    with atomic_path(content / "align_head.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in res.head.state_dict().items()}, str(tmp))
    to_yaml(cfg, content / "align_config.yaml")
    encoder = read_json(content / "encoder.json") if (content / "encoder.json").exists() else {}
    report = {
        "encoder": encoder.get("encoder"),
        "item_embeddings_sha256": sha256_file(content / "item_embeddings.npy"),
        "embedding_source": encoder.get("source"),
        "pairs_mined": counts,
        **res.report,
        "seconds": round(time.perf_counter() - t0, 2),
        **run_metadata(),
    }
    atomic_write_json(content / "align.json", report)
    if res.report["best_epoch"] == 0:
        log(
            "no epoch beat the unaligned embeddings on validation pair Recall@10: "
            "aligned_embeddings.npy equals the input embeddings"
        )
    k = 10
    b, a = report["test_before"][f"recall@{k}"], report["test_after"][f"recall@{k}"]
    log(f"test pair Recall@{k}: {b:.4f} before, {a:.4f} after alignment -> {content}")
    return report
