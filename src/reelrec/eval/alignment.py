"""Offline evaluation of preference alignment: one request per user and day, scored by the
reward model and by what the user really did that day.

Source: OneRec (arXiv 2502.18965) Table 1 and the OneRec Technical Report (arXiv 2506.13695)
section 4.3 report the reward model's mean and max score over the generated items; a reward
model can be fooled, so the held-out feedback is reported beside it.

Protocol (DESIGN.md's KuaiRand temporal split): for every user with a row on the evaluated day
(validation 04-17 or test 04-18) one request at the time of the user's first row that day,
with the hour of that row. The history is the user's positive rows strictly earlier (earlier
days only, since the request opens the day), newest ``max_len``, videos outside the
generator's vocabulary dropped. The generator's top k (trie-constrained beam search, beam =
max(k, onerec.beam)) is compared with the videos of the user's positive rows that day (the
protocol's positive label: ``like`` on kuairand, ``click`` on kuairand-pure; called "liked"
below) and hated ones (kuairand: ``like`` = 0, the slice's explicit dislike; kuairand-pure:
``hate`` = 1):

* ``pscore_mean@k`` / ``pscore_max@k``: the reward model's P-Score of the k generated videos
  for that user at that time, mean and max over the list, averaged over users;
* ``recall@k`` / ``ndcg@k``: of the day's liked videos (RecBole recall, binary NDCG; users
  without a liked video that day are left out; liked videos outside the vocabulary count as
  relevant and can never be hit: nothing is filtered);
* ``hate_share@k``: hated videos of that day among the k slots, ``hits / k``, averaged over
  all requests;
* ``<label>_hit_rate@k`` / ``<label>_day_hits`` for each of ``click``, ``long_view`` and ``like``
  the log has: the share of the users with at least one such video that day who find one of them
  in their k slots, and the number of such videos in all slots;
* ``legal_rate``: the share of the top k of an *unconstrained* beam search (no trie) that are
  the semantic ID of a real video (OneRec Technical Report section 2.4.2).

This is a per-user next-day protocol, so its recall@10 is not the per-instance next-item
recall@10 of ``reelrec evaluate`` (which both are reported for aligned models).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from reelrec.data.sequences import ItemVocab, _left_pad
from reelrec.eval.metrics import hits_at_k, ndcg_at_k, recall_at_k
from reelrec.models.generative import generate

#: labels whose day hit rates are reported when the log has them
TARGET_LABELS = ("click", "long_view", "like")


@dataclass
class DayRequests:
    """One request per user on one day.

    Attributes:
        users, times, hours: int64 (U,) raw user id, request time (ms) and hour of day.
        history: int64 (U, L) left-padded item indices of the generator's vocabulary.
        liked, hated: per user, the raw video ids liked / hated that day.
        targets: label -> per user, the raw video ids with that label = 1 that day (``click``,
            ``long_view``, ``like`` where the log has them).
    """

    users: np.ndarray
    times: np.ndarray
    hours: np.ndarray
    history: torch.Tensor
    liked: list[np.ndarray]
    hated: list[np.ndarray]
    targets: dict[str, list[np.ndarray]]

    def __len__(self) -> int:
        return len(self.users)


def hated_mask(inter: pd.DataFrame) -> np.ndarray:
    """Rows with an explicit dislike, bool (n,): ``hate`` = 1 where the log has the column
    (KuaiRand-Pure), else ``like`` = 0 (the KuaiRand like/hate slice, whose label 0 is a hate).

    Raises:
        KeyError: the table has neither ``hate`` nor ``like``.
    """
    if "hate" in inter.columns:
        return inter["hate"].to_numpy() == 1
    return inter["like"].to_numpy() == 0


def day_requests(
    inter: pd.DataFrame, positive: np.ndarray, vocab: ItemVocab, split: int, max_len: int
) -> DayRequests:
    """The requests of split ``split`` (1 valid, 2 test); see the module docstring.

    Args:
        inter: prepared interactions (sorted by user, time; ``split``, ``timestamp_ms``,
            ``hourmin``, ``like``; ``hate`` where the log has explicit dislikes). positive: bool
            (n,) the protocol's positive rows.
        vocab: the generator's vocabulary. max_len: history length.

    Raises:
        ValueError: no row in the split.
    """
    inter = inter.reset_index(drop=True)
    sp = inter["split"].to_numpy()
    day = np.flatnonzero(sp == split)
    if len(day) == 0:
        raise ValueError(f"no rows in split {split}")
    uid = inter["user_id"].to_numpy(dtype=np.int64)
    time = inter["timestamp_ms"].to_numpy(dtype=np.int64)
    item = inter["item_id"].to_numpy(dtype=np.int64)
    hate = hated_mask(inter)
    labels = {c: inter[c].to_numpy() == 1 for c in TARGET_LABELS if c in inter.columns}
    targets: dict[str, list[np.ndarray]] = {c: [] for c in labels}
    users, first = np.unique(uid[day], return_index=True)
    first_rows = day[first]  # rows are sorted by (user, time): the first row of each user
    pos_rows = np.flatnonzero(positive)
    hists, liked, hated = [], [], []
    for u, r in zip(users, first_rows, strict=True):
        mine = pos_rows[(uid[pos_rows] == u) & (time[pos_rows] < time[r])]
        h = vocab.encode(item[mine])
        hists.append(h[h > 0][-max_len:])
        today = day[uid[day] == u]
        liked.append(np.unique(item[today][positive[today]]))
        hated.append(np.unique(item[today][hate[today]]))
        for c, lab in labels.items():
            targets[c].append(np.unique(item[today][lab[today]]))
    return DayRequests(
        users,
        time[first_rows],
        inter["hourmin"].to_numpy(dtype=np.int64)[first_rows] // 100,
        torch.from_numpy(_left_pad(hists, max_len)),
        liked,
        hated,
        targets,
    )


def day_hit_rates(
    top: np.ndarray, targets: dict[str, list[np.ndarray]], k: int
) -> dict[str, float]:
    """Per label, how the top k lists hold that day's videos with the label.

    Args:
        top: int64 (U, >= k) raw video ids per request, best first (-1 = no item).
        targets: label -> per request, the raw ids with that label that day.
        k: list length.

    Returns:
        ``{label}_hit_rate@k`` (share of the requests with at least one such video that find one
        in the top k; NaN when no request has one), ``{label}_day_hits`` (such videos in all
        top-k slots) and ``{label}_day_users`` (requests with at least one such video). The
        names never collide with ``like_hits`` (hits of the protocol's positives).
    """
    out: dict[str, float] = {}
    for label, videos in targets.items():
        hits = hits_at_k(top, [np.asarray(x, dtype=np.int64) for x in videos])[:, :k].sum(1)
        has = np.array([len(x) > 0 for x in videos], dtype=bool)
        out[f"{label}_hit_rate@{k}"] = float((hits[has] > 0).mean()) if has.any() else float("nan")
        out[f"{label}_day_hits"] = int(hits.sum())
        out[f"{label}_day_users"] = int(has.sum())
    return out


def alignment_metrics(
    model: torch.nn.Module,
    requests: DayRequests,
    reward,
    vocab: ItemVocab,
    k: int = 10,
    batch_size: int = 256,
) -> dict[str, float]:
    """Metrics of the module docstring for a generator on ``requests``.

    Args:
        model: a generator with ``trie``, ``cfg.beam`` and the Decodable interface (eval mode
            is set here and restored). reward: :class:`reelrec.training.preference.RewardFn`.
        vocab: the generator's vocabulary. k: list length.

    Returns:
        ``pscore_mean@k``, ``pscore_max@k``, ``recall@k``, ``ndcg@k``, ``hate_share@k``,
        ``legal_rate``, ``<label>_hit_rate@k`` per target label, and counts ``users``,
        ``users_with_likes``, ``like_hits``, ``hate_hits``, ``<label>_day_hits``,
        ``<label>_day_users``.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    if model.trie.children[0].device != device:
        model.trie.to(device)
    beam = max(k, model.cfg.beam)
    tops, legal, scores = [], [], []
    with torch.no_grad():
        for s in range(0, len(requests), batch_size):
            h = requests.history[s : s + batch_size].to(device)
            top = generate(model, h, model.trie, beam).items[:, :k]
            free = generate(model, h, model.trie, k, constrained=False)
            sl = slice(s, s + len(h))
            scores.append(
                reward(top, requests.users[sl], requests.times[sl], requests.hours[sl]).numpy()
            )
            tops.append(vocab.decode(top.cpu().numpy()))
            legal.append(free.legal.cpu().numpy())
    model.train(was_training)
    top = np.concatenate(tops)  # raw ids, -1 = none
    ps = np.concatenate(scores)
    liked = [x.astype(np.int64) for x in requests.liked]
    hated = [x.astype(np.int64) for x in requests.hated]
    rec = recall_at_k(top, liked, k)
    ndcg = ndcg_at_k(top, liked, k)
    like_hits = hits_at_k(top, liked)[:, :k].sum(1)
    hate_hits = hits_at_k(top, hated)[:, :k].sum(1)
    has_like = ~np.isnan(rec)
    per_label = day_hit_rates(top, requests.targets, k)
    with np.errstate(invalid="ignore"):
        return {
            **per_label,
            f"pscore_mean@{k}": float(np.nanmean(np.nanmean(ps, 1))),
            f"pscore_max@{k}": float(np.nanmean(np.nanmax(ps, 1))),
            f"recall@{k}": float(rec[has_like].mean()) if has_like.any() else float("nan"),
            f"ndcg@{k}": float(ndcg[has_like].mean()) if has_like.any() else float("nan"),
            f"hate_share@{k}": float((hate_hits / k).mean()),
            "legal_rate": float(np.concatenate(legal).mean()),
            "users": int(len(top)),
            "users_with_likes": int(has_like.sum()),
            "like_hits": int(like_hits.sum()),
            "hate_hits": int(hate_hits.sum()),
        }
