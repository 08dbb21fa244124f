"""Recover item titles for the S3-Rec Amazon splits by matching them to the SeqRec Benchmark copy.

The S3-Rec release of Amazon 2014 Beauty / Toys_and_Games (``<Name>.txt``: 1-based item ids in
order of first appearance, no timestamps, no text) and the SeqRec Benchmark processing of the
same 5-core reviews (``amazon2014-*-seqrec``: item ids from 100 with a title each, items with an
empty title dropped and the data re-5-cored, which also drops some users) describe the same
users and items under unrelated id schemes.  :func:`map_s3rec_to_seqrec` recovers the item
correspondence from the interaction structure alone: no titles, no timestamps, no assumption on
the order of user or item ids (the result is invariant to relabelling users on either side).

1. **Seeds.**  Users with identical sequences are collapsed.  An item's signature is the
   sorted lengths of the sequences containing it; items whose signature is unique on both
   sides and equal across sides are paired (9,623 of 12,101 items on Beauty, 1 wrong; 4,661 of
   11,924 on Toys, 28 wrong: only items near a dropped item or user are perturbed, and wrong
   pairs are pruned in step 5).  Likewise users whose (sorted degrees of their items)
   signature is unique on both sides are paired; these seed pairs only feed step 3, so the
   voting still starts when a popular dropped item perturbs most item signatures.
2. **User matching.**  S3-Rec user ``u`` and SeqRec user ``v`` are matched when each is the
   other's strict best candidate, scored by (mapped items shared, -mapped items not shared);
   the match must share >= 2 mapped items (or be complete: one item, same length, nothing
   unshared) and cover >= 80 % of the mapped items on both sides.
3. **Item voting.**  Within matched pairs every still-unmapped S3-Rec item votes for every
   still-unmapped SeqRec item; ``i -> j`` is accepted when each is the other's strict best, the
   vote holds in a majority of the matched pairs containing either, and it is backed by two
   votes or by a pair with exactly one unmapped item per side.
4. **Positional fallback.**  Items with identical user sets ("twins") cannot be separated by
   sets.  When set voting stalls, matched pairs whose mapped items appear in the same order and
   that have as many unmapped items per side vote k-th unmapped for k-th unmapped (same
   acceptance rule, one vote suffices).  This assumes both inputs order same-time interactions
   alike; ``use_positions=False`` switches it off.
5. Steps 2-4 repeat until nothing is added.  Then mappings contradicted by at least half the
   matched users containing them, or by one user whose other mapped items all agree, are
   removed and banned, and the loop resumes.

Verification: users are matched afresh under the final map (users with the same mapped item
set are grouped and paired in sequence order), then

* ``n_users_exact`` counts matched users whose S3-Rec sequence, mapped and with unmapped items
  removed, equals the SeqRec sequence item for item, order included;
* ``n_conflicts`` counts mapped S3-Rec items contradicted by a matched user (the item is in the
  S3-Rec sequence, its image is not in the partner's) plus SeqRec ids hit twice.

Figures measured on the real files (S3-Rec ``Beauty.txt`` / ``Toys_and_Games.txt`` against
``amazon2014-beauty-seqrec`` / ``amazon2014-toy-seqrec``; about 7 s each on one core):

* Beauty: 12,086 of 12,101 S3-Rec items mapped (99.88 %; every SeqRec item; 13 of them by the
  positional fallback), 22,332 users matched (every SeqRec user; S3-Rec has 22,363), 22,332
  exact (100 %), 0 conflicts.  With ``use_positions=False``: 12,073 items (same images),
  22,328 matched, 22,281 exact (the other 47 all hold an unmapped twin), 0 conflicts.  19,503
  of those exact users have same-day interactions, so both files order ties alike (by ASIN),
  which is what the positional fallback relies on.
* Toys_and_Games: 11,758 of 11,924 S3-Rec items mapped (98.61 %; every SeqRec item; none by
  position), 19,124 users matched (every SeqRec user; S3-Rec has 19,412), 19,124 exact (100 %),
  0 conflicts; identical with ``use_positions=False``.

The unmapped S3-Rec items (15 Beauty, 166 Toys) are as many as SeqRec dropped.  Independent
check on Beauty: mapping S3-Rec to the TIGER copy (``amazon-beauty-tiger-sid/inter.json``,
0-based ids in ASIN order; its same-day order differs, so ``use_positions=False``) and
composing, TIGER id -> SeqRec id is strictly increasing over all 12,071 common items, as it
must be when both number items in ASIN order.  Title spot checks against
``item2attributes.json`` are in ``docs/amazon-title-mapping.md``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["MappingResult", "map_s3rec_to_seqrec"]

_MIN_SHARED = 2  # a user match needs at least this many shared mapped items
_MIN_COVER = 0.8  # ... covering at least this share of the user's mapped items on each side


@dataclass(frozen=True)
class MappingResult:
    """Outcome of :func:`map_s3rec_to_seqrec`.

    Attributes:
        item_map: S3-Rec item id -> SeqRec item id (``dict[int, int]``), injective.
        n_users_matched: number of S3-Rec users paired one-to-one with a SeqRec user (``int``).
        n_users_exact: matched users whose mapped S3-Rec sequence (unmapped items removed)
            equals the SeqRec sequence item for item, order included (``int``).
        n_conflicts: mapped S3-Rec items contradicted by a matched user, plus SeqRec ids that
            more than one S3-Rec id maps to (``int``; 0 for a consistent map).
        n_items_mapped: ``len(item_map)`` (``int``).
        n_items_by_position: how many of the mapped items were placed by the positional
            fallback (items sharing their exact user set with another item; ``int``).
    """

    item_map: dict[int, int]
    n_users_matched: int
    n_users_exact: int
    n_conflicts: int
    n_items_mapped: int
    n_items_by_position: int = 0


def _normalise(name: str, sequences: Mapping[int, Sequence[int]]) -> dict[int, list[int]]:
    if not isinstance(sequences, Mapping):
        raise TypeError(f"{name} must be a mapping user id -> item ids, got {type(sequences)!r}")
    if not sequences:
        raise ValueError(f"{name} is empty")
    out: dict[int, list[int]] = {}
    for user in sorted(sequences):
        items = [int(i) for i in sequences[user]]
        if not items:
            raise ValueError(f"{name}: user {user!r} has an empty sequence")
        out[int(user)] = items
    return out


def _users_of(seqs: dict[int, list[int]]) -> dict[int, list[int]]:
    users: dict[int, list[int]] = defaultdict(list)
    for user, items in seqs.items():
        for item in dict.fromkeys(items):
            users[item].append(user)
    return dict(users)


def _anchors(
    a: dict[int, list[int]],
    b: dict[int, list[int]],
    a_users: dict[int, list[int]],
    b_users: dict[int, list[int]],
) -> dict[int, int]:
    """Pair items whose (degree, sorted neighbour lengths) signature is unique on both sides."""

    def unique_sigs(seqs: dict[int, list[int]], users_of: dict[int, list[int]]) -> dict:
        sigs = {i: tuple(sorted(len(seqs[u]) for u in us)) for i, us in users_of.items()}
        counts = Counter(sigs.values())
        return {s: i for i, s in sigs.items() if counts[s] == 1}

    ua = unique_sigs(a, a_users)
    ub = unique_sigs(b, b_users)
    return {ua[s]: ub[s] for s in sorted(ua.keys() & ub.keys())}


def _seed_users(
    a: dict[int, list[int]],
    b: dict[int, list[int]],
    a_users: dict[int, list[int]],
    b_users: dict[int, list[int]],
) -> dict[int, int]:
    """Pair users whose (length, sorted item degrees) signature is unique on both sides.

    Perturbed only for users holding a dropped item or an item that lost users, so it still
    seeds the voting when dropping a popular item perturbs most item signatures.
    """

    def unique_sigs(seqs: dict[int, list[int]], users_of: dict[int, list[int]]) -> dict:
        sigs = {
            u: tuple(sorted(len(users_of[i]) for i in dict.fromkeys(s))) for u, s in seqs.items()
        }
        counts = Counter(sigs.values())
        return {s: u for u, s in sigs.items() if counts[s] == 1}

    ua = unique_sigs(a, a_users)
    ub = unique_sigs(b, b_users)
    return {ua[s]: ub[s] for s in sorted(ua.keys() & ub.keys())}


def _best_partners(
    src: dict[int, list[int]],
    dst_sets: dict[int, set[int]],
    dst_users: dict[int, list[int]],
    fmap: Mapping[int, int],
) -> dict[int, int]:
    """For each ``src`` user, its unambiguous best ``dst`` user under ``fmap``.

    A candidate's key is (mapped items shared, -mapped items of the candidate not shared), so a
    user whose items are a subset of a longer user's still finds its own partner.  The best must
    beat the runner-up strictly, share at least ``_MIN_SHARED`` items and cover ``_MIN_COVER``
    of the mapped items on both sides.  Candidates are the users of the rarest mapped item (a
    true partner holds every mapped item), or failing that of the two rarest (tolerates one
    wrong anchor).
    """
    image = set(fmap.values())
    n_img = {v: len(s & image) for v, s in dst_sets.items()}
    deg = {j: len(us) for j, us in dst_users.items()}

    def pick(n_items: int, mapped: set[int], cands: Iterable[int]) -> int | None:
        best = second = (-1, 0)
        best_v = -1
        for v in cands:
            shared = len(mapped & dst_sets[v])
            key = (shared, shared - n_img[v])
            if key > best:
                best, second, best_v = key, best, v
            elif key > second:
                second = key
        shared = best[0]
        if best <= second:
            return None
        # One shared item suffices only for a complete match: same length, nothing unshared.
        complete = shared == len(mapped) == n_img[best_v] and n_items == len(dst_sets[best_v])
        if (
            (shared >= _MIN_SHARED or complete)
            and shared >= _MIN_COVER * len(mapped)
            and shared >= _MIN_COVER * n_img[best_v]
        ):
            return best_v
        return None

    out: dict[int, int] = {}
    for user, items in src.items():
        mapped = {fmap[i] for i in items if i in fmap}
        if not mapped:
            continue
        rare = sorted(mapped, key=lambda j: (deg.get(j, 0), j))[:2]
        found = pick(len(set(items)), mapped, dst_users.get(rare[0], ()))
        if found is None and len(rare) == 2:
            cands = sorted(set(dst_users.get(rare[0], ())) | set(dst_users.get(rare[1], ())))
            found = pick(len(set(items)), mapped, cands)
        if found is not None:
            out[user] = found
    return out


def _match_users(
    a: dict[int, list[int]],
    b: dict[int, list[int]],
    a_sets: dict[int, set[int]],
    b_sets: dict[int, set[int]],
    a_users: dict[int, list[int]],
    b_users: dict[int, list[int]],
    fmap: dict[int, int],
    inv: dict[int, int],
) -> dict[int, int]:
    fwd = _best_partners(a, b_sets, b_users, fmap)
    bwd = _best_partners(b, a_sets, a_users, inv)
    return {u: v for u, v in fwd.items() if bwd.get(v) == u}


def _strict_best(counter: Counter) -> tuple[int, int] | None:
    """(key, count) of the strict maximum of ``counter``, or None on a tie or when empty."""
    top = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:2]
    if not top or (len(top) == 2 and top[1][1] == top[0][1]):
        return None
    return top[0]


def _vote_items(
    a: dict[int, list[int]],
    b: dict[int, list[int]],
    pairs: dict[int, int],
    fmap: dict[int, int],
    inv: dict[int, int],
    banned: set[tuple[int, int]],
    *,
    by_position: bool,
) -> dict[int, int]:
    """New item pairs voted by the unmapped items of matched users.

    ``by_position=False``: every unmapped item of ``u`` votes for every unmapped item of ``v``.
    ``by_position=True`` (fallback for items with identical user sets, which no set-based
    evidence can separate): only pairs whose mapped items appear in the same order and that have
    as many unmapped items on each side vote, the k-th unmapped item for the k-th.
    """
    votes_a: dict[int, Counter] = defaultdict(Counter)
    votes_b: dict[int, Counter] = defaultdict(Counter)
    single: set[tuple[int, int]] = set()
    n_pairs_a: Counter = Counter()
    n_pairs_b: Counter = Counter()
    for u, v in pairs.items():
        left_a = [i for i in dict.fromkeys(a[u]) if i not in fmap]
        left_b = [j for j in dict.fromkeys(b[v]) if j not in inv]
        n_pairs_a.update(left_a)
        n_pairs_b.update(left_b)
        if not left_a or not left_b:
            continue
        if len(left_a) == 1 and len(left_b) == 1:
            single.add((left_a[0], left_b[0]))
        if by_position:
            if len(left_a) != len(left_b):
                continue
            if [fmap[i] for i in a[u] if i in fmap] != [j for j in b[v] if j in inv]:
                continue
            for i, j in zip(left_a, left_b, strict=False):
                votes_a[i][j] += 1
                votes_b[j][i] += 1
        else:
            for i in left_a:
                votes_a[i].update(left_b)
            for j in left_b:
                votes_b[j].update(left_a)
    new: dict[int, int] = {}
    for i in sorted(votes_a):
        best = _strict_best(votes_a[i])
        if best is None:
            continue
        j, count = best
        if (i, j) in banned:
            continue
        back = _strict_best(votes_b[j])
        if back is None or back[0] != i:
            continue
        if 2 * count <= n_pairs_a[i] or 2 * count <= n_pairs_b[j]:
            continue
        if count >= 2 or by_position or (i, j) in single:
            new[i] = j
    return new


def _contradicted(
    a: dict[int, list[int]],
    b_sets: dict[int, set[int]],
    pairs: dict[int, int],
    fmap: Mapping[int, int],
) -> tuple[Counter, Counter, Counter]:
    """Per mapped S3-Rec item, over matched users containing it: (users, contradicting users,
    contradicting users where it is the only contradicted item).

    A user contradicts ``i`` when ``i`` is in its S3-Rec sequence and ``fmap[i]`` is not in its
    partner's SeqRec sequence.
    """
    seen: Counter = Counter()
    bad: Counter = Counter()
    lone: Counter = Counter()
    for u, v in pairs.items():
        mapped = [i for i in dict.fromkeys(a[u]) if i in fmap]
        seen.update(mapped)
        wrong = [i for i in mapped if fmap[i] not in b_sets[v]]
        bad.update(wrong)
        if len(wrong) == 1:
            lone[wrong[0]] += 1
    return seen, bad, lone


def _dedupe(
    seqs: dict[int, list[int]], fmap: Mapping[int, int] | None = None
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Collapse duplicate users: (representative sequences, rep -> members).

    Without ``fmap`` only identical sequences collapse (order included, so the representative's
    sequence speaks for every member).  With ``fmap`` users are keyed by the set of images of
    their mapped items (users differing only in order or in unmapped items collapse; users
    with no mapped item are left out).
    """
    groups: dict[object, list[int]] = defaultdict(list)
    for user in seqs:  # already sorted, so the representative is the smallest id
        if fmap is None:
            key: object = tuple(seqs[user])
        else:
            key = frozenset(fmap[i] for i in seqs[user] if i in fmap)
            if not key:
                continue
        groups[key].append(user)
    members = {g[0]: g for g in groups.values()}
    return {rep: seqs[rep] for rep in sorted(members)}, members


