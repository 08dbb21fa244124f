"""ELASTIC: linear dispatcher attention and interest memory retrieval for long user histories.

Jiaxin Deng, Shiyao Wang, Song Lu, Yinfeng Li, Xinchen Luo, Yuanjun Liu, Peixing Xu, Guorui
Zhou, "ELASTIC: Efficient Linear Attention for Sequential Interest Compression", arXiv
2408.09380 (Kuaishou). No official code is public; this file is written from the paper's
description, and every interpretation is listed below.

What the model does (same embedding, blocks, loss and scoring as :class:`~reelrec.models.sasrec.SASRec`,
with the self-attention of every block replaced by :class:`DispatcherAttention`):

    * Linear dispatcher attention (LDA): ``k`` learnable interest experts (dispatchers, ``k``
      much smaller than ``L``) first *aggregate* the sequence (each expert is a softmax-attention
      query over the items), then every position *reads back* from the experts. Cost
      O(L * k * D) instead of self-attention's O(L^2 * D).
    * Interest memory retrieval (IMR): a memory bank of ``memory_size`` = s^2 learnable interest
      vectors with product keys (Lample et al., 2019, arXiv 1907.05242): a query is split in
      two halves, each half is scored against s sub-keys, the top-k of each half give k^2
      candidate slots whose score is the sum of the two halves, and the top-k of those are
      retrieved. The cost is O(s * D + k^2) per query for s^2 slots: capacity grows with the
      bank, compute does not. The ``k`` retrieved vectors, weighted by k * softmax of their
      scores as in PKM, initialise the user's ``k`` experts (the slot ranked e-th initialises
      expert e).

Causality (the paper trains on whole sequences; next-item training over all positions must not
let a position see later items, so the dispatcher is made causal, *chunked*):

    * The sequence is cut into chunks of ``chunk`` items, counted from the user's first item.
    * Expert e's state at chunk c is a softmax-weighted average over its retrieved memory vector
      (score: the product-key score of the slot) and every item of the chunks *before* c (score:
      the expert's query against the item's key). The sums are carried across chunks by an
      exact prefix log-sum-exp (:func:`prefix_softmax_states`: a masked matrix product inside
      blocks of 16 chunks, a loop across blocks; O(L * k * D)).
    * The memory query of chunk c is the mean of the layer's input over the items before chunk c
      (a learned query when there are none), so retrieval never sees the chunk's own items.
    * A position in chunk c attends, in one softmax, to the k experts of chunk c and causally to
      the items of its own chunk up to itself: O(L * (k + chunk) * D).

    With ``memory_size = 0`` the experts of chunk 0 have nothing to summarise and are masked.

Deviations and interpretations, and why:
    * Chunked causal dispatcher (above) instead of the paper's whole-sequence compression, which
      would leak the future under next-item training.
    * Experts are initialised from the memory as an extra softmax term (value: the retrieved
      vector; score: its product-key score), so the sequence refines the retrieved interest and
      the product keys get gradients through the softmax; the experts' *queries* are learned per
      layer (not retrieved), which is what lets one prefix scan serve every chunk.
    * The experts read the items through the same key/value projections as the local attention;
      the expert states get their own key/value projection for the read-back.
    * One memory bank per block; sizes default to a laptop (k 8 experts, chunks of 32, 1,024
      slots; the paper's memory is far larger).
    * Internally each sequence is rotated so that its first item is at position 0 (inputs are
      left-padded); outputs are rotated back. Outputs therefore do not depend on the amount of
      left padding, and a position's output does not depend on later items.

Cost, measured (docs/results.md "Long user histories"; ``bench/long_sequence.py``): on one H200, the
saving in memory grows with L (87% in training at L = 8,192); time per step is below
SASRec's only from L = 8,192, because at short L the many small kernels, not the arithmetic,
set the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from reelrec.config import check_section
from reelrec.models.base import PaddingInvariant
from reelrec.models.sasrec import Dropout, SASRec, SASRecConfig, SASRecOutput

#: stands in for -inf in the running log-sum-exp (exp(NEG - x) underflows to exactly 0)
NEG = -1e30
#: chunks per block of the prefix scan: within a block the prefix sums are one masked matrix
#: product, across blocks a loop carries them (n / SCAN_BLOCK steps; affects rounding only)
SCAN_BLOCK = 16


def merge_softmax_states(
    m1: torch.Tensor,
    z1: torch.Tensor,
    s1: torch.Tensor,
    m2: torch.Tensor,
    z2: torch.Tensor,
    s2: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Combine two partial softmax sums, each kept relative to its own max logit.

    ``(m, z, s)`` stands for ``z = sum exp(a - m)`` and ``s = sum exp(a - m) v`` over some set
    of logits ``a``; the result is the same for the union of both sets, relative to
    ``max(m1, m2)`` (every exponent <= 0). ``m``, ``z``: float (...); ``s``: float (..., d).
    """
    top = torch.maximum(m1, m2)
    a1, a2 = torch.exp(m1 - top), torch.exp(m2 - top)
    return top, z1 * a1 + z2 * a2, s1 * a1.unsqueeze(-1) + s2 * a2.unsqueeze(-1)


