"""Shared parts of the generative retrievers (OneRec, OneRec-V2, the TIGER-style baseline).

* :class:`SemanticIDTable`: the semantic ID (code sequence) of every item index of a vocabulary,
  and the token layout shared by input and output (one embedding row per code of each level).
* :class:`PrefixTrie`: the valid semantic IDs as a prefix tree, stored per level as a dense
  ``(prefixes, codebook size)`` child table; beam search looks up which codes may follow.
* :class:`MoE`: mixture-of-experts feed-forward layer with sigmoid affinities, top-k routing and
  auxiliary-loss-free load balancing (DeepSeek-V3, arXiv 2412.19437 section 2.1.2), as used by the
  OneRec decoders (OneRec arXiv 2502.18965 section 2.3; OneRec Technical Report arXiv 2506.13695
  section 2.3).
* :class:`Attention` and :class:`DecoderLayer`: pre-LN decoder blocks with causal self-attention
  (grouped-query attention, optional), cross-attention either with its own K/V projections
  (OneRec) or "lazy" on precomputed keys/values (OneRec-V2, arXiv 2508.20900 section 2.2), and an
  incremental key/value cache for decoding.
* :func:`beam_search`: trie-constrained beam search batched over users, with or without the cache.

Sizes here fit a laptop (hundreds of codes per level, tens of thousands of items); the dense
child tables cost ``prefixes x codebook size`` int64 per level (Beauty: 12,101 x 256 at most).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: largest codebook (codes per level) a semantic-ID table may use
MAX_CODEBOOK = 65536
#: largest dense trie level, in entries (prefixes x codebook size; 8 bytes each)
MAX_TRIE_ENTRIES = 200_000_000


@dataclass
class SemanticIDTable:
    """Semantic IDs of the item indices 1..V of an :class:`~reelrec.data.sequences.ItemVocab`.

    Attributes:
        codes: int64 (V + 1, L) codes per item index; row 0 (padding) is all -1.
        sizes: codebook size K_j of each level j (codes of level j are 0..K_j - 1).
    """

    codes: torch.Tensor
    sizes: list[int]

    @classmethod
    def from_items(
        cls, vocab_raw_ids: np.ndarray, item_ids: np.ndarray, semantic_ids: np.ndarray
    ) -> SemanticIDTable:
        """Look up each vocabulary item's semantic ID.

        Args:
            vocab_raw_ids: int64 (V,) raw item ids of indices 1..V.
            item_ids: int64 (n,) raw ids that have a semantic ID.
            semantic_ids: int64 (n, L) their codes (with the disambiguation level).

        Raises:
            ValueError: an item of the vocabulary has no semantic ID, two items share one, or a
                code is negative.
        """
        item_ids = np.asarray(item_ids, dtype=np.int64)
        semantic_ids = np.asarray(semantic_ids, dtype=np.int64)
        if semantic_ids.ndim != 2 or len(semantic_ids) != len(item_ids):
            raise ValueError("semantic_ids must be (n, L) with one row per item id")
        if (semantic_ids < 0).any():
            raise ValueError("semantic IDs must be non-negative codes")
        if semantic_ids.size and semantic_ids.max() >= MAX_CODEBOOK:
            level = int(np.argmax(semantic_ids.max(0) >= MAX_CODEBOOK))
            raise ValueError(
                f"code {int(semantic_ids[:, level].max())} at level {level + 1} exceeds the "
                f"largest supported codebook ({MAX_CODEBOOK:,} codes)"
            )
        if len(np.unique(item_ids)) != len(item_ids):
            raise ValueError("an item id appears on several rows (one semantic ID per item)")
        order = np.argsort(item_ids)
        pos = np.searchsorted(item_ids[order], vocab_raw_ids)
        pos = np.minimum(pos, len(item_ids) - 1)
        found = item_ids[order][pos] == vocab_raw_ids
        if not found.all():
            missing = vocab_raw_ids[~found]
            raise ValueError(
                f"{len(missing):,} of {len(vocab_raw_ids):,} training items have no semantic ID "
                f"(e.g. item {int(missing[0])}); re-run `reelrec tokenize` on this run"
            )
        codes = semantic_ids[order][pos]
        if len(np.unique(codes, axis=0)) != len(codes):
            raise ValueError(
                "two items share a semantic ID; tokenize with the disambiguation level"
            )
        table = np.full((len(codes) + 1, codes.shape[1]), -1, dtype=np.int64)
        table[1:] = codes
        sizes = [int(c) + 1 for c in codes.max(0)]
        return cls(torch.from_numpy(table), sizes)

    @property
    def levels(self) -> int:
        """L, codes per item."""
        return int(self.codes.shape[1])

    @property
    def offsets(self) -> list[int]:
        """Row of code 0 of each level in the shared token-embedding table."""
        return [int(x) for x in np.cumsum([0, *self.sizes[:-1]])]


class PrefixTrie:
    """The valid semantic IDs as a prefix tree (one dense child table per level).

    ``children[j]`` is int64 (n_j, K_j): for the n_j distinct prefixes of length j (node ids; the
    root is node 0 of level 0), the node id of the prefix extended by each code, or -1 when no
    item has that prefix. At the last level the "node id" is the item index (1..V).

    Args:
        table: the item semantic IDs.

    Raises:
        ValueError: duplicate semantic IDs.
    """

    def __init__(self, table: SemanticIDTable) -> None:
        codes = table.codes[1:].numpy()
        n, levels = codes.shape
        self.sizes = list(table.sizes)
        self.children: list[torch.Tensor] = []
        # per level j >= 1, for each node of that level: its parent node and its last code
        self.parents: list[torch.Tensor] = []
        self.codes: list[torch.Tensor] = []
        parent = np.zeros(n, dtype=np.int64)  # node id of each item's prefix at the current level
        n_nodes = 1
        for j in range(levels):
            if n_nodes * self.sizes[j] > MAX_TRIE_ENTRIES:
                raise ValueError(
                    f"trie level {j + 1} would need {n_nodes:,} x {self.sizes[j]:,} entries; "
                    "the dense trie supports at most 2e8 (use smaller codebooks)"
                )
            child = np.full((n_nodes, self.sizes[j]), -1, dtype=np.int64)
            if j == levels - 1:
                node = np.arange(1, n + 1)
                if len(np.unique(parent * self.sizes[j] + codes[:, j])) != n:
                    raise ValueError("duplicate semantic IDs: the trie needs unique code sequences")
            else:
                keys = parent * self.sizes[j] + codes[:, j]
                uniq, node = np.unique(keys, return_inverse=True)
                n_nodes = len(uniq)
                self.parents.append(torch.from_numpy(uniq // self.sizes[j]))
                self.codes.append(torch.from_numpy(uniq % self.sizes[j]))
            child[parent, codes[:, j]] = node
            self.children.append(torch.from_numpy(child))
            parent = node

    def to(self, device: torch.device | str) -> PrefixTrie:
        """Move the child tables to ``device`` (returns self)."""
        self.children = [c.to(device) for c in self.children]
        self.parents = [c.to(device) for c in self.parents]
        self.codes = [c.to(device) for c in self.codes]
        return self

    def nodes(self, level: int) -> int:
        """Number of distinct prefixes of length ``level`` (1 at level 0: the root)."""
        return int(self.children[level].shape[0])


class MoE(nn.Module):
    """Mixture-of-experts feed-forward layer with auxiliary-loss-free load balancing.

    Each token gets affinities ``s = sigmoid(x W_r)`` (E,); the top-k experts are chosen by
    ``s + b`` where ``b`` is a per-expert bias that is not trained by gradient: after every
    training forward, ``b_i += rate * sign(mean load - load_i)`` (DeepSeek-V3 section 2.1.2). The
    gates are the chosen affinities normalised to sum to 1 (the bias only routes), and the output
    is ``sum_i gate_i * FFN_i(x)`` plus an always-on shared expert when ``shared`` is set.

    Args:
        dim: model width D. inner: expert hidden width. experts: E (>= 1). top_k: k (1..E).
        rate: bias update speed gamma (>= 0). shared: add a shared expert. dropout: on outputs.

    Note: with ``top_k == 1`` the normalised gate is always 1, so the router gets no gradient
    (routing then follows the bias and the initial weights); use k >= 2 to train it.
    """

    def __init__(
        self,
        dim: int,
        inner: int,
        experts: int,
        top_k: int,
        rate: float = 1e-3,
        shared: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if experts < 1 or not 1 <= top_k <= experts:
            raise ValueError(f"need experts >= 1 and 1 <= top_k <= experts, got {experts}, {top_k}")
        self.experts, self.top_k, self.rate = experts, top_k, rate
        self.router = nn.Linear(dim, experts, bias=False)
        self.w1 = nn.Parameter(torch.empty(experts, dim, inner))
        self.b1 = nn.Parameter(torch.zeros(experts, inner))
        self.w2 = nn.Parameter(torch.empty(experts, inner, dim))
        self.b2 = nn.Parameter(torch.zeros(experts, dim))
        nn.init.trunc_normal_(self.w1, std=0.02)
        nn.init.trunc_normal_(self.w2, std=0.02)
        self.shared = (
            nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Linear(inner, dim))
            if shared
            else None
        )
        self.drop = nn.Dropout(dropout)
        self.register_buffer("expert_bias", torch.zeros(experts))
        self.register_buffer("load", torch.zeros(experts), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: float (..., D) -> float (..., D). Updates the bias and load counts in training."""
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        affinity = torch.sigmoid(self.router(flat))  # (T, E)
        chosen = torch.topk(affinity + self.expert_bias, self.top_k, dim=-1).indices  # (T, k)
        gates = affinity.gather(1, chosen)
        gates = gates / gates.sum(-1, keepdim=True).clamp_min(1e-9)
        out = torch.zeros_like(flat)
        for e in range(self.experts):
            tok, slot = (chosen == e).nonzero(as_tuple=True)
            if len(tok) == 0:
                continue
            h = F.gelu(flat[tok] @ self.w1[e] + self.b1[e]) @ self.w2[e] + self.b2[e]
            out.index_add_(0, tok, h * gates[tok, slot].unsqueeze(-1))
        if self.shared is not None:
            out = out + self.shared(flat)
        if self.training:
            with torch.no_grad():
                counts = torch.bincount(chosen.flatten(), minlength=self.experts).float()
                self.expert_bias += self.rate * torch.sign(counts.mean() - counts)
                self.load += counts
        return self.drop(out).reshape(shape)

    def take_load(self) -> torch.Tensor:
        """Tokens routed to each expert since the last call (float (E,)); resets the counts."""
        load = self.load.clone()
        self.load.zero_()
        return load


