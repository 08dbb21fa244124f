"""Semantic IDs: residual k-means (OneRec), RQ-VAE (TIGER), VQ codes (QARM), collision handling.

Methods (``TokenizerConfig.method``):

* ``rq-kmeans-balanced``: OneRec (arXiv 2502.18965) Sec. 2.2: per level l, balanced k-means
  (Algorithm 1, :func:`reelrec.tokenizer.kmeans.balanced_kmeans`) on the residuals
  ``r^l``; ``s^l = `` the item's balanced cluster; ``r^{l+1} = r^l - c^l_{s^l}``.
* ``rq-kmeans``: the same residual scheme with plain k-means (faiss), as in the OneRec Technical
  Report (arXiv 2506.13695) Sec. 2.1 and QARM (arXiv 2411.11739) "RQ-Kmeans code".
* ``rq-vae``: TIGER's RQ-VAE (:mod:`reelrec.tokenizer.rqvae`).
* ``vq``: QARM's VQ code: the codebook is the (aligned) item embeddings themselves and an item's
  code is the ids of its ``vq_topk`` nearest other items by inner product
  (:func:`vq_codes`; written to ``vq_codes.parquet``, not a semantic ID).

Collisions (TIGER, arXiv 2305.05065 Sec. 3.1): items sharing all L codes get an extra level
``0, 1, 2, ...`` in item-id order; every other item gets 0 there, so every semantic ID has
L + 1 codes and all are unique. Deviation: TIGER caps that level at K; we do not cap it and report
its largest value (``disambiguation_max``) so an over-full prefix is visible.

Statistics (``stats.json``), per level l (1-based in the file):

* ``utilisation``: distinct codes used / K (OneRec TR Table 11 "codebook utilisation");
* ``entropy_bits``: Shannon entropy of the level's code distribution over items, in bits
  (OneRec TR Table 11 reports the same quantity in nats: divide ours by log2(e) = 1.4427);
* ``recon_loss``: mean over items of the squared L2 distance between the item embedding and its
  reconstruction from levels 1..l (input space for every method, so methods compare);
* ``collision_rate``: 1 - distinct (c_1..c_l) prefixes / N, i.e. the fraction of items that
  share their prefix with an earlier item (before disambiguation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from reelrec.config import ConfigError
from reelrec.io import atomic_path, atomic_write_json

METHODS = ("rq-kmeans-balanced", "rq-kmeans", "rq-vae", "vq")
#: methods whose output is a semantic ID (the ``vq`` method writes neighbour codes instead)
RQ_METHODS = METHODS[:3]


@dataclass
class TokenizerConfig:
    """What ``reelrec tokenize`` fits; saved in ``RUN/tokenizer/config.yaml``."""

    method: str = "rq-kmeans-balanced"  # one of METHODS
    levels: int = 3  # L, code levels before disambiguation (1..8)
    codebook_size: int = 0  # K codes per level; 0 = auto: largest power of 2 <= min(256, N/4)
    iters: int = 50  # k-means passes per level (balanced stops earlier at convergence)
    seed: int = 0  # seed of every random choice (same seed, same IDs)
    embeddings: str = "aligned"  # RUN/content file to quantise: aligned | raw
    vq_topk: int = 25  # QARM VQ code length: nearest items per item
    rqvae_epochs: int = 300  # RQ-VAE passes over the items
    rqvae_lr: float = 1e-3  # RQ-VAE AdamW learning rate
    rqvae_batch_size: int = 1024  # RQ-VAE items per step
    rqvae_dead_code_threshold: float = 2.0  # RQ-VAE: re-seed codes used less (0 = off, TIGER)
    rqvae_ema_decay: float = 0.9  # RQ-VAE codebook EMA decay (TIGER-style: 0.99)


@dataclass
class SemanticIDs:
    """A fitted tokenizer and the semantic ID of every item.

    Attributes:
        method: one of :data:`RQ_METHODS`.
        item_ids: int64 (N,), ascending.
        codes: int64 (N, L), level codes in 0..K-1.
        semantic_ids: int64 (N, L + 1): ``codes`` plus the disambiguation level.
        tensors: codebooks (``level_1`` ... float32 (K, D)) or RQ-VAE weights, for safetensors.
        stats: the statistics described in the module docstring.
    """

    method: str
    item_ids: np.ndarray
    codes: np.ndarray
    semantic_ids: np.ndarray
    tensors: dict[str, np.ndarray]
    stats: dict[str, object] = field(default_factory=dict)


def auto_codebook_size(n_items: int) -> int:
    """Largest power of two <= min(256, n_items // 4), at least 2 (TIGER uses 256 on Beauty)."""
    target = max(2, min(256, n_items // 4))
    return 1 << (target.bit_length() - 1)


def check_config(cfg: TokenizerConfig, n_items: int) -> int:
    """Validate ``cfg`` against the catalogue; returns the codebook size K.

    Raises:
        ValueError: unknown method, levels outside 1..8, K < 2, fewer items than codes, a
            count below 1, a learning rate <= 0, an EMA decay outside (0, 1).
    """
    if cfg.method not in METHODS:
        raise ConfigError(f"unknown tokenizer method {cfg.method!r}; known: {', '.join(METHODS)}")
    if not 1 <= cfg.levels <= 8:
        raise ConfigError(f"tokenizer.levels must be in 1..8, got {cfg.levels}")
    k = cfg.codebook_size or auto_codebook_size(n_items)
    if k < 2:
        raise ConfigError(f"tokenizer.codebook_size must be >= 2 (or 0 for auto), got {k}")
    if n_items < k:
        raise ConfigError(
            f"fewer items ({n_items}) than codes per level ({k}): lower tokenizer.codebook_size"
        )
    positive = {
        "iters": cfg.iters,
        "rqvae_epochs": cfg.rqvae_epochs,
        "rqvae_batch_size": cfg.rqvae_batch_size,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"tokenizer.{key} must be >= 1, got {value}")
    if not 0 < cfg.rqvae_lr < float("inf"):
        raise ConfigError(f"tokenizer.rqvae_lr must be finite and > 0, got {cfg.rqvae_lr}")
    if not 0 <= cfg.seed <= 2**31 - 1 - cfg.levels:
        raise ConfigError(f"tokenizer.seed must be in 0..2**31-{1 + cfg.levels}, got {cfg.seed}")
    if cfg.method == "rq-vae" and cfg.rqvae_batch_size < k:
        raise ConfigError(
            f"tokenizer.rqvae_batch_size ({cfg.rqvae_batch_size}) must be >= the codebook size "
            f"({k}): the codebooks are initialised by k-means on the first batch"
        )
    if not 0 < cfg.rqvae_ema_decay < 1:
        raise ConfigError(f"tokenizer.rqvae_ema_decay must be in (0, 1), got {cfg.rqvae_ema_decay}")
    if not cfg.rqvae_dead_code_threshold >= 0 or cfg.rqvae_dead_code_threshold == float("inf"):
        raise ConfigError(
            f"tokenizer.rqvae_dead_code_threshold must be >= 0, got {cfg.rqvae_dead_code_threshold}"
        )
    if cfg.method == "vq" and not 1 <= cfg.vq_topk < n_items:
        raise ConfigError(f"tokenizer.vq_topk must be in 1..{n_items - 1}, got {cfg.vq_topk}")
    return k


def residual_kmeans(
    x: np.ndarray, levels: int, k: int, balanced: bool, iters: int, seed: int
) -> tuple[list[np.ndarray], np.ndarray, list[float], list[dict]]:
    """Residual k-means: per level, cluster the residuals and subtract the chosen centroid.

    Args:
        x: float32 (N, D) item embeddings.
        levels: L. k: K codes per level. balanced: OneRec balanced k-means, else faiss k-means.
        iters: passes per level. seed: level l uses ``seed + l``.

    Returns:
        ``(codebooks L x (K, D), codes int64 (N, L), recon loss after each level, fit info per
        level)``.
    """
    from reelrec.tokenizer.kmeans import balanced_kmeans, plain_kmeans

    fit = balanced_kmeans if balanced else plain_kmeans
    r = np.asarray(x, dtype=np.float64)
    codebooks, codes, recon, info = [], [], [], []
    for level in range(levels):
        res = fit(r.astype(np.float32), k, iters=iters, seed=seed + level)
        codebooks.append(res.centroids)
        codes.append(res.assign)
        r = r - res.centroids[res.assign].astype(np.float64)
        recon.append(float((r * r).sum(1).mean()))
        sizes = np.bincount(res.assign, minlength=k)
        info.append(
            {
                "iters": res.iters,
                "converged": res.converged,
                "cluster_size_min": int(sizes.min()),
                "cluster_size_max": int(sizes.max()),
            }
        )
    return codebooks, np.stack(codes, 1).astype(np.int64), recon, info


def encode_residual(x: np.ndarray, codebooks: list[np.ndarray]) -> np.ndarray:
    """Codes of new embeddings under fitted residual codebooks (nearest centroid per level).

    For balanced codebooks this is the usual nearest-centroid rule: the equal-size constraint
    applies to the catalogue the codebooks were fitted on, not to new items.

    Args:
        x: float (N, D). codebooks: L x (K, D).

    Returns:
        int64 (N, L).
    """
    from reelrec.tokenizer.kmeans import nearest

    r = np.asarray(x, dtype=np.float64)
    out = []
    for cb in codebooks:
        c = nearest(r, cb)
        out.append(c)
        r = r - cb[c].astype(np.float64)
    return np.stack(out, 1).astype(np.int64)


def disambiguate(codes: np.ndarray) -> np.ndarray:
    """TIGER's extra level: 0, 1, 2, ... among items sharing all codes, in row order.

    Args:
        codes: int (N, L).

    Returns:
        int64 (N, L + 1), rows unique.
    """
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or len(codes) == 0:
        raise ValueError(f"codes must be a non-empty (N, L) array, got shape {codes.shape}")
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    order = np.argsort(inverse, kind="stable")
    sorted_groups = inverse[order]
    starts = np.r_[0, np.flatnonzero(sorted_groups[1:] != sorted_groups[:-1]) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    extra = np.empty(len(codes), dtype=np.int64)
    extra[order] = np.arange(len(order)) - group_start
    return np.concatenate([codes, extra[:, None]], axis=1)


def level_stats(codes: np.ndarray, k: int, recon: list[float]) -> dict[str, object]:
    """Per-level utilisation, entropy (bits), recon loss and prefix collision rate.

    Args:
        codes: int (N, L) codes before disambiguation. k: codebook size K.
        recon: recon loss after each level (L,).

    Returns:
        Dict with lists of length L plus scalars ``recon_loss`` and ``collision_rate`` (level L).
    """
    n, levels = codes.shape
    util, ent, coll = [], [], []
    for lv in range(levels):
        counts = np.bincount(codes[:, lv], minlength=k)
        p = counts[counts > 0] / n
        util.append(float((counts > 0).sum() / k))
        ent.append(float(-(p * np.log2(p)).sum()) + 0.0)  # + 0.0: no "-0.0 bits" in reports
        coll.append(float(1.0 - len(np.unique(codes[:, : lv + 1], axis=0)) / n))
    return {
        "utilisation": util,
        "entropy_bits": ent,
        "max_entropy_bits": float(np.log2(k)),
        "recon_loss_per_level": [float(v) for v in recon],
        "collision_rate_per_level": coll,
        "recon_loss": float(recon[-1]),
        "collision_rate": coll[-1],
    }


def fit_semantic_ids(
    item_ids: np.ndarray, x: np.ndarray, cfg: TokenizerConfig, log=None
) -> SemanticIDs:
    """Fit ``cfg.method`` on item embeddings and give every item a unique semantic ID.

    Args:
        item_ids: int (N,) unique item ids.
        x: float32 (N, D) embeddings, finite, no zero rows (see
            :func:`reelrec.content.items.check_embeddings`).
        cfg: :class:`TokenizerConfig` with ``method`` in :data:`RQ_METHODS`.
        log: optional callable for progress lines.

    Returns:
        :class:`SemanticIDs` with rows sorted by item id.

    Raises:
        ValueError: bad config, fewer items than codes, or bad embeddings.
    """
    from reelrec.content.items import check_embeddings

    check_embeddings(item_ids, x, "tokenizer input")
    k = check_config(cfg, len(x))
    if cfg.method not in RQ_METHODS:
        raise ValueError(f"{cfg.method!r} does not make semantic IDs; use vq_codes()")
    order = np.argsort(item_ids, kind="stable")
    item_ids = np.asarray(item_ids, dtype=np.int64)[order]
    x = np.asarray(x, dtype=np.float32)[order]
    if cfg.method == "rq-vae":
        from reelrec.tokenizer.rqvae import RQVAEConfig, fit_rqvae

        rcfg = RQVAEConfig(
            levels=cfg.levels,
            codebook_size=k,
            epochs=cfg.rqvae_epochs,
            batch_size=cfg.rqvae_batch_size,
            lr=cfg.rqvae_lr,
            dead_code_threshold=cfg.rqvae_dead_code_threshold,
            ema_decay=cfg.rqvae_ema_decay,
            seed=cfg.seed,
        )
        model, codes, recon, rq_history = fit_rqvae(x, rcfg, log=log)
        # 0-d buffers become (1,): safetensors stores no 0-d arrays, and the copy must reload equal
        tensors = {
            f"rqvae.{n}": np.atleast_1d(t.detach().contiguous().numpy())
            for n, t in model.state_dict().items()
        }
        info: list[dict] = [{"rqvae_history": rq_history}]  # loss terms by name, per epoch
    else:
        codebooks, codes, recon, info = residual_kmeans(
            x, cfg.levels, k, cfg.method == "rq-kmeans-balanced", cfg.iters, cfg.seed
        )
        tensors = {f"level_{i + 1}": cb for i, cb in enumerate(codebooks)}
    sids = disambiguate(codes)
    _, group_sizes = np.unique(codes, axis=0, return_counts=True)
    stats = {
        "method": cfg.method,
        "items": len(item_ids),
        "levels": cfg.levels,
        "codebook_size": k,
        "dim": int(x.shape[1]),
        **level_stats(codes, k, recon),
        # mean squared distance to the mean embedding: recon_loss / total_variance is the
        # share of the embeddings' spread the semantic ID fails to explain
        "total_variance": float(((x - x.mean(0)) ** 2).sum(1).mean()),
        "disambiguation_max": int(sids[:, -1].max()),
        "colliding_groups": int((group_sizes > 1).sum()),  # before disambiguation; 0 after
        "largest_colliding_group": int(group_sizes.max()),
        "unique": bool(len(np.unique(sids, axis=0)) == len(sids)),
        "fit_info": info,
    }
    stats["warnings"] = collapse_warnings(stats)
    for w in stats["warnings"]:
        (log or print)(f"warning: {w}")
    return SemanticIDs(cfg.method, item_ids, codes, sids, tensors, stats)


def collapse_warnings(stats: dict) -> list[str]:
    """Codebook-collapse warnings (CASES.md C12): a level whose code entropy is below 1 bit, or
    that uses under half its codes; and codes that explain under 5% of the variance.

    Args:
        stats: a dict with ``entropy_bits`` and ``utilisation`` lists (:func:`level_stats`).

    Returns:
        One message per offending level (empty when healthy).
    """
    out = []
    if stats.get("total_variance") and stats["recon_loss"] > 0.95 * stats["total_variance"]:
        out.append(
            f"the codes explain under 5% of the embeddings' variance (recon loss "
            f"{stats['recon_loss']:.4f} vs total variance {stats['total_variance']:.4f}): "
            "the quantiser has not learned; train longer"
        )
    for lv, (ent, util) in enumerate(zip(stats["entropy_bits"], stats["utilisation"], strict=True)):
        if ent < 1.0:
            out.append(f"codebook collapse at level {lv + 1}: code entropy {ent:.2f} bits < 1 bit")
        elif util < 0.5:
            out.append(f"level {lv + 1} uses only {util:.1%} of its codes (partial collapse)")
    return out


def vq_codes(item_ids: np.ndarray, x: np.ndarray, topk: int) -> tuple[pd.DataFrame, dict]:
    """QARM VQ codes: each item's ``topk`` nearest other items by inner product.

    Deviation: QARM's codebook is the item embedding set itself and the item would be its own
    nearest code; we leave the item out so the code says something beyond the item id.

    Args:
        item_ids: int (N,). x: float32 (N, D), L2-normalised (inner product = cosine).
        topk: K, 1 <= K < N.

    Returns:
        ``(DataFrame item_id, vq_codes (list of K item ids, nearest first), stats)``; stats give
        the share of items used as a code at least once and the entropy (bits) of code use.
    """
    import faiss

    from reelrec.content.items import check_embeddings

    check_embeddings(item_ids, x, "vq input")
    if len(x) < 2:
        raise ValueError(f"VQ codes need at least 2 items, got {len(x)}")
    if not 1 <= topk < len(x):
        raise ValueError(f"vq_topk must be in 1..{len(x) - 1}, got {topk}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, nn_idx = index.search(x, topk + 1)
    rows = []
    for i, cand in enumerate(nn_idx):
        cand = [c for c in cand if c != i and c >= 0][:topk]
        rows.append(cand)
    ids = np.asarray(item_ids, dtype=np.int64)
    codes = [ids[r].tolist() for r in rows]
    used = np.bincount(np.concatenate(rows), minlength=len(x))
    p = used[used > 0] / used.sum()
    stats = {
        "method": "vq",
        "items": len(x),
        "topk": topk,
        "codebook_utilisation": float((used > 0).mean()),
        "entropy_bits": float(-(p * np.log2(p)).sum()) + 0.0,
        "max_entropy_bits": float(np.log2(len(x))),
    }
    return pd.DataFrame({"item_id": ids, "vq_codes": codes}), stats


def semantic_id_table(sid: SemanticIDs) -> pd.DataFrame:
    """``item_id`` plus ``code_1 .. code_L`` and ``code_{L+1}`` (the disambiguation level)."""
    df = pd.DataFrame({"item_id": sid.item_ids})
    for j in range(sid.semantic_ids.shape[1]):
        df[f"code_{j + 1}"] = sid.semantic_ids[:, j]
    return df


def save_semantic_ids(sid: SemanticIDs, folder: Path, config: dict | None = None) -> None:
    """Write ``codebooks.safetensors``, ``semantic_ids.parquet``, ``stats.json`` atomically.

    Args:
        sid: a fitted :class:`SemanticIDs`.
        folder: output folder (created).
        config: resolved tokenizer config, stored in the safetensors metadata.
    """
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "method": sid.method,
        "levels": str(sid.codes.shape[1]),
        "codebook_size": str(sid.stats["codebook_size"]),
        "config": json.dumps(config or {}),
    }
    with atomic_path(folder / "codebooks.safetensors") as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in sid.tensors.items()}, str(tmp), meta)
    with atomic_path(folder / "semantic_ids.parquet") as tmp:
        semantic_id_table(sid).to_parquet(tmp, index=False)
    atomic_write_json(folder / "stats.json", sid.stats)


def load_semantic_ids(folder: Path) -> SemanticIDs:
    """Read what :func:`save_semantic_ids` wrote (bit-identical tensors and codes).

    Raises:
        FileNotFoundError: a file is missing. ValueError: the files disagree or are malformed.
    """
    from safetensors import SafetensorError, safe_open

    folder = Path(folder)
    paths = [folder / n for n in ("codebooks.safetensors", "semantic_ids.parquet", "stats.json")]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"{p} not found; `reelrec tokenize --run RUN` writes it")
    try:
        with safe_open(str(paths[0]), framework="numpy") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open API
    except SafetensorError as exc:
        raise ValueError(f"{paths[0]}: not a valid safetensors file ({exc})") from None
    df = pd.read_parquet(paths[1])
    stats = json.loads(paths[2].read_text(encoding="utf-8"))
    code_cols = sorted((c for c in df.columns if c.startswith("code_")), key=lambda c: int(c[5:]))
    levels = int(meta.get("levels", len(code_cols) - 1))
    if len(code_cols) != levels + 1:
        raise ValueError(f"{paths[1]}: {len(code_cols)} code columns, expected {levels + 1}")
    sids = df[code_cols].to_numpy(dtype=np.int64)
    return SemanticIDs(
        meta.get("method", stats.get("method", "")),
        df["item_id"].to_numpy(dtype=np.int64),
        sids[:, :levels],
        sids,
        tensors,
        stats,
    )


def plot_stats(stats_by_method: dict[str, dict], path: Path, title: str = "") -> None:
    """Bar plots of utilisation, entropy (bits) and recon loss per level for several methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    names = list(stats_by_method)
    width = 0.8 / max(len(names), 1)
    panels = [
        ("utilisation", "codebook utilisation"),
        ("entropy_bits", "code entropy (bits)"),
        ("recon_loss_per_level", "recon loss (squared L2)"),
    ]
    for ax, (key, label) in zip(axes, panels, strict=True):
        for i, name in enumerate(names):
            vals = stats_by_method[name][key]
            xs = np.arange(1, len(vals) + 1) + (i - (len(names) - 1) / 2) * width
            ax.bar(xs, vals, width=width, label=name)
        if key == "entropy_bits":
            top = max(s["max_entropy_bits"] for s in stats_by_method.values())
            ax.axhline(top, color="gray", ls="--", lw=1)
        ax.set_xlabel("level")
        ax.set_xticks(np.arange(1, len(vals) + 1))
        ax.set_title(label)
    axes[0].legend(fontsize=8, loc="lower center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path.with_suffix(".png")) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
