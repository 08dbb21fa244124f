"""Chinese web-text cleaning: the MAP-CC pipeline of CT-LLM (heuristic filters + deduplication).

Source: Du et al., "Chinese Tiny LLM: Pretraining a Chinese-Centric Large Language Model"
(arXiv 2404.04167), Section 2 (pre-training data: heuristic rules, then deduplication), and the
cleaning code its authors released (``Chinese-Tiny-LLM/filter/filter.py``; the MinHash and
similar-line steps as published in MAP-NEO's ``Matrix/chinese_data_clean_pipeline``). The
thresholds below are the released code's; each rule is written here from its description.

Order (a document is dropped by the first rule it fails; drop counts are per first failing rule):

1. ``bracket_ratio``: characters inside 【...】 over all characters > 0.1 (headline/ad markup).
2. ``sentences``: at most one sentence (split on . ! ? ; 。 ！ ？ ； … and quotes).
3. ``length``: fewer than 50 or more than 10,000 characters (whitespace counted).
4. ``mean_word_length``: mean jieba word length (punctuation removed) outside [1.3, 10].
5. ``hash_ratio``: '#' characters over all characters > 0.1.
6. ``ellipsis_ratio``: characters in ellipsis runs (…, ..., 。。。) over all characters > 0.1.
7. ``digit_ratio``: digits over non-punctuation characters > 0.3.
8. ``read_more_lines``: lines ending in "read more" / 展开 / 更多 / an ellipsis > 0.3 of lines.
9. ``bullet_lines``: lines starting with a bullet > 0.9 of lines.
10. ``no_punctuation``: no punctuation character at all.
11. ``unique_chars``: distinct characters over characters <= 0.1.
12. ``char_entropy``: character-unigram entropy (nats) < 3. Tuned for Chinese: English letters
    carry about 2.9 nats, so an English corpus needs a lower ``min_char_entropy`` (e.g. 2.5).
13. ``language``: the language-ID model's top language is not one of ``languages`` or its
    probability is < 0.4 (``langid.py``, Lui & Baldwin 2012, whose model ships inside the PyPI
    package; the released code used fastText lid.176, which is downloaded separately).
14. ``ngram_repetition``: Gopher-style repetition on characters: the most frequent 2/3/4-gram
    covers > 0.20/0.18/0.16 of the characters, or duplicated 5..10-grams cover > 0.6.
15. ``exact_duplicate``: the same normalised text as an earlier kept document.
16. ``near_duplicate``: MinHash-LSH on character 13-grams, 128 permutations, 9 bands x 13
    rows (datasketch): a document sharing a band with an earlier kept one is dropped (the
    first of a cluster is kept).

Then, inside each kept document, similar-line deduplication: a segment (split at sentence
ends) is removed when an earlier segment of similar length (relative difference < 0.3), sharing
at least 1/3 of its characters (multiset Jaccard), is within Levenshtein distance 0.1 x the
longer length; segments of 15 characters or fewer are only removed when identical.

Deviations from the released code, and why:

* Rules are computed on the NFKC-normalised text (as released), but the kept text is the
  original (minus removed similar lines): the full-width -> half-width rewrite of Chinese
  punctuation changes the text a user asked to clean.
* The URL blacklist (UT1 domain lists) is not applied: documents here carry no URL and the
  lists are not shipped in a package.
* Language ID checks the label (the released code only checked the top score >= 0.4, which
  keeps any confidently identified language).
* The 5..10-gram rule measures the share of character *positions* covered by duplicated
  n-grams (Gopher, Rae et al. 2021, Table A1); the released code counted distinct characters,
  which almost never fires on long text.
* The "read more" rule also matches a trailing 。。。 before normalisation (after the released
  normalisation 。 had become '.', so its 。。。 pattern could never match).
* :data:`CAPTIONS` is ours, not CT-LLM's: short-video captions are one short line (KuaiRec's
  median is 34 characters), and the released thresholds, made for pre-training documents,
  drop 90% of them (``bench/kuairec_captions.py``: by sentence count and length). The caption
  preset relaxes the rules that measure a *document* (sentences, length, punctuation,
  character entropy, hashtag and n-gram shares, which short text fails by being short) and
  keeps the spam, language and duplicate rules.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

from reelrec.config import ConfigError
from reelrec.content.encoders import optional_import

#: rule names in the order they are applied (the keys of :attr:`CleaningReport.dropped`)
RULES: tuple[str, ...] = (
    "bracket_ratio",
    "sentences",
    "length",
    "mean_word_length",
    "hash_ratio",
    "ellipsis_ratio",
    "digit_ratio",
    "read_more_lines",
    "bullet_lines",
    "no_punctuation",
    "unique_chars",
    "char_entropy",
    "language",
    "ngram_repetition",
    "exact_duplicate",
    "near_duplicate",
)

_SENTENCE_SPLIT = re.compile(r"[.!?;。！？；…\"“”]+")
_BRACKETED = re.compile(r"【[^】]*】")
_ELLIPSIS = re.compile(r"…+|\.{2,}|。{2,}")
_READ_MORE = re.compile(r"(read\s*more|展开|更多|…|\.{3,}|。{3,})\s*$", re.IGNORECASE)
_BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "◆", "◇", "▶", "►", "★", "☆", "-", "*", "·")
_SEGMENT_SPLIT = re.compile(r"(?<=[.!?。！？…\]】])")


@dataclass(frozen=True)
class CleaningConfig:
    """Thresholds of the MAP-CC rules (defaults: the CT-LLM release); see the module docstring.

    Ratios are in [0, 1]; lengths are in characters of the NFKC-normalised text.
    """

    max_bracket_ratio: float = 0.1  # chars inside 【】 / chars; above -> drop
    min_sentences: int = 2  # fewer sentences -> drop
    min_chars: int = 50  # fewer characters -> drop
    max_chars: int = 10_000  # more characters -> drop
    min_mean_word_length: float = 1.3  # mean jieba word length, punctuation removed
    max_mean_word_length: float = 10.0
    max_hash_ratio: float = 0.1  # '#' chars / chars
    max_ellipsis_ratio: float = 0.1  # chars in ellipsis runs / chars
    max_digit_ratio: float = 0.3  # digits / non-punctuation chars
    max_read_more_lines: float = 0.3  # share of lines ending in "read more" / 展开 / 更多
    max_bullet_lines: float = 0.9  # share of lines starting with a bullet
    require_punctuation: bool = True  # a text without any punctuation -> drop
    min_unique_char_ratio: float = 0.1  # distinct chars / chars; at or below -> drop
    min_char_entropy: float = 3.0  # character-unigram entropy in nats
    languages: tuple[str, ...] = ("zh",)  # ISO 639-1 codes accepted by language ID
    min_language_prob: float = 0.4  # normalised probability of the top language
    max_top_ngram_share: tuple[float, float, float] = (0.20, 0.18, 0.16)  # n = 2, 3, 4
    max_dup_ngram_share: float = 0.6  # n = 5..10, share of positions in duplicated n-grams
    exact_dedup: bool = True
    near_dedup: bool = True
    minhash_ngram: int = 13  # character shingle size
    minhash_perm: int = 128  # permutations
    minhash_bands: int = 9  # LSH bands b
    minhash_rows: int = 13  # rows per band r (b * r <= perm)
    similar_lines: bool = True  # remove near-duplicate segments inside a document
    similar_line_distance: float = 0.1  # Levenshtein distance / longer segment length
    similar_line_min_chars: int = 15  # shorter segments: only exact repeats removed
    seed: int = 1  # MinHash permutation seed

    def __post_init__(self) -> None:
        ratios = (
            "max_bracket_ratio",
            "max_hash_ratio",
            "max_ellipsis_ratio",
            "max_digit_ratio",
            "max_read_more_lines",
            "max_bullet_lines",
            "min_unique_char_ratio",
            "min_language_prob",
            "max_dup_ngram_share",
            "similar_line_distance",
        )
        for name in ratios:
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {v}")
        if not 0 < self.min_chars <= self.max_chars:
            raise ConfigError(
                f"min_chars ({self.min_chars}) must be in (0, max_chars ({self.max_chars})]"
            )
        if self.minhash_bands * self.minhash_rows > self.minhash_perm:
            raise ConfigError(
                f"minhash_bands x minhash_rows ({self.minhash_bands} x "
                f"{self.minhash_rows}) exceeds minhash_perm ({self.minhash_perm})"
            )
        if min(self.minhash_ngram, self.minhash_bands, self.minhash_rows) < 1:
            raise ConfigError("minhash_ngram, minhash_bands and minhash_rows must be >= 1")
        if self.min_mean_word_length > self.max_mean_word_length:
            raise ConfigError(
                f"min_mean_word_length ({self.min_mean_word_length}) exceeds "
                f"max_mean_word_length ({self.max_mean_word_length})"
            )
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"seed must be in [0, 2**32 - 1], got {self.seed}")
        if not self.languages:
            raise ConfigError("languages must name at least one language")
        if len(self.max_top_ngram_share) != 3:
            raise ConfigError(
                f"max_top_ngram_share needs 3 values (n = 2, 3, 4), got {self.max_top_ngram_share}"
            )
        if not all(0 <= v <= 1 for v in self.max_top_ngram_share):
            raise ConfigError(
                f"max_top_ngram_share values must be in [0, 1], got {self.max_top_ngram_share}"
            )
        for name in ("min_mean_word_length", "max_mean_word_length", "min_char_entropy"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {v}")


#: thresholds for short-video captions and cover text (see the deviations above): one
#: sentence of 5+ characters is enough, no punctuation needed; entropy, '#' and n-gram limits
#: scaled to text of tens of characters
CAPTIONS = CleaningConfig(
    min_sentences=1,
    min_chars=5,
    max_hash_ratio=0.3,
    max_ellipsis_ratio=0.3,
    require_punctuation=False,
    min_char_entropy=1.5,
    max_top_ngram_share=(0.4, 0.4, 0.4),
)
#: named threshold sets of ``reelrec clean-text --preset``
PRESETS = {"documents": CleaningConfig(), "captions": CAPTIONS}


@dataclass
class CleaningReport:
    """Counts of one cleaning run.

    Attributes:
        docs: documents read.
        kept: documents kept.
        dropped: rule name -> documents dropped by it (first failing rule), every rule listed.
        segments_removed: similar segments removed inside kept documents.
        seconds: wall time of the run.
    """

    docs: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULES, 0))
    segments_removed: int = 0
    seconds: float = 0.0

    @property
    def drop_rate(self) -> dict[str, float]:
        """Rule -> share of all documents it dropped (0 when there were none)."""
        return {k: (v / self.docs if self.docs else 0.0) for k, v in self.dropped.items()}

    def to_json(self) -> dict:
        """JSON-ready dict: counts, per-rule drop counts and rates, documents per second."""
        out = asdict(self)
        out["drop_rate"] = self.drop_rate
        out["docs_per_s"] = self.docs / self.seconds if self.seconds > 0 else None
        return out


def normalise(text: str) -> str:
    """NFKC normal form (full-width Latin/digits/punctuation -> ASCII), as the rules see text."""
    return unicodedata.normalize("NFKC", text)


def is_punctuation(ch: str) -> bool:
    """Unicode punctuation (categories P*), e.g. ``,`` ``。`` ``“`` ``…``."""
    return unicodedata.category(ch).startswith("P")


def char_entropy(text: str) -> float:
    """Entropy in nats of the character unigram distribution of ``text`` (0 when empty)."""
    if not text:
        return 0.0
    n = len(text)
    return -sum(c / n * math.log(c / n) for c in Counter(text).values())


def top_ngram_share(text: str, n: int) -> float:
    """Share of characters covered by repeats of the most frequent character n-gram.

    ``(count - 1) * n / len(text)``, as the released code (0 when no n-gram repeats).
    """
    if len(text) < n:
        return 0.0
    count = Counter(text[i : i + n] for i in range(len(text) - n + 1)).most_common(1)[0][1]
    return (count - 1) * n / len(text)


def dup_ngram_share(text: str, n: int) -> float:
    """Share of character positions covered by character n-grams that occur more than once
    (every occurrence after the first), as in Gopher's ``dup_n_gram_char_frac``."""
    if len(text) < 2 * n:
        return 0.0
    seen: set[str] = set()
    covered = bytearray(len(text))
    i = 0
    while i <= len(text) - n:
        g = text[i : i + n]
        if g in seen:
            covered[i : i + n] = b"\x01" * n
            i += n  # non-overlapping, so periodic text is not over-counted
        else:
            seen.add(g)
            i += 1
    return sum(covered) / len(text)