def moe_stats(model: nn.Module) -> dict[str, float]:
    """Load statistics of every :class:`MoE` layer of ``model`` since the last call.

    Returns ``moe_max_load_share`` (largest expert's share of routed tokens, averaged over
    layers; 1/E is perfect balance), ``moe_min_load_share`` and ``moe_cv`` (coefficient of
    variation of the loads), or ``{}`` when there are no MoE layers or no tokens were routed.
    """
    rows = []
    for m in model.modules():
        if isinstance(m, MoE):
            load = m.take_load()
            if load.sum() > 0:
                share = load / load.sum()
                cv = float(load.std() / load.mean()) if len(load) > 1 else 0.0
                rows.append((float(share.max()), float(share.min()), cv))
    if not rows:
        return {}
    arr = np.asarray(rows)
    return {
        "moe_max_load_share": float(arr[:, 0].mean()),
        "moe_min_load_share": float(arr[:, 1].mean()),
        "moe_cv": float(arr[:, 2].mean()),
    }


class Attention(nn.Module):
    """Multi-head attention with grouped-query heads and an optional key/value cache.

    Args:
        dim: width D. heads: query heads H. kv_heads: key/value heads (divides H; H = multi-head,
            1 = multi-query). project_kv: own K/V projections; ``False`` takes keys and values
            as given (OneRec-V2's lazy cross-attention). head_dim: width of a head (0 = D / H;
            TIGER uses 6 heads of 64 at D = 128, so H x head_dim need not be D).
    """

    def __init__(
        self, dim: int, heads: int, kv_heads: int, project_kv: bool = True, head_dim: int = 0
    ) -> None:
        super().__init__()
        if (not head_dim and dim % heads) or heads % kv_heads:
            raise ValueError(
                f"need dim % heads == 0 (or a head_dim) and heads % kv_heads == 0: {dim}, "
                f"{heads}, {kv_heads}"
            )
        self.heads, self.kv_heads = heads, kv_heads
        self.head_dim = head_dim or dim // heads
        self.q = nn.Linear(dim, heads * self.head_dim)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.head_dim) if project_kv else None
        self.out = nn.Linear(heads * self.head_dim, dim)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``x`` (B, T, D): two float (B, kv_heads, T, head_dim)."""
        assert self.kv is not None
        b, t, _ = x.shape
        k, v = self.kv(x).view(b, t, 2, self.kv_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """Attend from queries of ``x`` (N, T, D) to keys/values (B, kv_heads, S, head_dim).

        N is B, or B x beams with each user's beams in consecutive rows (not with ``causal``).

        ``mask``: bool, broadcastable to (B, 1, T, S), True = may attend. ``causal``: query t
        sees keys 0..t + (S - T) (the cached prefix plus itself).
        """
        n_rows, t, d = x.shape
        if k.shape[0] != n_rows:
            # beams: rows of x are (user, beam) pairs, contiguous per user, and attend to their
            # user's keys; folding the beams into the query axis avoids copying keys per beam
            if causal or n_rows % k.shape[0]:
                raise ValueError(f"{n_rows} query rows do not group onto {k.shape[0]} key rows")
            x = x.reshape(k.shape[0], n_rows // k.shape[0] * t, d)
        b, tq, _ = x.shape
        q = self.q(x).view(b, tq, self.heads, self.head_dim).transpose(1, 2)
        if causal and t > 1:
            s = k.shape[2]
            tri = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(s - t)
            mask = tri if mask is None else mask & tri
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, enable_gqa=self.kv_heads != self.heads
        )
        return self.out(y.transpose(1, 2).reshape(n_rows, t, self.heads * self.head_dim))


class DecoderLayer(nn.Module):
    """Pre-norm decoder block: causal self-attention, cross-attention, then a (MoE) feed-forward.

    OneRec order (report eq. 9-11) is self, cross, FFN; ``cross_first`` gives OneRec-V2's order
    (cross, self, FFN; arXiv 2508.20900 section 2.2.2).

    Args:
        dim, heads, kv_heads: attention sizes. inner: FFN / expert width. experts: 0 = dense FFN,
        else the MoE of :class:`MoE` with ``top_k`` and ``rate``. lazy_cross: cross-attention
        without K/V projections (keys/values come precomputed, OneRec-V2). dropout: residual
        dropout. norm: normalisation class (RMSNorm). cross_first: OneRec-V2 block order.
        head_dim: attention head width (0 = dim / heads).
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        kv_heads: int,
        inner: int,
        experts: int,
        top_k: int,
        rate: float,
        shared_expert: bool,
        lazy_cross: bool,
        dropout: float,
        norm: type[nn.Module] = nn.RMSNorm,
        cross_first: bool = False,
        head_dim: int = 0,
    ) -> None:
        super().__init__()
        self.cross_first = cross_first
        self.ln1, self.ln2, self.ln3 = norm(dim), norm(dim), norm(dim)
        self.self_attn = Attention(dim, heads, kv_heads, head_dim=head_dim)
        self.cross_attn = Attention(
            dim, heads, kv_heads, project_kv=not lazy_cross, head_dim=head_dim
        )
        if experts > 0:
            self.ffn: nn.Module = MoE(dim, inner, experts, top_k, rate, shared_expert, dropout)
        else:
            self.ffn = nn.Sequential(
                nn.Linear(dim, inner), nn.GELU(), nn.Dropout(dropout), nn.Linear(inner, dim)
            )
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        cross_kv: tuple[torch.Tensor, torch.Tensor],
        cross_mask: torch.Tensor,
        cache: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """x: float (B, T, D), the new decoder positions (all of them without a cache).

        cross_kv: keys/values of the context, (B, kv_heads, S, head_dim) each; cross_mask: bool
        (B, 1, 1, S). cache: dict updated in place with this layer's self-attention keys/values
        ("k", "v"); the new positions attend to the cached ones.
        """
        if self.cross_first:
            x = x + self.drop(self.cross_attn(self.ln2(x), *cross_kv, mask=cross_mask))
        h = self.ln1(x)
        k, v = self.self_attn.project(h)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        x = x + self.drop(self.self_attn(h, k, v, causal=True))
        if not self.cross_first:
            x = x + self.drop(self.cross_attn(self.ln2(x), *cross_kv, mask=cross_mask))
        return x + self.drop(self.ffn(self.ln3(x)))


