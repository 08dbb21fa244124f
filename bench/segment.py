"""Video-skip prediction on the SegMM sample (SegMM model vs baselines) and segment-interest
features in a CAN ranker.

Usage: python bench/segment.py [--seeds 2024 1 2] [--threads 1]

Data: the public SegMM sample (37 users, 10,000 views; $REELREC_DATA_DIR/segmm-sample), each
user's views split by time 80/10/10. Skip metrics (HR@1/5/10, NDCG@5/10) are over the test views
that have a skip segment (648); ties count as the expectation over random order
(reelrec.eval.segments). Models: the position prior (most frequent skip segment for the video's
length), the duration-and-position model, the MLP on (length, position, user history
statistics), the SegMM model with the paper's pairwise loss and, as ablations, with a softmax
over segments and with pairs against the watched segments only. Trained models run with each
seed (early stopping on validation NDCG@5, patience 5); cells are means over seeds.

Downstream (the paper's recommendation task with a CAN backbone): CAN predicts whether a view
is played to the end, from the user, video, length and earlier views, with and without the two
segment-interest features (expected watched fraction and the probability of leaving in the
first segment, bucketed) of a SegMM model. Training views get out-of-fold features (two folds,
each scored by a model trained on the other), so no view's own skip leaks into its features.

Writes ``bench/results/segment.json`` (``{"<model or baseline>": {"hr@1", "hr@5", "ndcg@5",
"hr@10", "ndcg@10", ...}}``, with the paper's row) and ``bench/results/segment_downstream.json``
(CAN's test AUC / GAUC / LogLoss on "played to the end" with and without the features, per seed,
and the AUC change). Real data only.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from reelrec.data.ctr import CTRTrainSet
from reelrec.data.segments import SegmentData, SegmentTrainSet, build_segments, segment_ctr
from reelrec.data.sources import load
from reelrec.eval.ctr import evaluate_ctr
from reelrec.eval.segments import evaluate_segments
from reelrec.io import atomic_write_json
from reelrec.models.can import CAN, CANConfig
from reelrec.models.ctr import CTRSchema, RankingConfig
from reelrec.models.din import DINConfig
from reelrec.models.segment_interest import (
    DurationPosition,
    PositionPrior,
    SegmentConfig,
    SegmentInterest,
    SegmentMLP,
    interest_features,
)
from reelrec.training.loop import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "segment.json"
DOWNSTREAM = ROOT / "bench" / "results" / "segment_downstream.json"
TRAIN = TrainConfig(epochs=60, patience=5, metric="ndcg@5", batch_size=128, lr=1e-3, progress=False)
#: the paper's Table (full SegMM: 2,368 users, 362,430 videos), its model's video-skip numbers
PAPER = {"hr@1": 0.4072, "hr@5": 0.8214, "ndcg@5": 0.6228}


def scores(model: torch.nn.Module, data: SegmentData, rows: np.ndarray) -> torch.Tensor:
    """Interest scores (len(rows), 40) in eval mode."""
    model.eval()
    with torch.no_grad():
        return model(data.batch(rows))


def train_segment(make, data: SegmentData, seed: int, out: Path, rows: np.ndarray | None = None):
    """Train ``make()`` on the training views (or ``rows`` of them) with early stopping."""
    torch.manual_seed(seed)
    model = make()
    train = SegmentTrainSet(data)
    if rows is not None:
        keep = np.isin(train.rows.numpy(), rows)
        train.rows = train.rows[torch.from_numpy(keep)]
    fit(
        model,
        train,
        lambda m: evaluate_segments(m, data, 1),
        replace(TRAIN, seed=seed),
        out,
        resume=False,
        log=lambda s: None,
    )
    return model


def mean_of(runs: list[dict]) -> dict:
    out = {k: round(float(np.mean([r[k] for r in runs])), 4) for k in runs[0] if k != "n"}
    out.update(
        {f"{k}_std": round(float(np.std([r[k] for r in runs])), 4) for k in runs[0] if k != "n"}
    )
    out["n"] = runs[0]["n"]
    return out


def downstream(data: SegmentData, seeds: list[int], out: Path) -> dict:
    """CAN on 'played to the end', with and without out-of-fold segment-interest features."""
    cfg = SegmentConfig()
    make = lambda: SegmentInterest(data.n_users, data.n_videos, cfg)  # noqa: E731
    train_rows = data.rows(0)
    gen = np.random.default_rng(0)
    fold = gen.integers(0, 2, len(train_rows))
    feats = torch.zeros((len(data), 2), dtype=torch.long)
    for f in (0, 1):
        model = train_segment(make, data, 2024, out / f"fold{f}", rows=train_rows[fold != f])
        target = train_rows[fold == f]
        feats[target] = interest_features(scores(model, data, target), data.segments[target])
    full = train_segment(make, data, 2024, out / "full")
    rest = np.flatnonzero(data.split != 0)
    feats[rest] = interest_features(scores(full, data, rest), data.segments[rest])
    result = {}
    for label, interest in (("can", None), ("can+segment-interest", feats.numpy())):
        ctr = segment_ctr(data, interest)
        runs = []
        for seed in seeds:
            torch.manual_seed(seed)
            model = CAN(
                CTRSchema.of(ctr), RankingConfig(tasks=["finish"]), DINConfig(), CANConfig()
            )
            tcfg = TrainConfig(
                lr=1e-3,
                batch_size=256,
                epochs=30,
                patience=3,
                metric="auc",
                progress=False,
                seed=seed,
            )
            ev = lambda m, c=ctr: {k: v for k, v in evaluate_ctr(m, c, 1).items() if k != "tasks"}  # noqa: E731
            fit(
                model,
                CTRTrainSet(ctr),
                ev,
                tcfg,
                out / f"{label}-{seed}",
                resume=False,
                log=lambda s: None,
            )
            t = evaluate_ctr(model, ctr, 2)["tasks"]["finish"]
            runs.append({k: t[k] for k in ("auc", "gauc", "logloss")})
            print(f"downstream {label} seed {seed}: test AUC {t['auc']:.4f} GAUC {t['gauc']:.4f}")
        n_test = int(len(ctr.rows(2)))
        result[label] = {"finish": mean_of([{**r, "n": n_test} for r in runs]) | {"runs": runs}}
    base, with_seg = result["can"]["finish"]["auc"], result["can+segment-interest"]["finish"]["auc"]
    result["auc_change"] = round(with_seg - base, 4)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    p = argparse.ArgumentParser(
        description="Video-skip prediction on the SegMM sample and segment-interest features in CAN.",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[2024, 1, 2], help="training seeds")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=Path("runs/bench-segment"), help="model folders")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    data = build_segments(load("segmm").interactions)
    results: dict[str, dict] = {}
    prior = PositionPrior().fit(data.segments[data.rows(0)], data.skip[data.rows(0)])
    results["position-prior"] = evaluate_segments(prior, data, 2)
    variants = {
        "duration-position": lambda cfg: DurationPosition(cfg),
        "mlp": lambda cfg: SegmentMLP(cfg),
        "segmm": lambda cfg: SegmentInterest(data.n_users, data.n_videos, cfg),
        "segmm-softmax": lambda cfg: SegmentInterest(
            data.n_users, data.n_videos, replace(cfg, loss="softmax")
        ),
        "segmm-watched-pairs": lambda cfg: SegmentInterest(
            data.n_users, data.n_videos, replace(cfg, pairs="watched")
        ),
    }
    for name, build in variants.items():
        runs = []
        for seed in args.seeds:
            model = train_segment(
                lambda b=build: b(SegmentConfig()), data, seed, args.out / f"{name}-{seed}"
            )
            runs.append(evaluate_segments(model, data, 2))
        results[name] = mean_of(runs)
        print(
            f"{name}: "
            + ", ".join(
                f"{k} {v:.4f}" for k, v in results[name].items() if "@" in k and "std" not in k
            )
        )
    results["paper (full SegMM)"] = PAPER
    atomic_write_json(RESULTS, results)
    down = downstream(data, args.seeds, args.out / "downstream")
    down["seconds_total"] = round(time.perf_counter() - t0, 1)
    atomic_write_json(DOWNSTREAM, down)
    print("\n| model | HR@1 | HR@5 | NDCG@5 | HR@10 | NDCG@10 |\n|---|---|---|---|---|---|")
    for name, m in results.items():
        if isinstance(m, dict) and "hr@1" in m:
            print(
                f"| {name} | "
                + " | ".join(
                    f"{m.get(k, float('nan')):.4f}"
                    for k in ("hr@1", "hr@5", "ndcg@5", "hr@10", "ndcg@10")
                )
                + " |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