def segments(text: str) -> list[str]:
    """``text`` split after sentence ends (. ! ? 。 ！ ？ … ] 】) and newlines; empty parts
    dropped; concatenating the parts (plus the dropped whitespace) gives the text back."""
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        out += [s for s in _SEGMENT_SPLIT.split(line) if s]
    return out


def _levenshtein(a: str, b: str) -> int:
    from rapidfuzz.distance import Levenshtein

    return Levenshtein.distance(a, b)


def remove_similar_segments(text: str, cfg: CleaningConfig) -> tuple[str, int]:
    """Drop the segments of ``text`` that nearly repeat an earlier kept segment.

    Segment j goes when some earlier kept segment i has relative length difference < 0.3,
    character multiset Jaccard >= 1/3 and Levenshtein distance <= ``similar_line_distance``
    x the longer length (segments of ``similar_line_min_chars`` or fewer: identical only).

    Returns:
        ``(text without those segments, number removed)``.
    """
    parts = segments(text)
    kept: list[str] = []
    keys: list[tuple[str, Counter]] = []
    removed = 0
    for part in parts:
        s = part.strip()
        if not s:
            kept.append(part)
            continue
        dup = False
        for t, tc in keys:
            longer = max(len(s), len(t))
            if abs(len(s) - len(t)) / longer >= 0.3:
                continue
            if min(len(s), len(t)) <= cfg.similar_line_min_chars:
                dup = s == t
            else:
                sc = Counter(s)
                inter = sum((sc & tc).values())
                union = sum((sc | tc).values())
                dup = inter / union >= 1 / 3 and (
                    _levenshtein(s, t) <= cfg.similar_line_distance * longer
                )
            if dup:
                break
        if dup:
            removed += 1
        else:
            kept.append(part)
            keys.append((s, Counter(s)))
    return "".join(kept), removed