class Decodable(Protocol):
    """What :func:`beam_search` needs from a model (structural, for type hints; models declare
    it by inheriting :class:`reelrec.models.base.GeneratesSemanticIDs`)."""

    def start(self, history: torch.Tensor) -> dict:
        """Encode histories (B, L) into a decoding context for B users."""

    def expand(self, ctx: dict, index: torch.Tensor) -> dict:
        """Reorder the per-beam state (caches) to rows ``index`` (int64 (N,), each user's beams
        contiguous); per-user state (encoder keys/values) stays one row per user."""

    def step_logits(self, ctx: dict, tokens: torch.Tensor, use_cache: bool) -> torch.Tensor:
        """Log-probabilities of the next code, float (N, K_level), given the prefix (N, t)."""


class Generation(NamedTuple):
    """What :func:`generate` returns for B users and a beam of width W.

    Attributes:
        items: int64 (B, W) item index of each generated semantic ID, best first; -1 where the
            code sequence is not the semantic ID of any item (only without the trie constraint)
            or where fewer than W sequences exist.
        logp: float (B, W) total log-probability of each sequence (-inf for empty slots).
        codes: int64 (B, W, L) the generated codes (-1 for empty slots).
    """

    items: torch.Tensor
    logp: torch.Tensor
    codes: torch.Tensor

    @property
    def legal(self) -> torch.Tensor:
        """bool (B, W): the sequence is the semantic ID of a real item."""
        return self.items > 0


