"""``reelrec serve RUN``: the recommendation service over HTTP (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec serve``."""
    p = argparse.ArgumentParser(
        prog="reelrec serve",
        description="Serve a trained run: POST /recommend {user_id, k} (retrieve -> pre-rank -> "
        "rank, candidates per request set by DCAF), POST /events {events: [...]} (stored in "
        "SQLite before they are acknowledged), GET /healthz, GET /metrics (Prometheus text), "
        "OpenAPI at /docs. Needs RUN/content/item_embeddings.npy (reelrec encode) and a ranker "
        "(reelrec train can).",
    )
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument("--db", type=Path, default=None, help="event store (RUN/serving/events.sqlite)")
    p.add_argument("--ranker", default="can", help="model folder under RUN/models (can)")
    p.add_argument(
        "--budget-ms",
        type=float,
        default=None,
        help="mean ranker ms per request DCAF holds (default: the cost of --default-size)",
    )
    p.add_argument(
        "--capacity-ms",
        type=float,
        default=500.0,
        help="ranker ms per second the service may spend; DCAF's controller holds it (500)",
    )
    p.add_argument("--default-size", type=int, default=200, help="action without DCAF (200)")
    p.add_argument("--no-dcaf", action="store_true", help="every request gets --default-size")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec serve`` until interrupted; returns the exit status."""
    args = build_parser().parse_args(argv)
    import uvicorn

    from reelrec.serving.service import Recommender, create_app
    from reelrec.serving.store import SQLiteStore

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    store = SQLiteStore(args.db or args.run / "serving" / "events.sqlite")
    rec = Recommender(
        args.run,
        store,
        ranker=args.ranker,
        default_size=args.default_size,
        budget_ms=args.budget_ms,
        dcaf=not args.no_dcaf,
        capacity_ms=args.capacity_ms,
    )
    print(
        f"serving {args.run} on http://{args.host}:{args.port} (DCAF {'off' if args.no_dcaf else 'on'}, "
        f"budget {rec.budget_ms:.2f} ranker ms per request, action costs "
        f"{dict(zip(rec.sizes, [round(c, 2) for c in rec.ladder.costs], strict=True))} ms)",
        flush=True,
    )
    uvicorn.run(create_app(rec), host=args.host, port=args.port, log_level="warning")
    store.close()
    return 0
