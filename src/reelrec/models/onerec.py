"""OneRec: encoder-decoder generative retrieval over semantic IDs, with mixture-of-experts.

Sources: OneRec Technical Report (arXiv 2506.13695) section 2.2 (encoder over multi-scale user
pathways) and 2.3 (point-wise decoder with MoE and auxiliary-loss-free load balancing);
OneRec (arXiv 2502.18965) section 3.2 (session-wise generation of m items, a BOS before each);
TIGER (arXiv 2305.05065) for the baseline configuration (preset ``tiger``: one flat sequence of
code tokens, dense feed-forward layers, RQ-VAE semantic IDs).

What the model does:
    * Item tokens: the embeddings of an item's semantic-ID codes (one table shared with the
      decoder's input and output, section 4.2.2 of the report), concatenated with item side
      features when the dataset has them, through Dense-LeakyReLU-Dense (report eq. 1-2).
    * Pathways (report 2.2.1), concatenated with a learnable position embedding (eq. 5):
      static (one token), short-term (last ``short_len`` items), positive-feedback (last
      ``positive_len`` items), lifelong (the whole history window, clustered per user into
      ``lifelong_clusters`` groups and compressed by a QFormer of ``lifelong_queries`` learnable
      queries over ``qformer_layers`` blocks).
    * Encoder: ``encoder_layers`` pre-RMSNorm blocks of fully visible self-attention + FFN.
    * Decoder over ``[BOS, s1..sL]`` (``[BOS, s^1_1..s^L_1, BOS, s^1_2, ...]`` for ``m``
      session items): causal self-attention, cross-attention to the encoder output, MoE FFN
      (sigmoid affinities, top-k, per-expert routing bias; :class:`~reelrec.models.generative.MoE`).
    * Loss: cross-entropy of each code given the codes before it (mean over code tokens; the
      report sums, which only rescales the learning rate).

Many targets per pass (``context="causal"``, the ``onerec`` and ``tiger`` presets' setting; the
``onerec-v2`` preset keeps the pathways, which scored higher on Beauty; a deviation from both
papers, which train one target per sample): one context token per history item (per code for
``flat``) after a learned static token; OneRec's encoder is causal over them, and the code
decoder of target ``t`` cross-attends to the static token and the items up to ``t`` only, with a
learned per-head bias by item distance (:class:`RelativeBias`, T5-style buckets) instead of
absolute positions. Every position of a window is then a target in one pass, as SASRec and HSTU
train; the summed loss equals the sum of the single-target losses, and cached decoding equals
full decoding (both tested). The pathways below are ``context="pathways"``.

Deviations, and why:
    * No user profile features in the public benchmark sets: the static pathway is one learned
      token. The sequences hold positive interactions only (ratings, likes), so the
      positive-feedback pathway is the last ``positive_len`` items of the same history, and the
      lifelong pathway is the history window (``max_len`` items) rather than 100,000 videos.
    * Lifelong compression: a few batched Lloyd iterations of k-means per user over the item
      tokens (assignments without gradient) and the cluster mean as its token, instead of
      hierarchical k-means with the item nearest each centre as representative.
    * Sizes default to a laptop: width 128, 2+2 layers, 4 experts top-2 (report: 24 experts,
      top-2 at 0.9B), L_s 20 / L_p 50 (report 20 / 256), 16 clusters and 8 queries (report:
      2,000 items and 128 queries).
    * Item side features are item-level (train means of watch ratio, labels and duration on
      KuaiRand), not per-interaction features: sequences carry item indices only.
    * LayerNorm-free RMSNorm everywhere as in the report; GELU FFN instead of SwiGLU.

Interface (:mod:`reelrec.models.base`): ``loss(NextItemBatch | AlignmentBatch) -> LossOutput``;
declares ``RecommendsTopK`` / ``GeneratesSemanticIDs`` (beam search, sequence log-probabilities
for preference alignment), ``ReportsEpochStats`` (MoE load) and ``MayLeaveParametersUnused``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reelrec.config import check_section
from reelrec.models.base import (
    AlignmentBatch,
    GeneratesSemanticIDs,
    LossOutput,
    MayLeaveParametersUnused,
    NextItemBatch,
    RanksTargets,
    ReportsEpochStats,
    Trainable,
)
from reelrec.models.generative import (
    Attention,
    DecoderLayer,
    PrefixTrie,
    SemanticIDTable,
    beam_search,
    exact_target_ranks,
    moe_stats,
    score_items,
)


@dataclass
class OneRecConfig:
    """Hyper-parameters of OneRec, OneRec-V2 and the TIGER-style baseline (section ``onerec``)."""

    semantic_ids: str = "tokenizer"  # folder in the run holding semantic_ids.parquet
    max_len: int = 50  # history window in items (lifelong pathway source) (>= 1)
    short_len: int = 20  # L_s, short-term pathway length in items (>= 1)
    positive_len: int = 50  # L_p, positive-feedback pathway length (0 = no pathway)
    lifelong_clusters: int = 16  # k-means clusters of the lifelong pathway (0 = no pathway)
    lifelong_queries: int = 8  # N_q, QFormer queries (>= 1 when clusters > 0)
    qformer_layers: int = 1  # N_l, QFormer blocks (>= 1)
    item_tokens: str = "concat"  # "concat": one token per item; "flat": one per code (TIGER)
    # add a learned per-item (item ID) embedding to every item-level context token, beside
    # its semantic-ID codes (outputs stay semantic IDs); needs item_tokens "concat"
    item_embedding: bool = False
    # "pathways": OneRec's static / short / positive / lifelong tokens, one target per window
    # (the last session_items items); "causal": one token per history item, every position of
    # a window is a target in one pass, target t attends to the items up to t only
    context: str = "pathways"
    rel_buckets: int = 16  # causal context: relative-distance buckets of the attention bias (2..64)
    hidden: int = 128  # width D (divisible by heads)
    heads: int = 4  # attention heads
    head_dim: int = 0  # width of an attention head; 0 = hidden / heads (TIGER: 64 with 6 heads)
    kv_heads: int = 4  # key/value heads (divides heads; < heads = grouped-query attention)
    encoder_layers: int = 2  # OneRec encoder blocks (>= 0)
    decoder_layers: int = 2  # decoder blocks (>= 1)
    inner: int = 256  # feed-forward / expert hidden width
    experts: int = 4  # MoE experts per decoder FFN; 0 = dense FFN
    top_k: int = 2  # experts per token (1..experts)
    shared_expert: bool = False  # add an always-on shared expert
    balance_rate: float = 0.001  # gamma of the auxiliary-loss-free bias update (>= 0)
    dropout: float = 0.1  # residual dropout, in [0, 1)
    session_items: int = 1  # m, items generated per sequence in training (session-wise, v1)
    kv_groups: int = 1  # OneRec-V2 L_kv: key/value sets shared by consecutive layers
    kv_split: int = 1  # OneRec-V2 S_kv: 1 = keys and values tied, 2 = separate
    beam: int = 20  # beam width when recommending (>= the largest eval cutoff)
    window_step: int = 1  # training samples end every window_step items (1 = every prefix)
    valid_instances: int = 5000  # validation instances used for early stopping (0 = all)

    def validate(self, section: str = "onerec") -> None:
        """Check every value against its documented range.

        Raises:
            ConfigError: naming the first invalid key.
        """
        check_section(check_onerec_config, self)


class ItemTokenizer(nn.Module):
    """Item token vectors from shared semantic-ID embeddings plus side features.

    Args:
        table: semantic IDs of the vocabulary. code_emb: the shared code embedding table
        (sum(K_j), D). side: float (V + 1, F) item side features (F may be 0). hidden: D.
        mlp: build item-level tokens (False: flat code tokens only). item_embedding: add a
        learned (V + 1, D) item-ID embedding to each item token, with ``dropout`` on it.
    """

    def __init__(
        self,
        table: SemanticIDTable,
        code_emb: nn.Embedding,
        side: torch.Tensor,
        hidden: int,
        mlp: bool = True,
        item_embedding: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.code_emb = code_emb
        self.register_buffer("codes", table.codes.clone(), persistent=False)
        self.register_buffer(
            "offsets", torch.tensor(table.offsets, dtype=torch.long), persistent=False
        )
        self.register_buffer("side", side.float(), persistent=False)
        width = table.levels * hidden + side.shape[1]
        self.mlp = (
            nn.Sequential(nn.Linear(width, hidden), nn.LeakyReLU(), nn.Linear(hidden, hidden))
            if mlp
            else None  # flat code tokens only (TIGER): no item-level tokens are built
        )
        self.id_emb = nn.Embedding(table.codes.shape[0], hidden) if item_embedding else None
        self.id_drop = nn.Dropout(dropout)

    def code_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """int64 (..., L) codes (-1 = none) -> float (..., L, D) shared code embeddings."""
        ids = (codes + self.offsets).clamp(min=0)
        return self.code_emb(ids) * (codes >= 0).unsqueeze(-1)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """int64 (B, n) item indices (0 = padding) -> float (B, n, D).

        The MLP runs once per distinct item of the batch (histories repeat items a lot).
        """
        uniq, inverse = torch.unique(items, return_inverse=True)
        e = self.code_tokens(self.codes[uniq]).flatten(-2)
        tok = self.mlp(torch.cat([e, self.side[uniq]], -1))
        if self.id_emb is not None:
            tok = tok + self.id_drop(self.id_emb(uniq))
        return tok[inverse]


def _cluster_means(
    x: torch.Tensor, assign: torch.Tensor, valid: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the real rows of each cluster: x float (B, n, D), assign int64 (B, n) in 0..k-1,
    valid bool (B, n) -> (means float (B, k, D), 0 for empty clusters; sizes float (B, k))."""
    onehot = F.one_hot(assign, k).to(x.dtype) * valid.unsqueeze(-1)
    sizes = onehot.sum(1)
    return onehot.transpose(1, 2) @ x / sizes.clamp(min=1).unsqueeze(-1), sizes