def _expand_pairs(
    a: dict[int, list[int]],
    b: dict[int, list[int]],
    pairs: dict[int, int],
    a_members: dict[int, list[int]],
    b_members: dict[int, list[int]],
    fmap: Mapping[int, int],
) -> list[tuple[int, int]]:
    """Pair the members of matched duplicate groups, ordered by (mapped) sequence then id."""
    out: list[tuple[int, int]] = []
    for ra, rb in sorted(pairs.items()):
        ma = sorted(a_members[ra], key=lambda u: ([fmap.get(i, -1) for i in a[u]], u))
        mb = sorted(b_members[rb], key=lambda v: (b[v], v))
        out.extend(zip(ma, mb, strict=False))
    return out


def map_s3rec_to_seqrec(
    s3rec_sequences: Mapping[int, Sequence[int]],
    seqrec_sequences: Mapping[int, Sequence[int]],
    *,
    max_rounds: int = 50,
    use_positions: bool = True,
) -> MappingResult:
    """Recover the S3-Rec -> SeqRec item id map from two processings of the same interactions.

    Pure and deterministic (users and items are visited in sorted order; the result does not
    depend on dict insertion order).  The method and the figures measured on the real Amazon
    Beauty and Toys splits are in the module docstring.

    Args:
        s3rec_sequences: ``{user_id: [item_id, ...]}`` (``Mapping[int, Sequence[int]]``), items
            in time order, as in S3-Rec's ``<Name>.txt``.
        seqrec_sequences: ``{user_id: [item_id, ...]}`` (``Mapping[int, Sequence[int]]``) from
            the SeqRec Benchmark copy (``interactions.csv.gz`` ordered by ``Position``).  User
            ids of the two inputs need not correspond.
        max_rounds: cap on user-matching / item-voting rounds (``int``, >= 1).
        use_positions: allow the positional fallback for items that set-based evidence cannot
            separate (``bool``).  It assumes both inputs order same-time interactions alike,
            which ``n_users_exact`` then checks.

    Returns:
        MappingResult: the item map and its verification counts.

    Raises:
        TypeError: an input is not a mapping.
        ValueError: an input is empty, a user has an empty sequence, or ``max_rounds < 1``.
    """
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
    a_all = _normalise("s3rec_sequences", s3rec_sequences)
    b_all = _normalise("seqrec_sequences", seqrec_sequences)
    a, a_members = _dedupe(a_all)
    b, b_members = _dedupe(b_all)
    a_sets = {u: set(s) for u, s in a.items()}
    b_sets = {v: set(s) for v, s in b.items()}
    a_users = _users_of(a)
    b_users = _users_of(b)

    fmap = _anchors(a, b, a_users, b_users)
    seeds = _seed_users(a, b, a_users, b_users)
    by_pos: set[int] = set()
    banned: set[tuple[int, int]] = set()
    for _ in range(max_rounds):
        inv = {j: i for i, j in fmap.items()}
        pairs = _match_users(a, b, a_sets, b_sets, a_users, b_users, fmap, inv)
        taken = set(pairs.values())
        for u, v in seeds.items():
            if u not in pairs and v not in taken:
                pairs[u] = v
        new = _vote_items(a, b, pairs, fmap, inv, banned, by_position=False)
        if not new and use_positions:
            new = _vote_items(a, b, pairs, fmap, inv, banned, by_position=True)
            by_pos.update(new)
        if new:
            fmap.update(new)
            continue
        # Converged: drop mappings contradicted by at least half the matched users containing
        # them, or by one user whose other items all agree (wrong anchors); ban those pairs
        # for good and retry.
        seen, bad, lone = _contradicted(a, b_sets, pairs, fmap)
        wrong = [i for i in sorted(bad) if 2 * bad[i] >= seen[i] or lone[i]]
        if not wrong:
            break
        for i in wrong:
            banned.add((i, fmap.pop(i)))

    # Final verification: match users afresh under the final map, collapsing users whose mapped
    # items coincide (a user that lost only a dropped item joins its twin's group).
    inv = {j: i for i, j in fmap.items()}
    a, a_members = _dedupe(a_all, fmap)
    b, b_members = _dedupe(b_all, {j: j for j in inv})
    a_sets = {u: set(s) for u, s in a.items()}
    b_sets = {v: set(s) for v, s in b.items()}
    pairs = _match_users(a, b, a_sets, b_sets, _users_of(a), _users_of(b), fmap, inv)
    full_pairs = _expand_pairs(a_all, b_all, pairs, a_members, b_members, fmap)
    b_all_sets = {v: set(s) for v, s in b_all.items()}
    _, bad, _ = _contradicted(a_all, b_all_sets, dict(full_pairs), fmap)
    n_exact = sum(1 for u, v in full_pairs if [fmap[i] for i in a_all[u] if i in fmap] == b_all[v])
    return MappingResult(
        item_map=dict(sorted(fmap.items())),
        n_users_matched=len(full_pairs),
        n_users_exact=n_exact,
        n_conflicts=len(bad) + (len(fmap) - len(inv)),
        n_items_mapped=len(fmap),
        n_items_by_position=len(by_pos & fmap.keys()),
    )
