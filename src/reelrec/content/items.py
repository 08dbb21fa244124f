"""Item content for the semantic-ID stages: item texts, behaviour-only embeddings, embedding files.

* :func:`item_texts`: one text per item from what the dataset knows: ``title`` (amazon-*: product
  title; ml-1m: film title, year stripped by the SeqRec conversion) and ``genres`` where present.
  The S3-Rec Amazon ``attributes`` are integer brand/category ids without names, so they carry
  nothing a text encoder can read and are not used; ml-1m genres are not in the shared files.
* :func:`behaviour_embeddings`: for datasets without content (kuairand), item2vec in its
  matrix-factorisation form: the positive pointwise mutual information of items co-occurring
  within ``window`` positions of a user's training-split positive sequence, factorised by
  truncated SVD, ``E = U sqrt(S)`` (Levy & Goldberg, NeurIPS 2014, show skip-gram with negative
  sampling factorises the shifted PMI matrix; Barkan & Koenigstein, arXiv 1603.04259, item2vec).
  Only items with a training positive get an embedding.
* :func:`save_embeddings` / :func:`load_embeddings` / :func:`check_embeddings`: the
  ``RUN/content/<stem>.npy`` + ``RUN/content/item_ids.npy`` files every later stage reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from reelrec.data.readers import DataFormatError
from reelrec.data.splits import TRAIN, Protocol, positive_mask
from reelrec.io import atomic_path

#: text given to an item whose title is missing or empty (counted and reported by `encode`)
PLACEHOLDER_TEXT = "unknown item"


def item_texts(items: pd.DataFrame) -> tuple[np.ndarray, list[str], np.ndarray]:
    """One text per item: title, then ``" | "`` and genres where the table has them.

    Args:
        items: the prepared ``items`` table (``item_id`` plus ``title`` / ``genres`` columns).

    Returns:
        ``(item_ids int64 (N,), texts (N,), missing bool (N,))``; ``missing`` marks items with no
        usable text, whose text is :data:`PLACEHOLDER_TEXT`.

    Raises:
        ValueError: the table has neither ``title`` nor ``genres`` (the dataset has no content;
            use behaviour embeddings), no rows, or missing, null, non-integer or duplicate ids.
    """
    cols = [c for c in ("title", "genres") if c in items.columns]
    if not cols:
        raise DataFormatError(
            f"items table has no text column (columns: {list(items.columns)}); this dataset has "
            "no item content: use `reelrec encode --encoder item2vec` (behaviour-only embeddings)"
        )
    if "item_id" not in items.columns:
        raise DataFormatError(f"items table has no item_id column (columns: {list(items.columns)})")
    if len(items) == 0:
        raise DataFormatError("items table is empty: no item to encode")
    col = items["item_id"]
    if col.isna().any():
        raise DataFormatError(
            f"items table: item_id is null in row(s) {np.flatnonzero(col.isna())[:10].tolist()}"
        )
    if not pd.api.types.is_integer_dtype(col):
        raise DataFormatError(f"items table: item_id must be integers, got dtype {col.dtype}")
    ids = col.to_numpy(dtype=np.int64)
    if len(np.unique(ids)) != len(ids):
        raise DataFormatError("items table has duplicate item_id values")

    def clean(v: object) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        if isinstance(v, list | tuple | np.ndarray):
            return ", ".join(str(x) for x in v)
        return " ".join(str(v).split())

    parts = [items[c].map(clean).tolist() for c in cols]
    texts = [" | ".join(p for p in row if p) for row in zip(*parts, strict=True)]
    missing = np.array([not t for t in texts], dtype=bool)
    texts = [t or PLACEHOLDER_TEXT for t in texts]
    return ids, texts, missing


def behaviour_embeddings(
    interactions: pd.DataFrame,
    protocol: Protocol,
    dim: int = 64,
    window: int = 5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Item2vec-style embeddings from training-split positive sequences (PPMI + truncated SVD).

    Args:
        interactions: prepared interactions (sorted by user, time; column ``split``).
        protocol: decides which rows are positives.
        dim: embedding width D (< number of items).
        window: co-occurrence window in sequence positions (each side).
        seed: seed of the SVD's starting vector (same seed, same embeddings).

    Returns:
        ``(item_ids int64 (V,), embeddings float32 (V, D))`` for the V items with a training
        positive and a non-empty PPMI row, rows L2-normalised.

    Raises:
        DataFormatError: fewer than ``dim + 1`` items (a ValueError).
        ValueError: no co-occurring pairs.
    """
    from scipy import sparse
    from scipy.sparse.linalg import svds

    df = interactions[
        (interactions["split"].to_numpy() == TRAIN) & positive_mask(interactions, protocol)
    ]
    ids, col = np.unique(df["item_id"].to_numpy(dtype=np.int64), return_inverse=True)
    v = len(ids)
    if v <= dim:
        raise DataFormatError(
            f"behaviour (item2vec) embeddings of width {dim} need more than {dim} items with a "
            f"training positive, got {v}: use a smaller width (reelrec encode --dim, "
            "--align.behaviour_dim)"
        )
    users = df["user_id"].to_numpy()
    rows, cols = [], []
    for off in range(1, window + 1):
        same = users[off:] == users[:-off]
        a, b = col[:-off][same], col[off:][same]
        rows += [a, b]
        cols += [b, a]
    r, c = np.concatenate(rows), np.concatenate(cols)
    if r.size == 0:
        raise ValueError("no two positives of one user within the window: nothing to learn from")
    co = sparse.coo_matrix((np.ones(r.size), (r, c)), shape=(v, v)).tocsr()
    co.sum_duplicates()
    total = co.sum()
    row_sum = np.asarray(co.sum(axis=1)).ravel()
    col_sum = np.asarray(co.sum(axis=0)).ravel()
    co = co.tocoo()
    pmi = np.log(co.data * total / (row_sum[co.row] * col_sum[co.col]))
    keep = pmi > 0
    ppmi = sparse.csr_matrix((pmi[keep], (co.row[keep], co.col[keep])), shape=(v, v))
    rng = np.random.default_rng(seed)
    u, s, _ = svds(ppmi, k=dim, v0=rng.standard_normal(v))
    order = np.argsort(-s)
    emb = u[:, order] * np.sqrt(s[order])
    # SVD sign is arbitrary: fix it so the largest-magnitude entry of each column is positive
    signs = np.sign(emb[np.abs(emb).argmax(0), np.arange(dim)])
    emb = emb * np.where(signs == 0, 1.0, signs)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(norms > 0, norms, 1.0)
    # an item whose PPMI row is empty (it co-occurs only with items everyone shares) has no
    # direction at all: it gets no embedding, like an item without a training positive
    keep = norms[:, 0] > 0
    return ids[keep], emb[keep].astype(np.float32)