def excluded_items(exclude: torch.Tensor, num_items: int) -> torch.Tensor:
    """bool (B, V + 1) mask of the items each row may not get, from int64 (B, E) item indices
    ``exclude`` (history masking); ids outside 1..V (padding 0 among them) are ignored, never
    clamped onto a real item."""
    mask = torch.zeros(exclude.shape[0], num_items + 1, dtype=torch.bool, device=exclude.device)
    mask.scatter_(1, torch.where((exclude >= 1) & (exclude <= num_items), exclude, 0), True)
    mask[:, 0] = False
    return mask


def generate(
    model: Decodable,
    history: torch.Tensor,
    trie: PrefixTrie,
    beam: int,
    use_cache: bool = True,
    constrained: bool = True,
    exclude: torch.Tensor | None = None,
) -> Generation:
    """Beam search over semantic IDs, with or without the constraint to valid IDs.

    At each level the running log-probabilities over (beam x codes) are ranked and the best
    ``beam`` kept (ties by lower flat index); with ``constrained`` the codes that no item
    continues (``trie``) are set to -inf first, so only real items come out. Without it the
    model's own distribution decides, and the trie only tells afterwards which outputs are
    legal (the legal-ID rate of OneRec Technical Report section 2.4.2). Beam 1 is greedy.

    Args:
        model: a :class:`Decodable` (OneRec, OneRec-V2).
        history: int64 (B, L) left-padded item indices.
        trie: valid semantic IDs (its codebook sizes set the vocabulary of each level).
        beam: beam width (>= 1).
        use_cache: decode incrementally with the key/value cache (same result, less compute).
        constrained: keep only prefixes of valid semantic IDs.
        exclude: int64 (B, E) item indices never generated (history masking; 0 = none): at
            the last level their codes are set to -inf before the beam is cut. Earlier levels
            do not know them, so a prefix whose items are all excluded can take a beam slot
            and leave the list shorter (-1 slots).

    Returns:
        :class:`Generation` (items, logp, codes).

    Raises:
        ValueError: beam < 1, or the model produced NaN log-probabilities.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    b = history.shape[0]
    device = history.device
    excluded = None  # bool (B, V + 1): items this user may not get
    if exclude is not None:
        excluded = excluded_items(exclude, int(trie.children[-1].max()))
    ctx = model.start(history)
    node = torch.zeros(b, 1, dtype=torch.long, device=device)  # (B, n_beams); -1 = no node
    score = torch.zeros(b, 1, device=device)
    tokens = torch.zeros(b, 0, dtype=torch.long, device=device)  # codes chosen so far, (B*n, j)
    for child_table in trie.children:
        n = node.shape[1]
        logp = model.step_logits(ctx, tokens, use_cache)  # (B*n, K_j)
        if torch.isnan(logp).any():
            raise ValueError("the model produced NaN log-probabilities (diverged weights?)")
        flat_node = node.reshape(-1, 1)
        child = child_table[flat_node.squeeze(1).clamp(min=0)].masked_fill(flat_node < 0, -1)
        total = score.reshape(-1, 1) + logp
        if constrained:
            total = total.masked_fill(child < 0, float("-inf"))
        if excluded is not None and child_table is trie.children[-1]:
            user = torch.arange(b, device=device).repeat_interleave(n).unsqueeze(1)
            total = total.masked_fill(excluded[user, child.clamp(min=0)] & (child > 0), -math.inf)
        k_j = total.shape[1]
        total = total.view(b, n * k_j)
        width = min(beam, n * k_j)
        score, flat = torch.topk(total, width, dim=1)  # sorted; ties keep the lower index
        parent, code = flat // k_j, flat % k_j
        rows = (torch.arange(b, device=device).unsqueeze(1) * n + parent).reshape(-1)
        node = child.view(b, n, k_j)[torch.arange(b, device=device).unsqueeze(1), parent, code]
        node = node.masked_fill(torch.isinf(score), -1)
        tokens = torch.cat([tokens[rows], code.reshape(-1, 1)], 1)
        ctx = model.expand(ctx, rows)
    codes = tokens.view(b, -1, tokens.shape[1]).masked_fill(torch.isinf(score).unsqueeze(-1), -1)
    items = node
    if items.shape[1] < beam:
        pad = beam - items.shape[1]
        items = F.pad(items, (0, pad), value=-1)
        score = F.pad(score, (0, pad), value=float("-inf"))
        codes = F.pad(codes, (0, 0, 0, pad), value=-1)
    return Generation(items, score, codes)


def beam_search(
    model: Decodable,
    history: torch.Tensor,
    trie: PrefixTrie,
    beam: int,
    use_cache: bool = True,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generate the ``beam`` most likely valid semantic IDs per user (trie-constrained
    :func:`generate`).

    Args:
        model: a :class:`Decodable` (OneRec, OneRec-V2).
        history: int64 (B, L) left-padded item indices.
        trie: valid semantic IDs.
        beam: beam width (>= 1); with fewer valid IDs than ``beam``, the tail is -1 / -inf.
        use_cache: decode incrementally with the key/value cache (same result, less compute).
        exclude: int64 (B, E) items never returned (history masking), or None.

    Returns:
        ``(items, logp)``: int64 (B, beam) item indices best first (-1 = no item), float
        (B, beam) their total log-probabilities.

    Raises:
        ValueError: beam < 1.
    """
    out = generate(model, history, trie, beam, use_cache, constrained=True, exclude=exclude)
    return out.items, out.logp


