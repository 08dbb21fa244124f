"""``reelrec serve RUN``: the recommendation service over HTTP (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reelrec.serving.allocation import BEAM_ACTIONS
from reelrec.serving.allocation import FAISS_SIZES as SIZES


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec serve``."""
    p = argparse.ArgumentParser(
        prog="reelrec serve",
        description="Serve a trained run: POST /recommend {user_id, k} (generate or retrieve -> "
        "pre-rank -> rank, the compute per request set by DCAF), POST /events {events: [...]} (stored in "
        "SQLite, or Redis with --redis-url, before they are acknowledged), GET /healthz, GET /metrics (Prometheus text), "
        "OpenAPI at /docs, and a web page at / (open http://HOST:PORT/ in a browser: pick a "
        "user, see history, feed and trace, send like / watched events; it reads GET /users, "
        "/history/USER, /items?ids=, /status). Two candidate sources (--source): the "
        "generator (OneRec-V2 beam search over semantic IDs, ranked by SASRec; DCAF's actions "
        "are (beam width, candidates ranked) pairs), for a run of `reelrec quickstart "
        "--dataset microlens`; or faiss (nearest items to the history's embeddings, ranked by "
        "CAN; actions are 50..800 candidates ranked), for a KuaiRand run with "
        "RUN/content/item_embeddings.npy (reelrec encode) and a ranker (reelrec train can). "
        "From another machine: --host 0.0.0.0, or an SSH tunnel (ssh -L 8000:localhost:8000).",
    )
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (8000)")
    p.add_argument("--db", type=Path, default=None, help="event store (RUN/serving/events.sqlite)")
    p.add_argument(
        "--redis-url",
        default=None,
        help="store events in Redis instead of --db (redis://host:6379/0), so that several "
        "reelrec serve processes share the users' histories",
    )
    p.add_argument(
        "--source",
        choices=("auto", "generator", "faiss"),
        default="auto",
        help="candidate source: generator (beam search of --generator), faiss, or auto (the "
        "generator when RUN/models/GENERATOR exists, else faiss)",
    )
    p.add_argument(
        "--generator",
        default="onerec-v2",
        help="generator's model folder under RUN/models (onerec-v2)",
    )
    p.add_argument(
        "--ranker",
        default=None,
        help="ranker's model folder under RUN/models (sasrec with the generator, can with faiss)",
    )
    p.add_argument(
        "--budget-ms",
        type=float,
        default=None,
        help="mean action ms per request of the start-up Lagrange multiplier, used until the "
        "controller has seen traffic (default: the cost of the default action)",
    )
    p.add_argument(
        "--capacity-ms",
        type=float,
        default=500.0,
        help="ms per second of the actions' cost the service may spend (ranker ms on the faiss "
        "path, generate + rank ms on the generator path); DCAF's controller holds it (500)",
    )
    p.add_argument(
        "--load-signal",
        choices=("cost", "cpu"),
        default="cost",
        help="what the controller holds at --capacity-ms: the start-up cost of each served "
        "action (cost, default) or the ranker's measured CPU time per call (cpu)",
    )
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch threads per ranker call (1: requests run in parallel on the server's "
        "thread pool, and the cpu signal sees a call's whole CPU time)",
    )
    p.add_argument(
        "--default-size",
        type=int,
        default=200,
        help="faiss: action without DCAF, one of 50 / 100 / 200 / 400 / 800 (200)",
    )
    p.add_argument(
        "--default-beam",
        type=int,
        default=40,
        help="generator: action without DCAF, the first of the actions "
        f"{' '.join(f'{b}x{n}' for b, n in BEAM_ACTIONS)} (beam x ranked) with this beam (40)",
    )
    p.add_argument("--no-dcaf", action="store_true", help="every request gets the default action")
    p.add_argument(
        "--no-popular-action",
        action="store_true",
        help="generator: leave out DCAF's cheapest action (0x100: SASRec ranks the 100 most "
        "popular unwatched videos, no beam), so that every answer comes from the beam; the "
        "beams' cost floor (about 0.8 of the default's) then cannot absorb a 3x burst",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec serve`` until interrupted; returns the exit status."""
    args = build_parser().parse_args(argv)
    import math
    import socket
    import sqlite3

    import uvicorn

    from reelrec.config import ConfigError
    from reelrec.serving.replay import check_run
    from reelrec.serving.service import (
        Recommender,
        check_generator_run,
        create_app,
        resolve_source,
    )
    from reelrec.serving.store import RedisStore, SQLiteStore

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    for name in ("budget_ms", "capacity_ms"):
        v = getattr(args, name)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number > 0, got {v}")
    if args.default_size not in SIZES:
        raise ConfigError(
            f"--default-size must be one of the actions {SIZES}, got {args.default_size}"
        )
    beams = [a for a in BEAM_ACTIONS if a[0] == args.default_beam]
    if not beams:
        raise ConfigError(
            f"--default-beam must be one of {sorted({b for b, _ in BEAM_ACTIONS})}, "
            f"got {args.default_beam}"
        )
    if args.torch_threads < 1:
        raise ConfigError(f"--torch-threads must be >= 1, got {args.torch_threads}")
    source, ranker = resolve_source(args.run, args.source, args.generator, args.ranker)
    if source == "generator":
        if args.no_popular_action and args.default_beam == 0:
            raise ConfigError(
                "--default-beam 0 is the popular action that --no-popular-action removes"
            )
        check_generator_run(args.run, args.generator, ranker)
        sizes = tuple(a for a in BEAM_ACTIONS if a[0] > 0 or not args.no_popular_action)
        default = beams[0]
    else:
        check_run(args.run, ranker)
        sizes, default = SIZES, args.default_size
    # a taken port is found now, not after the start-up; SO_REUSEADDR as uvicorn sets it, so
    # that a restart right after a crash is not refused for the sockets left in TIME-WAIT
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            args.host, args.port, type=socket.SOCK_STREAM
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(addr)
    except OSError as exc:
        why = exc.strerror or str(exc)
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {why}") from None
    if args.redis_url is not None and args.db is not None:
        raise ConfigError("--db and --redis-url name two stores: give one")
    db = args.db or args.run / "serving" / "events.sqlite"
    if args.redis_url is not None:
        try:
            store = RedisStore(args.redis_url)
        except (ConnectionError, ValueError) as exc:  # ValueError: a malformed URL
            raise ConfigError(f"--redis-url: {exc}") from None
        where = f"Redis {args.redis_url} (durability: appendfsync {store.durability()})"
    else:
        try:
            store = SQLiteStore(db)
        except (sqlite3.Error, OSError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(f"--db {db}: {why} (a SQLite file in a writable folder)") from None
        where = f"SQLite {db}"
    import torch

    torch.set_num_threads(args.torch_threads)
    print(
        f"starting ({source} candidates, {ranker} ranker): measuring the action costs and "
        "fitting DCAF's request-value model on validation requests (20-90 s)",
        flush=True,
    )
    rec = Recommender(
        args.run,
        store,
        ranker=ranker,
        sizes=sizes,
        default_size=default,
        source=source,
        generator=args.generator,
        budget_ms=args.budget_ms,
        dcaf=not args.no_dcaf,
        capacity_ms=args.capacity_ms,
        load_signal=args.load_signal,
    )
    print(
        f"serving {args.run} on http://{args.host}:{args.port} (DCAF {'off' if args.no_dcaf else 'on'}, "
        f"candidates from {rec.generator_name if source == 'generator' else 'faiss'}, "
        f"budget {rec.budget_ms:.2f} ms per request, capacity {rec.capacity_ms:g} ms/s of "
        f"{args.load_signal}, events in {where}, action costs "
        f"{dict(zip(map(str, rec.sizes), [round(c, 2) for c in rec.ladder.costs], strict=True))} "
        "ms); "
        f"web page: http://{args.host}:{args.port}/",
        flush=True,
    )
    uvicorn.run(create_app(rec), host=args.host, port=args.port, log_level="warning")
    s = rec.stats
    print(
        f"stopped after {s['requests']} recommendations ({s['cold_start']} cold start) and "
        f"{s['events']} events stored",
        flush=True,
    )
    store.close()
    return 0