#: the categorical item columns :func:`metadata_embeddings` reads when present (one-hot each)
METADATA_COLUMNS = ("music_type", "video_type", "upload_type")
#: duration buckets (seconds) of :func:`metadata_embeddings`
METADATA_DURATION_EDGES_S = (10, 20, 30, 60, 120, 300)


def has_metadata(items: pd.DataFrame) -> bool:
    """True when ``items`` has a ``tags`` column or one of :data:`METADATA_COLUMNS`."""
    return "tags" in items.columns or any(c in items.columns for c in METADATA_COLUMNS)


def metadata_embeddings(items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Content embeddings from categorical metadata: one multi-hot block per column.

    Blocks: ``tags`` (lists of category ids: one dimension per tag), each of
    :data:`METADATA_COLUMNS` present (one-hot; missing = no dimension set) and the duration
    bucket of ``duration_ms`` (:data:`METADATA_DURATION_EDGES_S`; NaN = none). Each dimension is
    weighted by its inverse document frequency ``log(N / n_d)`` (rare tags say more than the
    common type ``NORMAL``), rows are L2-normalised; an item with no metadata at all (or only
    values every item shares) gets no embedding (left out, as item2vec leaves out items without
    behaviour). Nothing here reads interactions: an item's embedding never depends on a label.

    Args:
        items: the prepared ``items`` table (``item_id`` plus the columns above).

    Returns:
        ``(item_ids int64 (V,), embeddings float32 (V, D))`` for the V items with metadata, D =
        the number of distinct values.

    Raises:
        DataFormatError: no metadata column, no rows, or duplicate / missing item ids.
    """
    if not has_metadata(items):
        raise DataFormatError(
            f"items table has no metadata column (tags or {', '.join(METADATA_COLUMNS)}); "
            f"columns: {list(items.columns)}"
        )
    if len(items) == 0:
        raise DataFormatError("items table is empty: no item to encode")
    ids = items["item_id"]
    if ids.isna().any() or ids.duplicated().any():
        raise DataFormatError("items table: item_id must be present and unique")
    n = len(items)
    blocks: list[list[list[str]]] = []
    if "tags" in items.columns:
        blocks.append([[f"tag={t}" for t in (v if v is not None else [])] for v in items["tags"]])
    for col in METADATA_COLUMNS:
        if col in items.columns:
            blocks.append([[] if pd.isna(v) else [f"{col}={v}"] for v in items[col]])
    if "duration_ms" in items.columns:
        sec = items["duration_ms"].to_numpy(dtype=np.float64) / 1000.0
        bucket = np.digitize(np.nan_to_num(sec, nan=-1.0), METADATA_DURATION_EDGES_S)
        blocks.append(
            [[] if np.isnan(s) else [f"duration={b}"] for s, b in zip(sec, bucket, strict=True)]
        )
    values = [sum((b[i] for b in blocks), []) for i in range(n)]
    vocab = {v: j for j, v in enumerate(sorted({v for row in values for v in row}))}
    x = np.zeros((n, len(vocab)), dtype=np.float64)
    for i, row in enumerate(values):
        x[i, [vocab[v] for v in row]] = 1.0
    df = x.sum(0)
    x *= np.log(n / np.maximum(df, 1.0))
    norms = np.linalg.norm(x, axis=1)
    keep = norms > 0
    x = x[keep] / norms[keep, None]
    return ids.to_numpy(dtype=np.int64)[keep], x.astype(np.float32)


#: item columns of per-item content vectors (lists of floats) :func:`vector_embeddings` reads
VECTOR_COLUMNS = ("visual", "audio")


def has_vectors(items: pd.DataFrame) -> bool:
    """True when ``items`` has one of :data:`VECTOR_COLUMNS`."""
    return any(c in items.columns for c in VECTOR_COLUMNS)


def vector_embeddings(items: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Content embeddings from given per-item vectors (TikTok's visual and acoustic features).

    Each modality of :data:`VECTOR_COLUMNS` present is standardised per dimension (zero mean,
    unit variance over the items: the raw scales differ tenfold between modalities), its rows
    L2-normalised, and the modalities concatenated with equal weight; the result is
    L2-normalised (QARM quantises such multimodal item embeddings).

    Args:
        items: the prepared ``items`` table (``item_id`` plus list-valued vector columns).

    Returns:
        ``(item_ids int64 (V,), embeddings float32 (V, D))``, D = the sum of the widths; items
        whose vectors are missing (None) are left out.

    Raises:
        DataFormatError: no vector column, rows of different widths, non-finite values.
    """
    cols = [c for c in VECTOR_COLUMNS if c in items.columns]
    if not cols:
        raise DataFormatError(
            f"items table has no vector column ({', '.join(VECTOR_COLUMNS)}); "
            f"columns: {list(items.columns)}"
        )
    present = np.ones(len(items), dtype=bool)
    for c in cols:
        present &= items[c].map(lambda v: v is not None).to_numpy(dtype=bool)
    blocks = []
    for c in cols:
        rows = items.loc[present, c].tolist()
        widths = {len(r) for r in rows}
        if len(widths) != 1:
            raise DataFormatError(f"items.{c}: vectors of different widths {sorted(widths)[:5]}")
        x = np.asarray(np.stack(rows), dtype=np.float64)
        if not np.isfinite(x).all():
            raise DataFormatError(f"items.{c}: non-finite values")
        x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)
        blocks.append(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))
    x = np.concatenate(blocks, 1)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return items["item_id"].to_numpy(dtype=np.int64)[present], x.astype(np.float32)