def _batched_kmeans(x: torch.Tensor, valid: torch.Tensor, k: int, iters: int = 3) -> torch.Tensor:
    """Per-row k-means assignments: x float (B, n, D), valid bool (B, n) -> int64 (B, n) in 0..k-1.

    Centres start at k evenly spaced real items of each row (the most recent when fewer); then
    ``iters`` Lloyd updates (empty clusters keep their centre). Padding is assigned somewhere but
    never counted (callers mask it). No gradient flows through the assignment.
    """
    b, n, _ = x.shape
    x = x.detach()
    count = valid.sum(1).clamp(min=1)  # (B,)
    first = n - count  # left padding: real items are first..n-1
    frac = torch.linspace(0, 1, k, device=x.device)
    pos = (first.unsqueeze(1) + (frac * (count.unsqueeze(1) - 1)).round().long()).clamp(max=n - 1)
    centres = x.gather(1, pos.unsqueeze(-1).expand(-1, -1, x.shape[2]))  # (B, k, D)
    for _ in range(iters):
        new, sizes = _cluster_means(x, torch.cdist(x, centres).argmin(-1), valid, k)
        centres = torch.where(sizes.unsqueeze(-1) > 0, new, centres)
    return torch.cdist(x, centres).argmin(-1)


class QFormer(nn.Module):
    """N_q learnable queries that cross-attend to a set of tokens (report 2.2.1, eq. 4)."""

    def __init__(
        self, hidden: int, heads: int, queries: int, layers: int, inner: int, head_dim: int = 0
    ):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, hidden) * 0.02)
        self.attn = nn.ModuleList(
            Attention(hidden, heads, heads, head_dim=head_dim) for _ in range(layers)
        )
        self.norms = nn.ModuleList(nn.RMSNorm(hidden) for _ in range(2 * layers))
        self.ffn = nn.ModuleList(
            nn.Sequential(nn.Linear(hidden, inner), nn.GELU(), nn.Linear(inner, hidden))
            for _ in range(layers)
        )

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens float (B, S, D), mask bool (B, S) -> float (B, N_q, D)."""
        h = self.queries.expand(tokens.shape[0], -1, -1)
        m = mask[:, None, None, :]
        for i, (attn, ffn) in enumerate(zip(self.attn, self.ffn, strict=True)):
            h = h + attn(self.norms[2 * i](h), *attn.project(tokens), mask=m)
            h = h + ffn(self.norms[2 * i + 1](h))
        return h


class UserContext(nn.Module):
    """The user-side token sequence both OneRec designs attend to (report 2.2.1-2.2.2).

    Returns tokens float (B, S, D) and a mask bool (B, S) (True = real) of
    [static | short-term | positive-feedback | lifelong queries], plus positions.
    With ``item_tokens == "flat"`` (TIGER) the short-term pathway holds one token per code.
    """

    def __init__(self, cfg: OneRecConfig, levels: int):
        super().__init__()
        self.cfg, self.levels = cfg, levels
        d = cfg.hidden
        self.static = nn.Parameter(torch.randn(1, d) * 0.02)
        per_item = levels if cfg.item_tokens == "flat" else 1
        n = 1 + cfg.short_len * per_item + cfg.positive_len
        n += cfg.lifelong_queries if cfg.lifelong_clusters > 0 else 0
        self.pos = nn.Embedding(n, d)
        self.level_emb = nn.Embedding(levels, d) if cfg.item_tokens == "flat" else None
        self.qformer = (
            QFormer(d, cfg.heads, cfg.lifelong_queries, cfg.qformer_layers, cfg.inner, cfg.head_dim)
            if cfg.lifelong_clusters > 0
            else None
        )

    @staticmethod
    def _recent(history: torch.Tensor, n: int) -> torch.Tensor:
        """The last n slots of a left-padded history, trimmed of all-padding columns."""
        h = history[:, -n:]
        real = (h > 0).any(0).nonzero()
        return h[:, int(real[0]) :] if len(real) else h[:, -1:]

    def forward(
        self, history: torch.Tensor, items: ItemTokenizer
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """history int64 (B, L) left-padded item indices, items: the model's item tokenizer ->
        (tokens float (B, S, D), mask bool (B, S))."""
        cfg, b = self.cfg, history.shape[0]
        parts = [self.static.expand(b, 1, -1)]
        masks = [torch.ones(b, 1, dtype=torch.bool, device=history.device)]
        pos = [torch.zeros(1, dtype=torch.long, device=history.device)]
        start = 1

        def add(tokens: torch.Tensor, mask: torch.Tensor, width: int) -> None:
            # right-aligned in the pathway's slots: the most recent item has the last position
            nonlocal start
            n = tokens.shape[1]
            parts.append(tokens)
            masks.append(mask)
            pos.append(start + width - n + torch.arange(n, device=history.device))
            start += width

        life = self._recent(history, cfg.max_len)
        valid = life > 0
        x = items(life) if items.mlp is not None else None  # item tokens of the whole window
        short = self._recent(history, cfg.short_len)
        if cfg.item_tokens == "flat":
            codes = items.codes[short]  # (B, n, L)
            tok = items.code_tokens(codes) + self.level_emb.weight  # (B, n, L, D)
            add(tok.flatten(1, 2), (codes >= 0).flatten(1), cfg.short_len * self.levels)
        else:
            add(x[:, -short.shape[1] :], short > 0, cfg.short_len)
        if cfg.positive_len > 0:
            n = min(cfg.positive_len, life.shape[1])
            add(x[:, -n:], valid[:, -n:], cfg.positive_len)
        if self.qformer is not None:
            k = cfg.lifelong_clusters
            clusters, sizes = _cluster_means(x, _batched_kmeans(x, valid, k), valid, k)
            cmask = sizes > 0
            cmask[:, 0] |= ~cmask.any(1)  # an empty history still gives the queries a key
            parts.append(self.qformer(clusters, cmask))
            masks.append(
                torch.ones(b, cfg.lifelong_queries, dtype=torch.bool, device=history.device)
            )
            pos.append(start + torch.arange(cfg.lifelong_queries, device=history.device))
        tokens = torch.cat(parts, 1) + self.pos(torch.cat(pos))
        return tokens, torch.cat(masks, 1)


class RelativeBias(nn.Module):
    """Learned per-head attention bias by how many items back a key lies (causal context).

    Distances 0..buckets/2 - 1 get a bucket each, longer ones log-spaced buckets up to 256
    items (as T5's relative attention bias); the static token has its own bucket.

    Args:
        heads: H. buckets: distance buckets (>= 2).
    """

    def __init__(self, heads: int, buckets: int):
        super().__init__()
        self.buckets = buckets
        self.table = nn.Embedding(buckets + 1, heads)

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        """int64 (...) distances in items (>= 0; -1 = the static token) -> float (..., H)."""
        exact = self.buckets // 2
        d = dist.clamp(min=0).float()
        log = exact + (
            torch.log(d.clamp(min=exact) / exact) / math.log(256 / exact) * (self.buckets - exact)
        ).long().clamp(max=self.buckets - exact - 1)
        bucket = torch.where(d < exact, dist.clamp(min=0), log)
        return self.table(torch.where(dist < 0, self.buckets, bucket))

    def mask(
        self,
        query_pos: torch.Tensor,
        key_pos: torch.Tensor,
        key_valid: torch.Tensor,
    ) -> torch.Tensor:
        """Additive attention mask of queries at item positions ``query_pos`` (int64 (N, Q);
        -1 = the static token, which sees only itself) over keys at ``key_pos`` (int64 (S,),
        -1 = static, always visible to item queries) with ``key_valid`` bool (N, S): the bias
        of the distance where the key is at or before the query, -inf elsewhere.

        Returns float (N, H, Q, S).
        """
        d = query_pos.unsqueeze(-1) - key_pos  # (N, Q, S)
        static_key = (key_pos < 0).expand_as(d)
        item_query = (query_pos >= 0).unsqueeze(-1)
        allowed = torch.where(item_query, static_key | (d >= 0), static_key)
        allowed = allowed & key_valid.unsqueeze(1)
        bias = self(torch.where(static_key, -1, d)).permute(0, 3, 1, 2)  # (N, H, Q, S)
        return bias.masked_fill(~allowed.unsqueeze(1), float("-inf"))


class CausalContext(nn.Module):
    """One context token per history item (``flat``: one per code of each item) after a learned
    static token, with the item position of every key, for the causal context: target ``t``
    of a window attends to the static token and the items at positions ``<= t``.

    No absolute positions: recency enters through :class:`RelativeBias` in the attention.
    """

    def __init__(self, cfg: OneRecConfig, levels: int):
        super().__init__()
        self.cfg, self.levels = cfg, levels
        self.static = nn.Parameter(torch.randn(1, cfg.hidden) * 0.02)
        self.level_emb = nn.Embedding(levels, cfg.hidden) if cfg.item_tokens == "flat" else None

    def forward(
        self, history: torch.Tensor, items: ItemTokenizer
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """history int64 (B, W) left-padded item indices (every column kept) -> tokens float
        (B, S, D), key item positions int64 (S,) (-1 = static), key validity bool (B, S)."""
        b, w = history.shape
        dev = history.device
        pos = torch.arange(w, device=dev)
        if self.level_emb is not None:
            codes = items.codes[history]  # (B, W, L)
            x = (items.code_tokens(codes) + self.level_emb.weight).flatten(1, 2)
            valid = (codes >= 0).flatten(1)
            pos = pos.repeat_interleave(self.levels)
        else:
            x, valid = items(history), history > 0
        tokens = torch.cat([self.static.expand(b, 1, -1), x], 1)
        key_pos = torch.cat([torch.full((1,), -1, device=dev), pos])
        key_valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=dev), valid], 1)
        return tokens, key_pos, key_valid


class EncoderLayer(nn.Module):
    """Pre-RMSNorm block: fully visible self-attention then FFN (report eq. 6-7)."""

    def __init__(self, cfg: OneRecConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.RMSNorm(cfg.hidden), nn.RMSNorm(cfg.hidden)
        self.attn = Attention(cfg.hidden, cfg.heads, cfg.kv_heads, head_dim=cfg.head_dim)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.inner), nn.GELU(), nn.Linear(cfg.inner, cfg.hidden)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x float (B, S, D), mask bool (B, 1, 1, S)."""
        h = self.ln1(x)
        x = x + self.drop(self.attn(h, *self.attn.project(h), mask=mask))
        return x + self.drop(self.ffn(self.ln2(x)))


class GenerativeRetriever(
    nn.Module,
    Trainable[NextItemBatch | AlignmentBatch],
    GeneratesSemanticIDs,
    RanksTargets,
    ReportsEpochStats,
    MayLeaveParametersUnused,
):
    """Common decoder, loss and decoding of OneRec and OneRec-V2 (subclasses build the context).

    Declares (:mod:`reelrec.models.base`) ``Trainable``, ``GeneratesSemanticIDs`` (so also
    ``RecommendsTopK``), ``RanksTargets`` (exact full ranking by sequence log-probability,
    without scoring every item), ``ReportsEpochStats`` (MoE load per epoch) and
    ``MayLeaveParametersUnused`` (top-k expert routing may leave an expert without gradient in
    a step: DDP must know).

    Args:
        table: semantic IDs of the vocabulary (items 1..V). cfg: hyper-parameters.
        side: float (V + 1, F) item side features, or None.

    Raises:
        ValueError: invalid sizes.
    """

    lazy_cross = False
    cross_first = False

    def __init__(self, table: SemanticIDTable, cfg: OneRecConfig, side: torch.Tensor | None = None):
        super().__init__()
        check_onerec_config(cfg)
        self.cfg, self.table = cfg, table
        self.num_items = table.codes.shape[0] - 1
        self.levels = table.levels
        d = cfg.hidden
        code_emb = nn.Embedding(sum(table.sizes), d)  # shared by input and output
        if side is None:
            side = torch.zeros(self.num_items + 1, 0)
        self.causal = cfg.context == "causal"
        item_level = cfg.item_tokens == "concat"
        if not self.causal:  # pathways of item tokens besides the short-term one
            item_level = item_level or cfg.positive_len > 0 or cfg.lifelong_clusters > 0
        self.items = ItemTokenizer(
            table, code_emb, side, d, item_level, cfg.item_embedding, cfg.dropout
        )
        self.context: nn.Module = (
            CausalContext(cfg, self.levels) if self.causal else UserContext(cfg, self.levels)
        )
        self.cross_bias = RelativeBias(cfg.heads, cfg.rel_buckets) if self.causal else None
        self.bos = nn.Parameter(torch.randn(d) * 0.02)
        self.dec_pos = nn.Embedding(cfg.session_items * (self.levels + 1), d)
        self.decoder = nn.ModuleList(
            DecoderLayer(
                d,
                cfg.heads,
                cfg.kv_heads,
                cfg.inner,
                cfg.experts,
                cfg.top_k,
                cfg.balance_rate,
                cfg.shared_expert,
                self.lazy_cross,
                cfg.dropout,
                norm=nn.RMSNorm,
                cross_first=self.cross_first,
                head_dim=cfg.head_dim,
            )
            for _ in range(cfg.decoder_layers)
        )
        self.final_norm = nn.RMSNorm(d)
        self.trie = PrefixTrie(table)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    # --- context (subclasses) -------------------------------------------------------------
    def context_kv(
        self, z: torch.Tensor, key_pos: torch.Tensor | None, key_valid: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per decoder layer (keys, values) float (B, kv_heads, S, head_dim) of the context
        tokens ``z`` float (B, S, D); ``key_pos`` int64 (S,) item positions (causal context;
        None for pathways), ``key_valid`` bool (B, S)."""
        raise NotImplementedError

    def cross_context(self, history: torch.Tensor) -> tuple[list, torch.Tensor]:
        """Keys/values of every decoder layer for B users and the cross-attention mask:
        bool (B, 1, 1, S) for pathways, float (B, H, 1, S) (relative bias, -inf = hidden) for
        the causal context, whose query is the item after the last history position."""
        if not self.causal:
            z, valid = self.context(history, self.items)
            return self.context_kv(z, None, valid), valid[:, None, None, :]
        history = UserContext._recent(history, self.cfg.max_len)
        z, key_pos, key_valid = self.context(history, self.items)
        last = torch.full((len(history), 1), history.shape[1] - 1, device=history.device)
        return self.context_kv(z, key_pos, key_valid), self.cross_bias.mask(
            last, key_pos, key_valid
        )

    # --- decoder ----------------------------------------------------------------------------
    def _embed_tokens(self, codes: torch.Tensor, n_pos: int) -> torch.Tensor:
        """Decoder inputs: flat codes int64 (N, t) of consecutive items -> float (N, n_pos, D).

        Position p holds BOS when p % (L + 1) == 0, else code ``p - 1 - p // (L + 1)`` of the
        flat sequence (level ``p % (L + 1) - 1``): ``[BOS, s^1_1..s^L_1, BOS, s^1_2, ...]``.
        """
        ll = self.levels + 1
        p = torch.arange(n_pos, device=codes.device)
        x = self.bos.expand(codes.shape[0], n_pos, -1).clone()
        code_pos = p[(p % ll) != 0]
        if len(code_pos):
            # codes of padding target items are -1: embedded as code 0, never trained on
            picked = codes[:, code_pos - 1 - code_pos // ll].clamp(min=0)
            ids = picked + self.items.offsets[(code_pos % ll) - 1]
            x[:, code_pos] = self.items.code_emb(ids)
        return x + self.dec_pos(p)

    def _logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """h float (..., D) -> logits float (..., K_level) with the shared code embeddings."""
        o = self.table.offsets[level]
        w = self.items.code_emb.weight[o : o + self.table.sizes[level]]
        return self.final_norm(h) @ w.T

    def _decode(
        self, x: torch.Tensor, cross: list, mask: torch.Tensor, caches=None
    ) -> torch.Tensor:
        for i, layer in enumerate(self.decoder):
            x = layer(x, cross[i], mask, None if caches is None else caches[i])
        return x

    def loss(self, batch: NextItemBatch | AlignmentBatch) -> LossOutput:
        """Next-code loss for the last ``session_items`` items of each window, plus, for an
        :class:`~reelrec.models.base.AlignmentBatch`, the preference-alignment term.

        Args:
            batch: ``inputs`` int64 (B, L) left-padded items; ``targets`` int64 (B, L), the next
                item at each position (0 = none). The history of a window is everything before
                its first target item; target items that are padding are not trained. A
                :class:`~reelrec.models.base.NextItemBatch`'s ``generator`` is unused (nothing
                is sampled). An ``AlignmentBatch``'s ``alignment`` (DPO or ECPO, or None) is
                scored here so that DDP sees one forward; its ``ntp_weight`` weighs the
                next-code loss.

        Returns:
            :class:`LossOutput`: mean cross-entropy over code tokens (``ce`` and
            ``ce_level<j>`` parts); for an ``AlignmentBatch``, ``ntp_weight`` times that, plus
            ``weight * alignment loss`` and the term's parts when it has a term.
        """
        alignment = batch.alignment if isinstance(batch, AlignmentBatch) else None
        if alignment is None:  # a step without pairs / groups: the next-code loss alone, still
            out = self._ntp_loss(batch.inputs, batch.targets)  # weighed by ntp_weight
            if isinstance(batch, AlignmentBatch) and batch.ntp_weight != 1.0:
                return LossOutput(batch.ntp_weight * out.loss, out.parts)
            return out
        # the alignment term first: a training forward moves the MoE routing bias, and the
        # policy ratios must compare the network the old policy / reference was copied from
        logp = self.sequence_logp(alignment.history, alignment.codes)
        term, parts = alignment.objective(logp)
        out = self._ntp_loss(batch.inputs, batch.targets)
        loss = batch.ntp_weight * out.loss + alignment.weight * term
        return LossOutput(loss, {**out.parts, **parts})

    def _level_losses(self, h: torch.Tensor, codes: torch.Tensor) -> LossOutput:
        """Mean cross-entropy of target codes int64 (N, L) from decoder states float (N, L, D)
        (state j predicts code j), with a ``ce_level<j>`` part per level."""
        total, parts = h.new_zeros(()), {}
        for j in range(self.levels):
            ce = F.cross_entropy(self._logits(h[:, j], j), codes[:, j], reduction="sum")
            total = total + ce
            parts[f"ce_level{j + 1}"] = float(ce.detach()) / max(len(codes), 1)
        loss = total / max(len(codes) * self.levels, 1)
        return LossOutput(loss, {"ce": float(loss.detach()), **parts})

    def _causal_ntp_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Every real target of every window in one pass (causal context).

        Target ``t`` (``targets[:, t]``) is decoded against the static token and the window's
        items ``inputs[:, : t + 1]`` only. A sequence's first item (its input is padding) is
        not a target: nothing comes before it. Windows whose targets are mostly real fold each
        window's targets onto its keys (one attention per window); sparse ones gather the real
        targets and copy their window's keys (no work on padding). Both give the same loss.
        """
        real_cols = ((targets > 0) | (inputs > 0)).any(0).nonzero()  # leading padding cut
        first = int(real_cols[0]) if len(real_cols) else targets.shape[1] - 1
        inputs, targets = inputs[:, first:], targets[:, first:]
        b, w = inputs.shape
        z, key_pos, key_valid = self.context(inputs, self.items)
        kv = self.context_kv(z, key_pos, key_valid)
        real = (targets > 0) & (inputs > 0)  # a target has at least one item before it
        codes = self.items.codes[targets]  # (B, W, L)
        dev, ll = inputs.device, self.levels
        if int(real.sum()) * 2 > b * w:  # dense: fold the W targets of a window onto its keys
            pos = torch.arange(w, device=dev).expand(b, w)
            mask = self.cross_bias.mask(pos, key_pos, key_valid)  # (B, H, W, S)
            mask = mask.repeat_interleave(ll, dim=2)  # query (t, level) -> row t * L + level
            x = self._embed_tokens(codes.reshape(b * w, ll), ll)
            h = self._decode(x, kv, mask)[real.reshape(-1)]
        else:  # sparse: the real targets only, each with its window's keys
            rows, cols = real.nonzero(as_tuple=True)
            mask = self.cross_bias.mask(cols.unsqueeze(1), key_pos, key_valid[rows])
            x = self._embed_tokens(codes[rows, cols], ll)
            h = self._decode(x, [(k[rows], v[rows]) for k, v in kv], mask)
        return self._level_losses(h, codes[real])

    def _ntp_loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """The next-code cross-entropy of :meth:`loss`."""
        if self.causal:
            return self._causal_ntp_loss(inputs, targets)
        m, ll = self.cfg.session_items, self.levels + 1
        if inputs.shape[1] < m:  # trimmed batches of short windows: pad back to m columns
            inputs = F.pad(inputs, (m - inputs.shape[1], 0))
            targets = F.pad(targets, (m - targets.shape[1], 0))
        history = inputs[:, : inputs.shape[1] - (m - 1)]
        tgt_items = targets[:, -m:]  # (B, m)
        codes = self.items.codes[tgt_items]  # (B, m, L)
        n_pos = m * ll - 1  # [BOS, c1..cL] per item, without the last code
        cross, mask = self.cross_context(history)
        h = self._decode(self._embed_tokens(codes.flatten(1), n_pos), cross, mask)
        p = torch.arange(n_pos, device=h.device)
        level, item = p % ll, p // ll  # position p predicts code `level` of item `item`
        total, n_tok, parts = h.new_zeros(()), 0, {}
        for j in range(self.levels):
            cols = (level == j).nonzero().squeeze(1)
            keep = tgt_items[:, item[cols]] > 0  # (B, m)
            if not keep.any():
                continue
            logits = self._logits(h[:, cols][keep], j)
            ce = F.cross_entropy(logits, codes[:, item[cols], j][keep], reduction="sum")
            total, n_tok = total + ce, n_tok + int(keep.sum())
            parts[f"ce_level{j + 1}"] = float(ce.detach()) / int(keep.sum())
        loss = total / max(n_tok, 1)
        return LossOutput(loss, {"ce": float(loss.detach()), **parts})

    def forward(self, history: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Full (uncached) decoder pass: history (B, L), code prefix int64 (B, t) of the first
        item -> hidden float (B, t + 1, D)."""
        cross, mask = self.cross_context(history)
        return self._decode(self._embed_tokens(codes, codes.shape[1] + 1), cross, mask)

    def sequence_logp(self, history: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Log-probability of whole semantic IDs under the model (with gradient).

        The user context is computed once per user; the G sequences of a user are decoded in
        parallel with teacher forcing (cross-attention folds them onto the user's keys, as in
        beam search). The distribution is the model's own softmax over each level's codebook,
        unconstrained by the trie.

        Args:
            history: int64 (B, L) left-padded item indices.
            codes: int64 (B, G, levels) code sequences (-1 codes are scored as code 0; callers
                mask such rows).

        Returns:
            float (B, G): ``sum_j log p(c_j | c_<j, history)``.
        """
        b, g, levels = codes.shape
        cross, mask = self.cross_context(history)
        flat = codes.reshape(b * g, levels).clamp(min=0)
        h = self._decode(self._embed_tokens(flat, levels), cross, mask)  # (B*G, levels, D)
        total = h.new_zeros(b * g, dtype=torch.float32)
        for j in range(levels):
            logp = F.log_softmax(self._logits(h[:, j], j).float(), -1)
            total = total + logp.gather(1, flat[:, j : j + 1]).squeeze(1)
        return total.view(b, g)

    # --- decoding (reelrec.models.generative.Decodable) -------------------------------------
    def start(self, history: torch.Tensor) -> dict:
        """Decoding context for B users: cross keys/values, mask, empty caches."""
        cross, mask = self.cross_context(history)
        return {"cross": cross, "mask": mask, "cache": [{} for _ in self.decoder]}

    def expand(self, ctx: dict, index: torch.Tensor) -> dict:
        """Reorder the self-attention caches to rows ``index`` (beams choose their parents;
        ``index`` keeps each user's beams contiguous)."""
        # cross keys/values stay one row per user (Attention folds a user's beams together)
        return {**ctx, "cache": [{n: t[index] for n, t in c.items()} for c in ctx["cache"]]}

    def step_logits(self, ctx: dict, tokens: torch.Tensor, use_cache: bool) -> torch.Tensor:
        """Log-probabilities float (N, K_t) of level t = tokens.shape[1] of the first item."""
        t = tokens.shape[1]
        x = self._embed_tokens(tokens, t + 1)
        if use_cache:
            h = self._decode(x[:, t:], ctx["cross"], ctx["mask"], ctx["cache"])
        else:
            h = self._decode(x, ctx["cross"], ctx["mask"])
        return F.log_softmax(self._logits(h[:, -1], t).float(), -1)

    @torch.no_grad()
    def recommend(
        self, history: torch.Tensor, k: int, exclude: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Top-k items per user by trie-constrained beam search (beam = max(k, cfg.beam)).

        Args:
            history: int64 (B, L) left-padded item indices. k: list length.
            exclude: int64 (B, E) items never returned (history masking), or None.

        Returns:
            int64 (B, k) item indices best first (-1 where fewer valid IDs exist).
        """
        if self.trie.children[0].device != history.device:
            self.trie.to(history.device)
        items, _ = beam_search(self, history, self.trie, max(k, self.cfg.beam), exclude=exclude)
        return items[:, :k]

    @torch.no_grad()
    def rank_targets(
        self,
        history: torch.Tensor,
        targets: torch.Tensor,
        k: int,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Exact full-ranking ranks below ``k`` (:func:`~reelrec.models.generative.
        exact_target_ranks`): int64 (B, 2) ``[g, e]`` rows, ``[MISS_RANK, 0]`` at rank >= k."""
        from reelrec.eval.metrics import check_targets

        check_targets(targets, self.num_items)
        if self.trie.children[0].device != history.device:
            self.trie.to(history.device)
        codes = self.items.codes[targets.clamp(min=0)].unsqueeze(1)  # (B, 1, L)
        target_logp = self.sequence_logp(history, codes).squeeze(1)
        return exact_target_ranks(
            self, history, targets, self.trie, k, target_logp, exclude=exclude
        )

    @torch.no_grad()
    def score_all(self, history: torch.Tensor) -> torch.Tensor:
        """Exact full ranking: every item's semantic-ID log-probability
        (:func:`~reelrec.models.generative.score_items`), float32 (B, V + 1), column 0 -inf.

        Users are decoded a few at a time so that the widest trie level (one cached decoder
        row per prefix) stays near 65,536 rows."""
        if self.trie.children[0].device != history.device:
            self.trie.to(history.device)
        widest = max(self.trie.nodes(j) for j in range(len(self.trie.children)))
        step = max(1, 65_536 // widest)
        return torch.cat(
            [
                score_items(self, history[i : i + step], self.trie, self.num_items)
                for i in range(0, len(history), step)
            ]
        )

    def epoch_stats(self) -> dict[str, float]:
        """MoE load statistics since the last call (logged once per epoch)."""
        return moe_stats(self)


class OneRec(GenerativeRetriever):
    """OneRec encoder-decoder (Technical Report section 2). See the module docstring.

    Usage::

        model = OneRec(table, OneRecConfig())
        out = model.loss(NextItemBatch.of_windows(windows))  # training
        top = model.recommend(history, k=10)                  # (B, 10) item indices
    """

    def __init__(self, table: SemanticIDTable, cfg: OneRecConfig, side: torch.Tensor | None = None):
        super().__init__(table, cfg, side)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.enc_norm = nn.RMSNorm(cfg.hidden)
        self.enc_bias = (
            RelativeBias(cfg.heads, cfg.rel_buckets)
            if self.causal and cfg.encoder_layers > 0
            else None
        )
        self.encoder.apply(self._init)

    def context_kv(
        self, z: torch.Tensor, key_pos: torch.Tensor | None, key_valid: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Encode the context (pathways: fully visible; causal: each item token sees the
        static token and the items up to its own position); each decoder layer projects its
        own keys/values."""
        if self.encoder:
            if key_pos is None:
                mask = key_valid[:, None, None, :]
            else:
                query_pos = key_pos.expand(len(z), -1)
                mask = self.enc_bias.mask(query_pos, key_pos, key_valid)
            for layer in self.encoder:
                z = layer(z, mask)
        z = self.enc_norm(z)
        return [layer.cross_attn.project(z) for layer in self.decoder]


def check_onerec_config(cfg: OneRecConfig) -> None:
    """Raise ValueError naming the first invalid ``onerec.*`` value."""
    rules = [
        (cfg.max_len >= 1, "max_len", ">= 1"),
        (1 <= cfg.short_len <= cfg.max_len, "short_len", f"in 1..max_len={cfg.max_len}"),
        (0 <= cfg.positive_len <= cfg.max_len, "positive_len", f"in 0..max_len={cfg.max_len}"),
        (cfg.lifelong_clusters >= 0, "lifelong_clusters", ">= 0"),
        (cfg.lifelong_queries >= 1, "lifelong_queries", ">= 1"),
        (cfg.qformer_layers >= 1, "qformer_layers", ">= 1"),
        (cfg.item_tokens in ("concat", "flat"), "item_tokens", "'concat' or 'flat'"),
        (cfg.context in ("pathways", "causal"), "context", "'pathways' or 'causal'"),
        (
            not cfg.item_embedding or cfg.item_tokens == "concat",
            "item_embedding",
            "false with onerec.item_tokens='flat' (no item-level tokens to add it to)",
        ),
        (2 <= cfg.rel_buckets <= 64, "rel_buckets", "in 2..64"),
        (
            cfg.context != "causal" or cfg.session_items == 1,
            "session_items",
            "1 with onerec.context='causal' (every position is already a target)",
        ),
        (cfg.hidden >= 1 and cfg.heads >= 1, "hidden", ">= 1 with heads >= 1"),
        (cfg.head_dim >= 0, "head_dim", ">= 0"),
        (
            cfg.head_dim > 0 or cfg.hidden % max(cfg.heads, 1) == 0,
            "hidden",
            f"divisible by heads={cfg.heads} (or set onerec.head_dim)",
        ),
        (cfg.kv_heads >= 1 and cfg.heads % cfg.kv_heads == 0, "kv_heads", "a divisor of heads"),
        (cfg.encoder_layers >= 0, "encoder_layers", ">= 0"),
        (cfg.decoder_layers >= 1, "decoder_layers", ">= 1"),
        (cfg.inner >= 1, "inner", ">= 1"),
        (cfg.experts >= 0, "experts", ">= 0"),
        (
            cfg.experts == 0 or 1 <= cfg.top_k <= cfg.experts,
            "top_k",
            f"in 1..experts (onerec.experts={cfg.experts})",
        ),
        (cfg.balance_rate >= 0, "balance_rate", ">= 0"),
        (0 <= cfg.dropout < 1, "dropout", "in [0, 1)"),
        (cfg.session_items >= 1, "session_items", ">= 1"),
        (cfg.kv_groups >= 1, "kv_groups", ">= 1"),
        (
            cfg.kv_groups <= cfg.decoder_layers,
            "kv_groups",
            f"<= decoder_layers={cfg.decoder_layers}",
        ),
        (cfg.kv_split in (1, 2), "kv_split", "1 or 2"),
        (cfg.beam >= 1, "beam", ">= 1"),
        (cfg.window_step >= 1, "window_step", ">= 1"),
        (cfg.valid_instances >= 0, "valid_instances", ">= 0"),
        (cfg.semantic_ids.strip() != "", "semantic_ids", "a folder name"),
    ]
    for ok, key, rule in rules:
        if not ok:
            raise ValueError(f"onerec.{key} must be {rule}, got {getattr(cfg, key)!r}")
