"""What every model shares: one loss contract, the typed batches, and declared capabilities.

Loss contract (STYLE.md, nanoGPT's ``logits, loss = model(X, Y)``): every trainable model has
``loss(batch) -> LossOutput`` with exactly one typed batch, built by its training set
(:mod:`reelrec.training.trainsets`, :class:`reelrec.data.ctr.CTRTrainSet`,
:class:`reelrec.data.segments.SegmentTrainSet`, :class:`reelrec.training.preference.AlignmentTrainSet`).
The batch of each family:

======================================  ====================================================
:class:`NextItemBatch`                  SASRec, ELASTIC, OneRec, OneRec-V2, TIGER
:class:`AlignmentBatch`                 OneRec-family generators under IPA / ECPO
:class:`reelrec.data.ctr.CTRBatch`      CAN, DIN, DeepFM, the P-Score reward model
:class:`reelrec.data.segments.SegmentBatch`  SegMM segment interest and its baselines
======================================  ====================================================

Capabilities are declared, never probed: a model inherits the abstract classes below, and
callers test ``isinstance(model, ScoresAllItems)`` (not ``hasattr(model, "score_all")``), so a
method that merely happens to exist is never mistaken for a promise:

* :class:`Trainable` -- ``loss(batch) -> LossOutput``.
* :class:`ScoresAllItems` -- ``score_all(history)``: a score for every item (full ranking).
* :class:`EmbeddingScorer` -- scores are ``user_representation(history) @ item_embeddings().T``,
  so full ranking can be chunked over the catalogue with bounded memory
  (:func:`reelrec.eval.ranking.evaluate_model`, CASES.md C21).
* :class:`PaddingInvariant` -- outputs do not depend on left padding (evaluation may batch
  histories by length and drop padding columns).
* :class:`RecommendsTopK` -- ``recommend(history, k)``: a ranked top-k list (generators).
* :class:`RanksTargets` -- ``rank_targets(history, targets, k)``: exact full-ranking ranks
  below k without scoring every item (generators).
* :class:`GeneratesSemanticIDs` -- beam search over semantic IDs and whole-sequence
  log-probabilities; its ``loss`` accepts an :class:`AlignmentBatch`.
* :class:`ReportsEpochStats` -- ``epoch_stats()`` logged once per epoch (MoE load); training
  sets may declare it too (alignment rewards).
* :class:`HasPScore` -- ``pscore(batch)``: one preference score per sample (reward model).
* :class:`MayLeaveParametersUnused` -- a step may leave parameters without gradient (MoE
  experts, tasks without labels): DDP must search for unused parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

import torch

BatchT = TypeVar("BatchT")


class LossOutput(NamedTuple):
    """What every ``model.loss(batch)`` returns.

    Attributes:
        loss: scalar float tensor with gradient, the quantity minimised.
        parts: named terms for logs (plain floats, no gradient), e.g. ``{"click": 0.41,
            "like": 0.12}`` for a multi-task ranker; the training loop writes the epoch mean of
            each as ``loss_<name>`` in every history row.
    """

    loss: torch.Tensor
    parts: dict[str, float]


class NextItemBatch(NamedTuple):
    """Next-item windows: predict ``targets[:, t]`` from ``inputs[:, : t + 1]``.

    Attributes:
        inputs: int64 (B, L) left-padded item indices (0 = padding).
        targets: int64 (B, L) the next item at each position (0 = none).
        generator: RNG for sampled negatives (SASRec's ``"bce"`` loss); None = the global one.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    generator: torch.Generator | None = None

    @classmethod
    def of_windows(
        cls, windows: torch.Tensor, generator: torch.Generator | None = None
    ) -> NextItemBatch:
        """From int64 (B, L + 1) windows: inputs ``[:, :-1]``, targets ``[:, 1:]``."""
        return cls(windows[:, :-1], windows[:, 1:], generator)


@dataclass
class AlignmentTerm:
    """The preference-alignment part of one step (IPA's DPO pairs, ECPO's groups), scored by
    the policy inside its ``loss`` so that DDP sees one forward.

    Attributes:
        history: int64 (B', L) left-padded histories of the samples that got candidates.
        codes: int64 (B', G, levels) semantic-ID code sequences the policy scores.
        objective: ``logp float (B', G) -> (loss scalar, parts)``; a pure function (it must not
            record anything: the throughput meter may call it once more on the same batch).
        weight: factor of the alignment loss beside the next-token loss (> 0).
    """

    history: torch.Tensor
    codes: torch.Tensor
    objective: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
    weight: float


class AlignmentBatch(NamedTuple):
    """Next-item windows plus an optional alignment term (:mod:`reelrec.training.preference`).

    Attributes:
        inputs, targets: as :class:`NextItemBatch`.
        alignment: the term, or None when no sample of the batch gave a pair / group.
        ntp_weight: weight of the next-token loss (>= 0).
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    alignment: AlignmentTerm | None
    ntp_weight: float = 1.0


class Trainable(ABC, Generic[BatchT]):
    """Declares ``loss(batch) -> LossOutput`` (the one training signature)."""

    @abstractmethod
    def loss(self, batch: BatchT) -> LossOutput:
        """Training loss of one typed batch (see the module docstring for each family)."""


class ScoresAllItems(ABC):
    """Declares ``score_all(history)``: a score for every item index (full ranking)."""

    @abstractmethod
    def score_all(self, history: torch.Tensor) -> torch.Tensor:
        """int64 (B, L) left-padded histories -> float (B, V + 1); column 0 (padding) -inf."""


def inner_product_scores(user: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """``user @ items.T`` whose every entry does not depend on the shapes of the product.

    A float32 matrix product rounds each entry differently depending on where it falls in
    the kernel's tiles, so scoring the catalogue in chunks, or another batch of users, moves
    scores by an ulp and breaks exact ties (equal item vectors): measured on CPU, 13.6 million
    of the entries of chunked products differed from the one-shot product. The product is
    taken in float64 (the products of float32 values are exact there) and rounded once; no
    entry differed in the same measurement. Chunked ranking
    (:func:`reelrec.eval.ranking.target_ranks_chunked`) and :meth:`EmbeddingScorer.score_all`
    both score this way, so they rank alike.

    Args:
        user: float (B, D). items: float (N, D).

    Returns:
        float32 (B, N) (float64 inputs stay float64).
    """
    out = torch.promote_types(torch.promote_types(user.dtype, items.dtype), torch.float32)
    return (user.double() @ items.double().T).to(out)


class EmbeddingScorer(ScoresAllItems):
    """Declares that scores are inner products of a user vector and item vectors.

    ``score_all`` is defined from the two methods (one ``(B, V + 1)`` matrix, scored by
    :func:`inner_product_scores`); evaluation uses them directly to rank ``item_chunk`` items
    at a time (CASES.md C21) with the same scores.
    """

    @abstractmethod
    def user_representation(self, history: torch.Tensor) -> torch.Tensor:
        """int64 (B, L) left-padded histories -> float (B, D)."""

    @abstractmethod
    def item_embeddings(self) -> torch.Tensor:
        """float (V + 1, D) item vectors; row 0 (padding) is never ranked."""

    def score_all(self, history: torch.Tensor) -> torch.Tensor:
        """float32 (B, V + 1) = ``user_representation(history) @ item_embeddings().T``
        (:func:`inner_product_scores`); column 0 is -inf."""
        scores = inner_product_scores(self.user_representation(history), self.item_embeddings())
        scores[:, 0] = float("-inf")
        return scores


class PaddingInvariant(ABC):  # noqa: B024 - a marker: declaring it is the whole contract
    """Declares that outputs do not depend on how much left padding precedes a history, so
    evaluation may batch histories by length and cut all-padding columns."""


class RecommendsTopK(ABC):
    """Declares ``recommend(history, k)``: a ranked list instead of scores for every item."""

    @abstractmethod
    def recommend(
        self, history: torch.Tensor, k: int, exclude: torch.Tensor | None = None
    ) -> torch.Tensor:
        """int64 (B, L) histories -> int64 (B, k) item indices best first (-1 = empty slot);
        ``exclude`` int64 (B, E) items never returned (history masking; 0 = none)."""


class RanksTargets(ABC):
    """Declares ``rank_targets(history, targets, k, exclude)``: each target's rank in the
    model's exact full ranking when it is below ``k`` (a miss otherwise), for models whose
    every-item scores are too costly to materialise (the semantic-ID generators)."""

    @abstractmethod
    def rank_targets(
        self,
        history: torch.Tensor,
        targets: torch.Tensor,
        k: int,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """int64 (B, L) histories, int64 (B,) targets (1..V or -1), the largest cutoff k, items
        to leave out (int64 (B, E) or None) -> int64 (B, 2) ``[g, e]`` rows (items above /
        tied with the target), ``[MISS_RANK, 0]`` at rank >= k (:mod:`reelrec.eval.ranking`)."""


class GeneratesSemanticIDs(RecommendsTopK):
    """Declares a semantic-ID generator that preference alignment can train.

    It is a :class:`reelrec.models.generative.Decodable` (``start``, ``expand``,
    ``step_logits``) with a ``trie`` of valid IDs, scores whole sequences with
    :meth:`sequence_logp`, and its ``loss`` accepts an :class:`AlignmentBatch`.
    """

    trie: Any

    @abstractmethod
    def start(self, history: torch.Tensor) -> dict:
        """Decoding context for B users."""

    @abstractmethod
    def expand(self, ctx: dict, index: torch.Tensor) -> dict:
        """Reorder the per-beam state to rows ``index``."""

    @abstractmethod
    def step_logits(self, ctx: dict, tokens: torch.Tensor, use_cache: bool) -> torch.Tensor:
        """Log-probabilities float (N, K_level) of the next code."""

    @abstractmethod
    def sequence_logp(self, history: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """int64 (B, L) histories, int64 (B, G, levels) codes -> float (B, G) log-probabilities."""


class ReportsEpochStats(ABC):
    """Declares ``epoch_stats()``: statistics since the last call, logged once per epoch."""

    @abstractmethod
    def epoch_stats(self) -> dict[str, float]:
        """Named floats; resets what it reports."""


class HasPScore(ABC):
    """Declares ``pscore(batch)``: one preference score in (0, 1) per sample (OneRec's P-Score)."""

    @abstractmethod
    def pscore(self, batch: Any) -> torch.Tensor:
        """A batch of B samples -> float (B,) in (0, 1), without gradient."""


class MayLeaveParametersUnused(ABC):  # noqa: B024 - a marker read by reelrec.training.distributed
    """Declares that a training step may leave parameters without gradient (MoE experts not
    routed to, task towers without labels in the batch): DDP then runs with
    ``find_unused_parameters=True``; the other models skip that extra graph traversal."""