def check_embeddings(item_ids: np.ndarray, x: np.ndarray, source: str) -> None:
    """Validate an embedding table before it is aligned or quantised.

    Args:
        item_ids: int (N,) item ids, unique.
        x: float (N, D) embeddings.
        source: file or stage name used in the error message.

    Raises:
        ValueError: wrong shapes or dtype, id/row count mismatch, duplicate ids, non-finite
            values or all-zero rows (the message names the first offending item ids).
    """
    x = np.asarray(x)
    item_ids = np.asarray(item_ids)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataFormatError(
            f"{source}: embeddings must be a non-empty (N, D) array, got {x.shape}"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise DataFormatError(f"{source}: embeddings must be floating point, got {x.dtype}")
    if item_ids.ndim != 1 or len(item_ids) != len(x):
        raise DataFormatError(
            f"{source}: {len(item_ids)} item ids for {len(x)} embedding rows (mismatched ids)"
        )
    if not np.issubdtype(item_ids.dtype, np.integer):
        raise DataFormatError(f"{source}: item ids must be integers, got {item_ids.dtype}")
    if item_ids.dtype == np.uint64 and len(item_ids) and item_ids.max() > np.iinfo(np.int64).max:
        raise DataFormatError(f"{source}: item ids above 2**63 - 1 do not fit int64")
    uniq, counts = np.unique(item_ids, return_counts=True)
    if (counts > 1).any():
        raise DataFormatError(f"{source}: duplicate item ids {uniq[counts > 1][:10].tolist()}")
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        raise DataFormatError(
            f"{source}: {int(bad.sum())} embedding row(s) with NaN/inf, item ids "
            f"{item_ids[bad][:10].tolist()}"
        )
    zero = ~(x != 0).any(axis=1)
    if zero.any():
        raise DataFormatError(
            f"{source}: {int(zero.sum())} all-zero embedding row(s), item ids "
            f"{item_ids[zero][:10].tolist()}"
        )


def save_embeddings(folder: Path, stem: str, item_ids: np.ndarray, x: np.ndarray) -> Path:
    """Write ``folder/<stem>.npy`` and ``folder/item_ids.npy`` atomically.

    ``item_ids.npy`` is shared by every embedding file of the folder; writing a different id
    list over an existing one is refused so that rows never silently change meaning.

    Returns:
        The path of the embedding file.

    Raises:
        ValueError: from :func:`check_embeddings`, or ids different from the folder's.
    """
    folder = Path(folder)
    check_embeddings(item_ids, x, f"{folder / stem}.npy")
    ids_path = folder / "item_ids.npy"
    ids = np.asarray(item_ids, dtype=np.int64)
    if ids_path.exists() and stem != "item_embeddings":
        old = np.load(ids_path, allow_pickle=False)
        if not np.array_equal(old, ids):
            raise DataFormatError(
                f"{ids_path} lists other items than {stem}; re-run `reelrec encode`"
            )
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(ids_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, ids, allow_pickle=False)
    path = folder / f"{stem}.npy"
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, np.asarray(x, dtype=np.float32), allow_pickle=False)
    return path