def score_items(
    model: Decodable, history: torch.Tensor, trie: PrefixTrie, num_items: int
) -> torch.Tensor:
    """Exact log-probability of every item's semantic ID, for full ranking.

    The trie is walked level by level for all its prefixes at once (a beam as wide as the
    trie): one decoder step per prefix node with the key/value cache, so a user costs one
    decoder token per internal node (1 + n_1 + ... + n_{L-1}) and the last level's
    log-softmax scores all the items below each node. Constrained to nothing: an item's score
    is ``sum_j log p(c_j | c_<j, history)`` under the model's own softmax over each level's
    codebook, the quantity beam search maximises.

    Args:
        model: a :class:`Decodable`. history: int64 (B, L) left-padded item indices.
        trie: the valid semantic IDs. num_items: V (items are 1..V).

    Returns:
        float32 (B, V + 1); column 0 (padding) is -inf.

    Raises:
        ValueError: the model produced NaN log-probabilities.
    """
    b, dev = history.shape[0], history.device
    ctx = model.start(history)
    node_logp = torch.zeros(b, 1, device=dev)  # (B, n_j) log-probability of each prefix
    tokens = torch.zeros(b, 0, dtype=torch.long, device=dev)  # (B * n_j, j)
    scores = torch.full((b, num_items + 1), float("-inf"), device=dev)
    for j, child_table in enumerate(trie.children):
        n = trie.nodes(j)
        logp = model.step_logits(ctx, tokens, True)  # (B * n, K_j)
        if torch.isnan(logp).any():
            raise ValueError("the model produced NaN log-probabilities (diverged weights?)")
        total = node_logp.reshape(-1, 1) + logp  # (B * n, K_j)
        if j == len(trie.children) - 1:
            node, code = (child_table >= 0).nonzero(as_tuple=True)
            items = child_table[node, code]
            scores[:, items] = total.view(b, n, -1)[:, node, code].float()
            break
        parent, code = trie.parents[j], trie.codes[j]  # nodes of level j + 1
        node_logp = total.view(b, n, -1)[:, parent, code]  # (B, n_{j+1})
        rows = (torch.arange(b, device=dev).unsqueeze(1) * n + parent).reshape(-1)
        tokens = torch.cat([tokens[rows], code.repeat(b).unsqueeze(1)], 1)
        ctx = model.expand(ctx, rows)
    return scores