def prefix_softmax_states(
    m: torch.Tensor, z: torch.Tensor, s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exclusive prefix log-sum-exp over chunks: what each chunk's experts see before it.

    For chunk statistics ``m_j`` (max logit), ``z_j = sum exp(a - m_j)`` and ``s_j = sum
    exp(a - m_j) v`` returns, for every chunk c, ``G_c = max_{j<c} m_j`` (NEG when c = 0),
    ``Z_c = sum_{j<c} exp(m_j - G_c) z_j`` and ``S_c = sum_{j<c} exp(m_j - G_c) s_j``. Every
    exponent is <= 0, so nothing overflows; chunk c's values depend only on chunks < c (future
    chunks enter only as exact zeros).

    Args:
        m: float32 (..., n); z: float32 (..., n); s: float32 (..., n, d).

    Returns:
        (G (..., n), Z (..., n), S (..., n, d)).
    """
    n = m.shape[-1]
    g = min(SCAN_BLOCK, max(n, 1))
    nb = -(-n // g)
    pad = nb * g - n
    if pad:
        m = F.pad(m, (0, pad), value=NEG)
        z = F.pad(z, (0, pad))
        s = F.pad(s, (0, 0, 0, pad))
    m = m.unflatten(-1, (nb, g))
    z = z.unflatten(-1, (nb, g))
    s = s.unflatten(-2, (nb, g))
    inc = m.cummax(-1).values  # inclusive max within each block
    g_loc = torch.cat([torch.full_like(inc[..., :1], NEG), inc[..., :-1]], -1)
    before = torch.ones(g, g, dtype=torch.bool, device=m.device).tril(-1)  # j < c
    diff = (m.unsqueeze(-2) - g_loc.unsqueeze(-1)).masked_fill(~before, float("-inf"))
    w = torch.exp(diff)  # (..., nb, g[c], g[j]), <= 1
    z_loc = (w * z.unsqueeze(-2)).sum(-1)
    s_loc = w @ s
    m_blk = inc[..., -1]  # (..., nb)
    wb = torch.exp(m - m_blk.unsqueeze(-1))
    z_blk = (wb * z).sum(-1)
    s_blk = (wb.unsqueeze(-1) * s).sum(-2)
    carry_m = torch.full_like(m_blk[..., 0], NEG)
    carry_z = torch.zeros_like(z_blk[..., 0])
    carry_s = torch.zeros_like(s_blk[..., 0, :])
    outs_m, outs_z, outs_s = [], [], []
    for b in range(nb):
        # chunks of block b: everything in earlier blocks, then the block's own earlier chunks
        top, zz, ss = merge_softmax_states(
            carry_m.unsqueeze(-1), carry_z.unsqueeze(-1), carry_s.unsqueeze(-2),
            g_loc[..., b, :], z_loc[..., b, :], s_loc[..., b, :, :],
        )  # fmt: skip
        outs_m.append(top)
        outs_z.append(zz)
        outs_s.append(ss)
        carry_m, carry_z, carry_s = merge_softmax_states(
            carry_m, carry_z, carry_s, m_blk[..., b], z_blk[..., b], s_blk[..., b, :]
        )
    G = torch.cat(outs_m, -1)[..., :n]
    Z = torch.cat(outs_z, -1)[..., :n]
    S = torch.cat(outs_s, -2)[..., :n, :]
    return G, Z, S


@dataclass
class ElasticConfig(SASRecConfig):
    """ELASTIC hyper-parameters: SASRec's (width, depth, dropout, loss) plus the dispatcher's."""

    experts: int = 8  # k interest experts (dispatchers) per block, >= 1
    chunk: int = 32  # causal chunk length in items, >= 1 (cost per position: k + chunk)
    memory_size: int = 1024  # interest memory slots: a perfect square s^2 >= experts^2, or 0
    memory_dim: int = 64  # product-key query width (even, >= 2)

    def validate(self, section: str = "elastic") -> None:
        """SASRec's ranges, then ELASTIC's own (:func:`check_elastic_config`).

        Raises:
            ConfigError: naming the first invalid key.
        """
        super().validate(section)
        check_section(check_elastic_config, self)


def check_elastic_config(cfg: ElasticConfig) -> None:
    """Validate the ELASTIC-only fields.

    Raises:
        ValueError: naming the first invalid field (``elastic.<field>``), its rule and value.
    """
    if cfg.experts < 1:
        raise ValueError(f"elastic.experts must be >= 1, got {cfg.experts}")
    if cfg.chunk < 1:
        raise ValueError(f"elastic.chunk must be >= 1, got {cfg.chunk}")
    if cfg.memory_size:
        s = math.isqrt(max(cfg.memory_size, 0))
        if cfg.memory_size < 0 or s * s != cfg.memory_size or s < cfg.experts:
            raise ValueError(
                "elastic.memory_size must be 0 or a perfect square s^2 with s >= elastic.experts "
                f"({cfg.experts}), got {cfg.memory_size}"
            )
    if cfg.memory_dim < 2 or cfg.memory_dim % 2:
        raise ValueError(f"elastic.memory_dim must be even and >= 2, got {cfg.memory_dim}")


class ProductKeyMemory(nn.Module):
    """Interest memory bank addressed by product keys (ELASTIC IMR; Lample et al. 2019).

    Args:
        cfg: ``memory_size`` = s^2 slots of width ``hidden``, queries of ``memory_dim``,
            ``experts`` slots retrieved per query.
    """

    def __init__(self, cfg: ElasticConfig) -> None:
        super().__init__()
        self.side = math.isqrt(cfg.memory_size)
        self.topk = cfg.experts
        half = cfg.memory_dim // 2
        self.query = nn.Sequential(
            nn.LayerNorm(cfg.hidden, eps=cfg.layer_norm_eps), nn.Linear(cfg.hidden, cfg.memory_dim)
        )
        # the query of chunks with no items before them (random: LayerNorm of a constant
        # vector would have no gradient)
        self.default_query = nn.Parameter(torch.randn(cfg.hidden))
        self.sub_keys = nn.Parameter(torch.randn(2, self.side, half) / math.sqrt(half))
        self.values = nn.Embedding(cfg.memory_size, cfg.hidden)

    def retrieve(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k slots of the product-key scores.

        Args:
            q: float (..., memory_dim) queries.

        Returns:
            (scores float (..., k) in descending order, slots int64 (..., k) in 0..s^2-1); the
            score of slot ``i * s + j`` is ``q[:half] . K1[i] + q[half:] . K2[j]``.
        """
        half = q.shape[-1] // 2
        s1 = q[..., :half] @ self.sub_keys[0].T  # (..., s)
        s2 = q[..., half:] @ self.sub_keys[1].T
        v1, i1 = s1.topk(self.topk, dim=-1)
        v2, i2 = s2.topk(self.topk, dim=-1)
        cand = v1.unsqueeze(-1) + v2.unsqueeze(-2)  # (..., k, k)
        scores, flat = cand.flatten(-2).topk(self.topk, dim=-1)
        slots = i1.gather(-1, flat // self.topk) * self.side + i2.gather(-1, flat % self.topk)
        return scores, slots

    def forward(self, prefix_mean: torch.Tensor, has_prefix: torch.Tensor):
        """Retrieve each chunk's initial experts.

        Args:
            prefix_mean: float (B, n, D) mean layer input over the items before each chunk.
            has_prefix: bool (B, n), False where no item precedes the chunk.

        Returns:
            (scores float (B, n, k), vectors float (B, n, k, D)); each retrieved vector is
            scaled by k * softmax(scores) (PKM's weighting; 1 when the scores are equal) so the
            query learns even where no item competes with the memory.
        """
        x = torch.where(has_prefix.unsqueeze(-1), prefix_mean, self.default_query)
        scores, slots = self.retrieve(self.query(x))
        weight = scores.softmax(-1) * self.topk
        return scores, self.values(slots) * weight.unsqueeze(-1)


class DispatcherAttention(nn.Module):
    """Causal (chunked) linear dispatcher attention with interest memory retrieval.

    Args:
        cfg: width ``hidden`` split over ``heads``; ``experts`` k; ``chunk``; ``memory_size``.

    Raises:
        ValueError: hidden not divisible by heads, or invalid ELASTIC fields.
    """

    def __init__(self, cfg: ElasticConfig) -> None:
        super().__init__()
        if cfg.hidden % cfg.heads:
            raise ValueError(f"hidden ({cfg.hidden}) must be divisible by heads ({cfg.heads})")
        check_elastic_config(cfg)
        self.heads, self.k, self.chunk = cfg.heads, cfg.experts, cfg.chunk
        d = cfg.hidden // cfg.heads
        # the dispatchers' queries, per head: (H, k, d)
        self.expert_query = nn.Parameter(torch.empty(cfg.heads, cfg.experts, d))
        nn.init.trunc_normal_(self.expert_query, std=cfg.init_std, a=-2 * cfg.init_std)
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.expert_kv = nn.Linear(cfg.hidden, 2 * cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.hidden)
        self.attn_dropout = Dropout(cfg.attn_dropout)
        self.memory = ProductKeyMemory(cfg) if cfg.memory_size else None

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n, m, D) -> (B, H, n, m, d)."""
        b, n, m, dim = x.shape
        return x.view(b, n, m, self.heads, dim // self.heads).permute(0, 3, 1, 2, 4)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Mix a start-aligned sequence.

        Args:
            x: float (B, L, D); real items first, padding after them.
            valid: bool (B, L), True at real items (a prefix of each row).

        Returns:
            float (B, L, D); position t depends only on positions <= t.
        """
        b, seq, dim = x.shape
        if seq == 0:
            return self.out(x)
        c = min(self.chunk, seq)  # one chunk either way; no cost beyond L
        n = -(-seq // c)
        pad = n * c - seq
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
            valid = F.pad(valid, (0, pad))
        xc = x.view(b, n, c, dim)
        q, key, val = (self._split(t) for t in self.qkv(xc).chunk(3, dim=-1))  # (B,H,n,C,d)
        vmask = valid.view(b, 1, n, c)
        scale = q.shape[-1] ** -0.5

        # 1. aggregate: per-chunk softmax statistics of every expert over the chunk's items
        a = torch.einsum("hkd,bhncd->bhnkc", self.expert_query, key).float() * scale
        a = a.masked_fill(~vmask.unsqueeze(3), float("-inf"))
        m = a.amax(-1).clamp_min(NEG)  # (B, H, n, k)
        w = torch.exp(a - m.unsqueeze(-1))  # 0 at padding
        z = w.sum(-1)  # (B, H, n, k)
        s = torch.einsum("bhnkc,bhncd->bhnkd", w, val.float())  # (B, H, n, k, d)

        # memory: the experts' initial vectors and scores for each chunk
        if self.memory is not None:
            cnt = valid.view(b, n, c).sum(-1).float()
            tot = (x * valid.unsqueeze(-1)).view(b, n, c, dim).sum(2)
            # exclusive prefix sums by shifting (cumsum - x would leak the chunk's own items
            # into the rounding)
            prev_cnt = F.pad(cnt.cumsum(1), (1, 0))[:, :-1]  # items before each chunk
            prev_sum = F.pad(tot.cumsum(1), (0, 0, 1, 0))[:, :-1]
            mean = (prev_sum / prev_cnt.clamp_min(1).unsqueeze(-1)).to(x.dtype)
            p, mem = self.memory(mean, prev_cnt > 0)  # (B, n, k), (B, n, k, D)
            p = p.float().unsqueeze(1).expand(b, self.heads, n, self.k)
            mem = self._split(mem).float()  # (B, H, n, k, d)
        # prefix log-sum-exp over the chunks before c (B, H, k, n ...), then the memory term
        run_m, run_z, run_s = prefix_softmax_states(
            m.transpose(2, 3), z.transpose(2, 3), s.transpose(2, 3)
        )
        run_m, run_z, run_s = run_m.transpose(2, 3), run_z.transpose(2, 3), run_s.transpose(2, 3)
        if self.memory is not None:  # the memory vector: one more term of each expert's softmax
            _, den, num = merge_softmax_states(run_m, run_z, run_s, p, torch.ones_like(p), mem)
        else:
            num, den = run_s, run_z
        experts = (num / den.clamp_min(1e-30).unsqueeze(-1)).to(x.dtype)  # (B, H, n, k, d)
        expert_ok = den > 0  # (B, H, n, k)
        experts = experts.permute(0, 2, 3, 1, 4).reshape(b, n, self.k, dim)
        ek, ev = (self._split(t) for t in self.expert_kv(experts).chunk(2, dim=-1))

        # 2. read back: one softmax over the chunk's experts and the causal items of the chunk
        local = (q @ key.transpose(-2, -1)) * scale  # (B, H, n, C, C)
        causal = torch.ones(c, c, dtype=torch.bool, device=x.device).tril()
        local_ok = causal & vmask.unsqueeze(-2)
        # padding rows keep their own key so the softmax stays finite (outputs are masked later)
        local_ok = local_ok | torch.eye(c, dtype=torch.bool, device=x.device)
        local = local.masked_fill(~local_ok, float("-inf"))
        glob = (q @ ek.transpose(-2, -1)) * scale  # (B, H, n, C, k)
        glob = glob.masked_fill(~expert_ok.unsqueeze(-2), float("-inf"))
        att = torch.cat([glob, local], -1).softmax(-1)
        att = self.attn_dropout(att)
        y = att[..., : self.k] @ ev + att[..., self.k :] @ val  # (B, H, n, C, d)
        y = y.permute(0, 2, 3, 1, 4).reshape(b, n * c, dim)[:, :seq]
        return self.out(y)


class Elastic(SASRec, PaddingInvariant):
    """ELASTIC over an item vocabulary 1..V (index 0 is padding); SASRec's interface
    (``loss(NextItemBatch)``, an :class:`~reelrec.models.base.EmbeddingScorer`).

    Declares :class:`~reelrec.models.base.PaddingInvariant`: outputs do not depend on left
    padding (each row is rotated to its first item), so evaluation may batch histories by
    length and drop padding columns.

    Args:
        num_items: V.
        cfg: hyper-parameters.

    Raises:
        ValueError: invalid sizes (see :class:`SASRec` and :func:`check_elastic_config`).
    """

    cfg: ElasticConfig

    def __init__(self, num_items: int, cfg: ElasticConfig) -> None:
        check_elastic_config(cfg)
        super().__init__(num_items, cfg)

    def _attention(self, cfg: SASRecConfig) -> nn.Module:
        assert isinstance(cfg, ElasticConfig)
        return DispatcherAttention(cfg)

    def _attention_mask(self, valid: torch.Tensor) -> torch.Tensor:
        return valid  # the dispatcher builds its own chunked masks

    def forward(self, items: torch.Tensor) -> SASRecOutput:
        """Encode left-padded item sequences (see :meth:`SASRec.forward`).

        Each row is rotated so its first real item is at position 0, encoded, and rotated back:
        chunks start at the user's first item whatever the padding.

        Raises:
            ValueError: L > max_len, ids outside 0..V, or padding after a real item.
        """
        seq = items.shape[1]
        if items.numel() and (int(items.min()) < 0 or int(items.max()) > self.num_items):
            raise ValueError(f"item ids must be in 0..{self.num_items}")
        valid = items > 0
        lengths = valid.sum(1, keepdim=True)
        ar = torch.arange(seq, device=items.device).unsqueeze(0)
        if bool((valid != (ar >= seq - lengths)).any()):
            raise ValueError("ELASTIC expects left-padded sequences (padding only before items)")
        offset = seq - lengths
        packed = items.gather(1, (ar + offset) % max(seq, 1))
        hidden = super().forward(packed).hidden
        back = ((ar - offset) % max(seq, 1)).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return SASRecOutput(hidden.gather(1, back))