def load_embeddings(folder: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``folder/<stem>.npy`` with ``folder/item_ids.npy``, validated.

    Returns:
        ``(item_ids int64 (N,), embeddings float32 (N, D))``.

    Raises:
        FileNotFoundError: a file is missing (says which command makes it).
        ValueError: from :func:`check_embeddings`.
    """
    folder = Path(folder)
    path, ids_path = folder / f"{stem}.npy", folder / "item_ids.npy"
    for p in (path, ids_path):
        if not p.exists():
            maker = "reelrec align" if stem == "aligned_embeddings" else "reelrec encode"
            raise FileNotFoundError(f"{p} not found; `{maker} --run RUN` writes it")
    arrays = []
    for p in (path, ids_path):
        if not p.is_file():
            raise DataFormatError(f"{p} is not a file")
        try:
            arrays.append(np.load(p, allow_pickle=False))
        except (ValueError, EOFError, OSError):
            raise DataFormatError(
                f"{p}: not a readable plain .npy array (object arrays are refused: reelrec never "
                "unpickles); re-run the command that writes it"
            ) from None
    x, ids = arrays
    check_embeddings(ids, x, str(path))
    with np.errstate(over="ignore", under="ignore"):
        x32 = x.astype(np.float32)
    check_embeddings(ids, x32, f"{path} (as float32)")
    return ids.astype(np.int64), x32