class _LanguageID:
    """langid.py with normalised probabilities, loaded on first use (about 1 s)."""

    def __init__(self) -> None:
        self._model = None

    def languages(self) -> list[str]:
        """The ISO 639-1 codes the model knows (97)."""
        self("warm up")
        return list(self._model.nb_classes)

    def __call__(self, text: str) -> tuple[str, float]:
        if self._model is None:
            lid = optional_import("langid.langid", "cleaning", "language identification")
            self._model = lid.LanguageIdentifier.from_modelstring(lid.model, norm_probs=True)
        lang, prob = self._model.classify(text.replace("\n", " "))
        return lang, float(prob)


class TextCleaner:
    """Applies the MAP-CC rules (module docstring) to a stream of documents.

    Args:
        config: thresholds (default :class:`CleaningConfig`).

    Use :meth:`failed_rule` for one document (heuristic rules and language only) or
    :meth:`clean` for a corpus (adds exact and near-duplicate removal across documents).
    """

    def __init__(self, config: CleaningConfig | None = None) -> None:
        self.config = config or CleaningConfig()
        self._lang = _LanguageID()
        self._jieba = None

    def warm_up(self) -> None:
        """Load the word segmenter, the language-ID model and the MinHash library now (about
        2-6 s), so that timings of :meth:`clean` exclude it; checks ``languages``.

        Raises:
            ValueError: a code in ``languages`` that the language-ID model does not know.
        """
        known = self._lang.languages()
        unknown = [x for x in self.config.languages if x not in known]
        if unknown:
            raise ValueError(
                f"languages: unknown code(s) {unknown}; langid knows {', '.join(sorted(known))}"
            )
        self._words("预热")
        if self.config.near_dedup:
            import datasketch  # noqa: F401

    def _words(self, text: str) -> list[str]:
        if self._jieba is None:
            jieba = optional_import("jieba", "cleaning", "word segmentation")
            jieba.setLogLevel(60)
            self._jieba = jieba
        return [w for w in self._jieba.lcut(text) if w.strip() and not all(map(is_punctuation, w))]

    def failed_rule(self, text: str) -> str | None:
        """The first heuristic rule (1-14) that ``text`` fails, or None when it passes all.

        Raises:
            TypeError: ``text`` is not a string.
        """
        if not isinstance(text, str):
            raise TypeError(f"a document must be a string, got {type(text).__name__}")
        c = self.config
        t = normalise(text)
        n = len(t)
        if n == 0:
            return "length"
        bracketed = sum(len(m) for m in _BRACKETED.findall(t))
        if bracketed / n > c.max_bracket_ratio:
            return "bracket_ratio"
        if len([s for s in _SENTENCE_SPLIT.split(t) if s.strip()]) < c.min_sentences:
            return "sentences"
        if not c.min_chars <= n <= c.max_chars:
            return "length"
        words = self._words(t)
        mean_len = sum(map(len, words)) / len(words) if words else 0.0
        if not c.min_mean_word_length <= mean_len <= c.max_mean_word_length:
            return "mean_word_length"
        if t.count("#") / n > c.max_hash_ratio:
            return "hash_ratio"
        if sum(len(m) for m in _ELLIPSIS.findall(t)) / n > c.max_ellipsis_ratio:
            return "ellipsis_ratio"
        non_punct = [ch for ch in t if not is_punctuation(ch) and not ch.isspace()]
        digits = sum(ch.isdigit() for ch in non_punct)
        if non_punct and digits / len(non_punct) > c.max_digit_ratio:
            return "digit_ratio"
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        if lines:
            if sum(bool(_READ_MORE.search(ln)) for ln in lines) / len(lines) > (
                c.max_read_more_lines
            ):
                return "read_more_lines"
            if sum(ln.startswith(_BULLETS) for ln in lines) / len(lines) > c.max_bullet_lines:
                return "bullet_lines"
        if c.require_punctuation and not any(is_punctuation(ch) for ch in t):
            return "no_punctuation"
        if len(set(t)) / n <= c.min_unique_char_ratio:
            return "unique_chars"
        if char_entropy(t) < c.min_char_entropy:
            return "char_entropy"
        lang, prob = self._lang(t)
        if lang not in c.languages or prob < c.min_language_prob:
            return "language"
        compact = re.sub(r"\s+", "", t)
        for k, limit in zip((2, 3, 4), c.max_top_ngram_share, strict=True):
            if top_ngram_share(compact, k) > limit:
                return "ngram_repetition"
        if any(dup_ngram_share(compact, k) > c.max_dup_ngram_share for k in range(5, 11)):
            return "ngram_repetition"
        return None

    def _minhash(self, text: str):
        from datasketch import MinHash

        c = self.config
        m = MinHash(num_perm=c.minhash_perm, seed=c.seed)
        grams = {
            text[i : i + c.minhash_ngram] for i in range(max(len(text) - c.minhash_ngram, 0) + 1)
        }
        m.update_batch([g.encode("utf-8") for g in grams])
        return m

    def clean(
        self, docs: Iterable[str], progress: bool = False, total: int | None = None
    ) -> tuple[list[tuple[int, str]], CleaningReport]:
        """Clean a corpus, in order.

        Args:
            docs: documents (strings); their positions are the indices returned.
            progress: show progress (a bar on a terminal, a few lines elsewhere).
            total: number of documents, for the progress bar.

        Returns:
            ``(kept, report)``: ``kept`` lists ``(index, cleaned text)`` of the kept documents
            in input order; ``report`` has the per-rule drop counts (:class:`CleaningReport`).

        Raises:
            TypeError: a document is not a string (names its index).
        """
        from reelrec.progress import progress as show_progress

        c = self.config
        self.warm_up()
        report = CleaningReport()
        kept: list[tuple[int, str]] = []
        seen: set[bytes] = set()
        lsh = None
        if c.near_dedup:
            from datasketch import MinHashLSH

            lsh = MinHashLSH(num_perm=c.minhash_perm, params=(c.minhash_bands, c.minhash_rows))
        start = time.perf_counter()
        for i, doc in enumerate(show_progress(docs, "clean", "doc", total=total, enabled=progress)):
            report.docs += 1
            if not isinstance(doc, str):
                raise TypeError(f"document {i} is {type(doc).__name__}, not a string")
            rule = self.failed_rule(doc)
            if rule is None and c.exact_dedup:
                key = hashlib.sha1(normalise(doc).strip().encode("utf-8")).digest()
                if key in seen:
                    rule = "exact_duplicate"
                else:
                    seen.add(key)
            if rule is None and lsh is not None:
                m = self._minhash(normalise(doc))
                if lsh.query(m):
                    rule = "near_duplicate"
                else:
                    lsh.insert(str(i), m)
            if rule is not None:
                report.dropped[rule] += 1
                continue
            text = doc
            if c.similar_lines:
                text, removed = remove_similar_segments(doc, c)
                report.segments_removed += removed
            kept.append((i, text))
        report.kept = len(kept)
        report.seconds = time.perf_counter() - start
        return kept, report


def clean_texts(
    docs: Sequence[str], config: CleaningConfig | None = None
) -> tuple[list[str], CleaningReport]:
    """Convenience: the kept, cleaned texts of ``docs`` and the report (see :meth:`TextCleaner.clean`)."""
    if isinstance(docs, str):
        raise TypeError("docs must be a sequence of strings, not one string")
    kept, report = TextCleaner(config).clean(docs)
    return [t for _, t in kept], report
