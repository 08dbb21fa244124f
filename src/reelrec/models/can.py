"""CAN: the Co-Action Network for ranking.

Weijie Bian, Kailun Wu, Lejian Ren, et al., "CAN: Feature Co-Action Network for Click-Through
Rate Prediction", WSDM 2022, arXiv 2011.05625. Implements section 3:

* **Co-action unit** (3.2, eq. 2-4): for a pair (induction feature A, feed feature B), A's
  co-action embedding ``P_A`` is reshaped into the weights and biases of a micro-MLP
  (layer i: ``W_i`` (d_{i-1}, d_i), ``b_i`` (d_i)), and B's co-action embedding ``P_B``
  (from a separate table of width d_0 = ``feed_dim``) is passed through it:
  ``h_i = act(h_{i-1} W_i + b_i)``, ``h_0 = P_B``. When B is the behaviour sequence, the unit
  is applied to every behaviour and the outputs are pooled over the unpadded positions.
* **Multi-order enhancement** (3.3, eq. 5): the unit is applied to ``P_B^c`` (element-wise
  power) for c = 1..C, approximating higher-order co-action.
* **Multi-level independence** (3.4): *parameter independence* (co-action embeddings are tables
  of their own, never the representation embeddings) always holds; *combination independence*
  (``pair_independent``: each pair has its own induction table; otherwise pairs with the same
  induction field share it) and *order independence* (``order_independent``: each order has its
  own micro-MLP weights, so ``P_A`` is C times wider; otherwise all orders share them) are
  options, for the paper's ablation.
* The pooled outputs of every layer and every order of every pair are concatenated and joined with the
  base network's representation before the MLP (Figure 2).

With one linear layer of width 1, no bias, order 1 and sum pooling, the unit is ``sum_j <P_B_j, P_A>``: the
inner product of FM (the special case of section 3.2; tested).

Deviations, and why:
    * The base network is reelrec's DIN (:mod:`reelrec.models.din`), not DIEN: the histories here
      are short and the ablations compare against DIN directly.
    * Multi-task: reelrec's multi-task structure (``ranking.multitask``: the shared bottom by
      default, MMoE or PLE) with one output per task (:mod:`reelrec.models.ctr`).
    * The unit's outputs are mean-pooled over the history by default (``pooling="mean"``); the
      paper sum-pools (``pooling="sum"``). On KuaiRand (30k training impressions, histories of
      0-50 videos) sum pooling makes the co-action features scale with the history length; its
      mean test AUC over 6 tasks was 0.652 +- 0.049 against 0.723 +- 0.006 with mean pooling
      (bench/ranking.py, variants can-sum-pooling and can-no-counters, 3 seeds).
    * Induction tables start as LeCun-normal micro-MLPs and feed embeddings with std
      ``feed_init_std`` (the paper does not say): with the usual small embedding init every
      generated layer starts near 0 and the powers 2..C of the feed vanish.
    * A pair's feed side may also be a single sparse field (a length-1 "sequence"), which is how
      the paper pairs the target item with user features.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from reelrec.config import ConfigError
from reelrec.data.ctr import CTRBatch
from reelrec.models.ctr import CTRSchema, RankingConfig
from reelrec.models.din import DIN, DINConfig


@dataclass
class CANConfig:
    """Co-action settings (section ``can``)."""

    orders: int = 3  # C: the unit sees P_B^1 .. P_B^C (>= 1)
    layers: list[int] = field(default_factory=lambda: [8, 4])  # micro-MLP widths d_1.. (>= 1)
    feed_dim: int = 16  # d_0: width of the feed-side co-action embedding (>= 1)
    pairs: list[str] = field(default_factory=list)  # "induction_field:feed", feed being a
    # sequence (hist_video) or a sparse field (user_id); [] = every sequence with the field it
    # is aligned with
    order_independent: bool = True  # separate micro-MLP weights per order
    pair_independent: bool = True  # separate induction tables per pair
    activation: str = "tanh"  # "tanh" (the paper) or "none" (linear units)
    pooling: str = "mean"  # pooling of the unit's outputs over the history: "sum" (the
    # paper) or "mean" (reelrec's default; see the deviations in the module docstring)
    feed_init_std: float = 0.5  # std of the feed-side co-action embeddings at initialisation
    # (> 0): their powers 2..C must not vanish
    bias: bool = True  # micro-MLP biases

    def validate(self, section: str = "can") -> None:
        """Check every value against its documented range (the pairs' fields are checked
        against the data when the model is built).

        Raises:
            ConfigError: naming the first invalid key.
        """
        import math

        rules = [
            (self.orders >= 1, "orders", ">= 1"),
            (len(self.layers) > 0 and min(self.layers) >= 1, "layers", "widths >= 1"),
            (self.feed_dim >= 1, "feed_dim", ">= 1"),
            (self.activation in ("tanh", "none"), "activation", "'tanh' or 'none'"),
            (self.pooling in ("sum", "mean"), "pooling", "'sum' or 'mean'"),
            (
                math.isfinite(self.feed_init_std) and self.feed_init_std > 0,
                "feed_init_std",
                "a finite number > 0",
            ),
            (all(p.count(":") == 1 for p in self.pairs), "pairs", "a list of 'field:feed'"),
        ]
        for ok, key, rule in rules:
            if not ok:
                raise ConfigError(f"{section}.{key} must be {rule}, got {getattr(self, key)!r}")


def resolve_pairs(schema: CTRSchema, cfg: CANConfig) -> list[tuple[int, str, int]]:
    """The pairs as (induction field index, feed kind "seq"/"field", feed index).

    Raises:
        ValueError: a malformed pair or an unknown field/sequence name (lists the known ones),
            or no pair at all.
    """
    specs = cfg.pairs or [
        f"{schema.fields[f]}:{s}" for s, f in zip(schema.sequences, schema.seq_target, strict=True)
    ]
    out = []
    for spec in specs:
        a, sep, b = spec.partition(":")
        if not sep or a not in schema.fields:
            raise ConfigError(
                f"can.pairs: {spec!r} must be 'induction_field:feed' with a field of "
                f"{list(schema.fields)}"
            )
        if b in schema.sequences:
            out.append((schema.fields.index(a), "seq", schema.sequences.index(b)))
        elif b in schema.fields:
            out.append((schema.fields.index(a), "field", schema.fields.index(b)))
        else:
            raise ConfigError(
                f"can.pairs: feed {b!r} of {spec!r} is neither a sequence {list(schema.sequences)} "
                f"nor a field {list(schema.fields)}"
            )
    if not out:
        raise ValueError(
            "CAN needs at least one co-action pair: the data has no sequence; set can.pairs"
        )
    return out


class CoActionUnit(nn.Module):
    """The micro-MLP whose weights come from the induction side (section 3.2-3.3).

    ``forward(p_a, p_b, mask)``: ``p_a`` (B, P) induction embedding, ``p_b`` (B, L, d_0) feed
    embeddings, ``mask`` (B, L) bool. Returns (B, C * sum(layers)): per order and layer, the
    masked sum over L of that layer's outputs.
    """

    def __init__(self, cfg: CANConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dims = [cfg.feed_dim, *cfg.layers]
        self.shapes = list(zip(dims[:-1], dims[1:], strict=True))
        self.per_order = sum(a * b + (b if cfg.bias else 0) for a, b in self.shapes)
        self.param_dim = self.per_order * (cfg.orders if cfg.order_independent else 1)
        self.out_dim = cfg.orders * sum(cfg.layers)

    @torch.no_grad()
    def init_induction(self, weight: torch.Tensor) -> None:
        """Initialise an induction table (V, param_dim) so that every generated micro-MLP starts
        as a LeCun-normal network: weights N(0, 1/d_in), biases 0. Small uniform initial values
        (as for ordinary embeddings) would make every generated layer nearly 0, and the
        co-action a product of two near-zero factors that gradients barely move."""
        orders = self.cfg.orders if self.cfg.order_independent else 1
        for o in range(orders):
            at = o * self.per_order
            for d_in, d_out in self.shapes:
                weight[:, at : at + d_in * d_out].normal_(0.0, d_in**-0.5)
                at += d_in * d_out
                if self.cfg.bias:
                    weight[:, at : at + d_out].zero_()
                    at += d_out

    def forward(self, p_a: torch.Tensor, p_b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        cfg, m = self.cfg, mask.unsqueeze(-1).to(p_b.dtype)
        if cfg.pooling == "mean":  # masked sum divided by the number of real positions
            m = m / m.sum(1, keepdim=True).clamp_min(1.0)
        outs = []
        for c in range(1, cfg.orders + 1):
            w = (
                p_a[:, (c - 1) * self.per_order : c * self.per_order]
                if cfg.order_independent
                else p_a
            )
            h, at = p_b.pow(c), 0
            for d_in, d_out in self.shapes:
                weight = w[:, at : at + d_in * d_out].view(-1, d_in, d_out)
                at += d_in * d_out
                h = torch.bmm(h, weight)
                if cfg.bias:
                    h = h + w[:, at : at + d_out].unsqueeze(1)
                    at += d_out
                if cfg.activation == "tanh":
                    h = torch.tanh(h)
                outs.append((h * m).sum(1))
        return torch.cat(outs, 1)


class CAN(DIN):
    """DIN plus co-action units; see the module docstring.

    Input: :class:`reelrec.data.ctr.CTRBatch`. Representation: DIN's (B, (F + Bf + S) * D) and
    the co-action outputs (B, pairs * C * sum(layers)).

    Raises:
        ValueError: invalid pairs (see :func:`resolve_pairs`).
    """

    def __init__(
        self, schema: CTRSchema, cfg: RankingConfig, din: DINConfig, can: CANConfig
    ) -> None:
        super().__init__(schema, cfg, din)
        self.pairs = resolve_pairs(schema, can)
        self.unit = CoActionUnit(can)
        # parameter independence: co-action tables are separate from the representation tables
        induction: dict[str, nn.Embedding] = {}
        self.induction_key = []
        for i, (a, _kind, _b) in enumerate(self.pairs):
            key = f"pair{i}" if can.pair_independent else f"field{a}"
            if key not in induction:
                induction[key] = nn.Embedding(schema.vocab[a], self.unit.param_dim, padding_idx=0)
            self.induction_key.append(key)
        self.induction = nn.ModuleDict(induction)
        feeds = {}
        for _, kind, b in self.pairs:
            vocab = schema.vocab[schema.seq_target[b]] if kind == "seq" else schema.vocab[b]
            feeds.setdefault(f"{kind}{b}", nn.Embedding(vocab, can.feed_dim, padding_idx=0))
        self.feed = nn.ModuleDict(feeds)
        for emb in self.induction.values():
            self.unit.init_induction(emb.weight)
        for emb in self.feed.values():
            nn.init.normal_(emb.weight, std=can.feed_init_std)
        for emb in [*self.induction.values(), *self.feed.values()]:
            emb.weight.data[0] = 0.0  # padding
        self.build_heads(self.din_dim + len(self.pairs) * self.unit.out_dim)

    def coaction(self, batch: CTRBatch) -> torch.Tensor:
        """Co-action outputs of every pair, concatenated: (B, pairs * C * sum(layers))."""
        outs = []
        for (a, kind, b), key in zip(self.pairs, self.induction_key, strict=True):
            p_a = self.induction[key](batch.sparse[:, a])
            ids = batch.history[:, b] if kind == "seq" else batch.sparse[:, b : b + 1]
            outs.append(self.unit(p_a, self.feed[f"{kind}{b}"](ids), ids > 0))
        return torch.cat(outs, 1)

    def represent(self, batch: CTRBatch) -> torch.Tensor:
        """DIN's representation joined with the co-action outputs."""
        return torch.cat([self.din_representation(batch), self.coaction(batch)], 1)