def greedy_decode(model: Decodable, history: torch.Tensor, trie: PrefixTrie) -> torch.Tensor:
    """The single most likely valid semantic ID per user, code by code (reference for beam 1).

    Returns int64 (B,) item indices.
    """
    b = history.shape[0]
    ctx = model.start(history)
    node = torch.zeros(b, dtype=torch.long, device=history.device)
    tokens = torch.zeros(b, 0, dtype=torch.long, device=history.device)
    for child_table in trie.children:
        logp = model.step_logits(ctx, tokens, False)
        child = child_table[node]
        code = logp.masked_fill(child < 0, float("-inf")).argmax(1)
        node = child.gather(1, code.unsqueeze(1)).squeeze(1)
        tokens = torch.cat([tokens, code.unsqueeze(1)], 1)
    return node


#: slack on log-probabilities when pruning the trie: a prefix is kept when its log-probability
#: is at least the target's minus this (the target's own path is never cut by rounding)
PRUNE_SLACK = 1e-4


def exact_target_ranks(
    model: Decodable,
    history: torch.Tensor,
    targets: torch.Tensor,
    trie: PrefixTrie,
    k: int,
    target_logp: torch.Tensor,
    exclude: torch.Tensor | None = None,
    max_frontier: int = 1024,
) -> torch.Tensor:
    """Each target's rank in the model's exact full ranking (every item by its semantic-ID
    log-probability), found without scoring every item: exact whenever the rank is below
    ``k``, and a miss (``MISS_RANK``) otherwise, so every metric at a cutoff ``<= k`` equals
    that of :func:`score_items`' full ranking.

    Log-probabilities only fall along a path (each code adds ``log p <= 0``), so a prefix
    scoring below the target bounds every item under it below the target too. Per user:

    1. A trie-constrained beam of width ``k`` (then ``5k`` for the users it leaves open): its
       items are real items with exact scores; when ``k`` of them score above the target,
       the target's rank is ``>= k`` (a miss).
    2. Otherwise the trie is walked level by level keeping only the prefixes whose
       log-probability reaches the target's (a threshold search, batched over users with
       their frontiers padded to the widest); the items reached that score above / equal to
       the target are counted (``[g, e]``, the tie rule of :mod:`reelrec.eval.ranking`).
       A user whose frontier outgrows ``max_frontier`` is searched again with 16 times the
       room, and beyond that scored over the whole trie (:func:`score_items`).

    Args:
        model: a :class:`Decodable`. history: int64 (B, L) left-padded item indices.
        targets: int64 (B,) item indices (1..V) or -1 (out of vocabulary: a miss).
        trie: valid semantic IDs. k: the largest cutoff reported (>= 1).
        target_logp: float (B,) each target's log-probability (``sequence_logp``; any value
            for -1 targets).
        exclude: int64 (B, E) items taken out of the ranking (history masking), or None; a
            target among them is a miss; ids outside 1..V (padding 0) are ignored.
        max_frontier: prefixes per user and level before falling back to the whole trie.

    Returns:
        int64 (B, 2) ``[g, e]`` rows; ``[MISS_RANK, 0]`` when the rank is ``>= k``, the target
        is out of vocabulary or excluded.

    Raises:
        ValueError: a non-finite ``target_logp`` of an in-vocabulary target.
    """
    from reelrec.eval.metrics import MISS_RANK

    b, dev = history.shape[0], history.device
    if bool((~torch.isfinite(target_logp) & (targets > 0)).any()):
        raise ValueError("target_logp must be finite for in-vocabulary targets")
    num_items = int(trie.children[-1].max())
    excluded = (
        torch.zeros(b, num_items + 1, dtype=torch.bool, device=dev)
        if exclude is None
        else excluded_items(exclude, num_items)
    )
    tgt = targets.clamp(min=0)
    miss = (targets < 1) | excluded[torch.arange(b, device=dev), tgt]
    out = torch.stack([torch.full_like(targets, MISS_RANK), torch.zeros_like(targets)], 1)
    thr = target_logp.float() - PRUNE_SLACK
    # 1. the beam: k real items above the target settle a miss; users it leaves open get a
    # beam 5 times wider, which finds the items of a flat distribution that the first missed
    todo = (~miss).nonzero().squeeze(1)
    for width in (k, 5 * k):
        if len(todo) == 0:
            return out
        items, logp = beam_search(
            model, history[todo], trie, width, exclude=None if exclude is None else exclude[todo]
        )
        t_lp, t_id = target_logp[todo].unsqueeze(1), targets[todo].unsqueeze(1)
        above = (logp > t_lp + PRUNE_SLACK) & (items != t_id)
        settled = above.sum(1) >= k
        miss[todo[settled]] = True
        todo = todo[~settled]
        if len(todo) == 0:
            return out
    # users with similar target log-probabilities have similar frontiers (about exp(-logp)
    # prefixes per level at most): grouping them wastes less padding
    todo = todo[torch.argsort(thr[todo], descending=True)]
    # 2. threshold search for the others, a few users at a time (their frontiers are padded
    # to the widest of the group: at most 65,536 decoder rows per pass). Users whose frontier
    # outgrows the cap are searched again alone with a 16x cap, then over the whole trie.
    for cap, last in ((max_frontier, False), (16 * max_frontier, True)):
        users_per_pass = max(1, 65_536 // cap)
        again = []
        for i in range(0, len(todo), users_per_pass):
            who = todo[i : i + users_per_pass]
            ranks, over = _threshold_search(
                model, history[who], targets[who], thr[who], excluded[who], trie, k, cap, last
            )
            out[who] = ranks
            again.append(who[over])
        todo = torch.cat(again) if again else todo[:0]
        if len(todo) == 0:
            break
    return out


def _threshold_search(
    model: Decodable,
    h: torch.Tensor,
    t: torch.Tensor,
    th: torch.Tensor,
    ex: torch.Tensor,
    trie: PrefixTrie,
    k: int,
    max_frontier: int,
    whole_trie_beyond: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2 of :func:`exact_target_ranks` for U users: histories h (U, L), targets t (U,),
    pruning thresholds th (U,), excluded items ex bool (U, V + 1) -> int64 (U, 2) ranks and
    bool (U,) users whose frontier outgrew ``max_frontier`` (their ranks are then those of the
    whole trie when ``whole_trie_beyond``, else to be searched again)."""
    from reelrec.eval.metrics import MISS_RANK

    dev, num_items = h.device, ex.shape[1] - 1
    n_users = len(t)
    ctx = model.start(h)
    node = torch.zeros(n_users, 1, dtype=torch.long, device=dev)  # (U, F) nodes; -1 = padding
    node_logp = torch.zeros(n_users, 1, device=dev)
    tokens = torch.zeros(n_users, 0, dtype=torch.long, device=dev)
    fallback = torch.zeros(n_users, dtype=torch.bool, device=dev)
    g = torch.zeros(n_users, dtype=torch.long, device=dev)
    e = torch.zeros(n_users, dtype=torch.long, device=dev)
    for j, child_table in enumerate(trie.children):
        f = node.shape[1]
        lp = model.step_logits(ctx, tokens, True)  # (U * F, K_j)
        child = child_table[node.clamp(min=0)].masked_fill((node < 0).unsqueeze(-1), -1)
        total = (node_logp.unsqueeze(-1) + lp.view(n_users, f, -1)).float()  # (U, F, K_j)
        if j == len(trie.children) - 1:
            item = child.clamp(min=0)
            real = (child > 0) & ~ex.gather(1, item.flatten(1)).view_as(item)
            is_tgt = item == t.view(-1, 1, 1)
            # the target's score as this search computed it (same arithmetic as the others)
            found = (real & is_tgt).flatten(1).any(1)
            s_t = torch.where(
                found,
                total.masked_fill(~(real & is_tgt), -math.inf).flatten(1).max(1).values,
                th + PRUNE_SLACK,
            )
            # the pruning compared other arithmetic (sequence_logp) with this search's: a
            # target pruned, or scored more than PRUNE_SLACK below it, sends the user to the
            # wider search / the whole trie rather than risk a pruned item above it
            fallback |= ~found | (s_t < th)
            other = real & ~is_tgt
            g = (other & (total > s_t.view(-1, 1, 1))).flatten(1).sum(1)
            e = (other & (total == s_t.view(-1, 1, 1))).flatten(1).sum(1)
            break
        keep = (child >= 0) & (total >= th.view(-1, 1, 1))  # (U, F, K_j)
        keep &= ~fallback.view(-1, 1, 1)
        counts = keep.flatten(1).sum(1)
        fallback |= counts > max_frontier
        keep &= ~fallback.view(-1, 1, 1)
        counts = keep.flatten(1).sum(1)
        width = max(int(counts.max()), 1)
        # the kept (parent slot, code) pairs of each user, left-aligned and padded to `width`
        flat = keep.flatten(1)
        order = torch.argsort((~flat).to(torch.int8), dim=1, stable=True)[:, :width]
        valid = torch.arange(width, device=dev).unsqueeze(0) < counts.unsqueeze(1)
        slot, code = order // total.shape[2], order % total.shape[2]
        node = child.flatten(1).gather(1, order).masked_fill(~valid, -1)
        node_logp = total.flatten(1).gather(1, order).masked_fill(~valid, -math.inf)
        rows = (torch.arange(n_users, device=dev).unsqueeze(1) * f + slot).reshape(-1)
        tokens = torch.cat([tokens[rows], code.reshape(-1, 1)], 1)
        ctx = model.expand(ctx, rows)
    widest = max(trie.nodes(j) for j in range(len(trie.children)))
    per_pass = max(1, 65_536 // widest)  # whole-trie scoring: users per pass
    fallen = fallback.nonzero().squeeze(1) if whole_trie_beyond else fallback[:0].nonzero()
    for i in range(0, len(fallen), per_pass):
        who = fallen[i : i + per_pass]
        scores = score_items(model, h[who], trie, num_items)
        scores[ex[who]] = -math.inf
        s_t = scores.gather(1, t[who].unsqueeze(1))
        others = torch.ones_like(scores, dtype=torch.bool)
        others[torch.arange(len(who), device=dev), t[who]] = False
        others[:, 0] = False
        g[who] = ((scores > s_t) & others).sum(1)
        e[who] = ((scores == s_t) & others).sum(1)
    ranked = torch.stack([g, e], 1)
    ranked[g >= k] = torch.tensor([MISS_RANK, 0], device=dev)
    return ranked, fallback & ~torch.tensor(whole_trie_beyond, device=dev)
