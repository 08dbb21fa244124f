"""``RUN/report.md`` with a metrics table and training-curve plots (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reelrec.io import atomic_path, atomic_write_text


def plot_training_curves(
    histories: dict[str, list[dict[str, Any]]], baselines: dict[str, float], metric: str, path: Path
) -> bool:
    """Plot train loss and validation ``metric`` per epoch for each trained model.

    Args:
        histories: model name -> list of epoch rows (``epoch``, ``loss``, ``valid_<metric>``).
        baselines: model name -> validation ``metric`` of untrained baselines (drawn as lines).
        metric: e.g. ``"ndcg@10"``.
        path: PNG to write (atomically).

    Returns:
        False when there is nothing to plot (no history), True otherwise.
    """
    if not any(histories.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, rows in histories.items():
        if not rows:
            continue
        epochs = [r["epoch"] for r in rows]
        ax_loss.plot(epochs, [r["loss"] for r in rows], marker=".", label=name)
        ax_val.plot(epochs, [r.get(f"valid_{metric}") for r in rows], marker=".", label=name)
    for name, value in baselines.items():
        ax_val.axhline(
            value, linestyle="--", color="grey", linewidth=1, label=f"{name} (no training)"
        )
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="training loss")
    ax_val.set(
        xlabel="epoch", ylabel=f"validation {metric}", title=f"validation {metric} (full ranking)"
    )
    ax_loss.legend()
    ax_val.legend()
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return True


def ranking_section(rankers: dict[str, dict[str, Any]]) -> list[str]:
    """Report lines for the multi-task rankers: AUC / GAUC / LogLoss per task on test, and the
    watch-ratio errors."""
    lines = [
        "",
        "## Ranking models (test impressions)",
        "",
        "Per task, over the test impressions that have the label: AUC; GAUC per user, "
        "impression-weighted, over the users with both classes (users counted / left out); "
        "LogLoss in nats. Tasks with few positives (follow, comment, forward: about 15-80 on "
        "the KuaiRand test day, 8-34 on KuaiRand-Pure's; see the positives column) are noisy, "
        "and so is their GAUC, computed over a handful of users. Mean AUC and mean GAUC are "
        "plain means over the binary tasks trained (mean AUC is the early-stopping metric).",
        "",
        "| model | task | positives / rows | AUC | GAUC (users in / left out) | LogLoss |",
        "|---|---|---|---|---|---|",
    ]
    regression = []
    for name, d in rankers.items():
        label = name if d.get("model", name) == name else f"{name} ({d['model']})"
        for task, m in d["test"]["tasks"].items():
            if "auc" not in m:
                regression.append(
                    f"{label}: MAE {m['mae']:.4f}, RMSE {m['rmse']:.4f} ({m['n']:,} rows)"
                )
                continue
            lines.append(
                f"| {label} | {task} | {m['positives']:,} / {m['n']:,} | {m['auc']:.4f} | "
                f"{m.get('gauc', float('nan')):.4f} ({m.get('gauc_users', 0)} / "
                f"{m.get('gauc_excluded_users', '-')}) | {m['logloss']:.4f} |"
            )
        lines.append(
            f"| {label} | **mean AUC** | | **{d['test']['auc']:.4f}** | "
            f"{d['test']['gauc']:.4f} | best epoch {d.get('best_epoch', '-')}, "
            f"{d.get('train_seconds', '-')} s |"
        )
    if regression:
        lines += ["", "Watch ratio (clipped), test: " + "; ".join(regression) + "."]
    return lines


def skip_section(models: dict[str, dict[str, Any]]) -> list[str]:
    """Report lines for the SegMM video-skip models: HR@k / NDCG@k of the skip segment."""
    cols = ("hr@1", "hr@5", "ndcg@5", "hr@10", "ndcg@10")
    lines = [
        "",
        "## Video-skip prediction (test views with a skip segment)",
        "",
        "The video's segments ranked by predicted interest, lowest first; the segment the user "
        "left in is the relevant one (ties: expectation over random order).",
        "",
        "| model | views | "
        + " | ".join(c.upper().replace("HR", "HR").replace("NDCG", "NDCG") for c in cols)
        + " | best epoch |",
        "|---|---|" + "---|" * (len(cols) + 1),
    ]
    for name, d in models.items():
        t = d["test"]
        lines.append(
            f"| {name} | {t['n']:,} | "
            + " | ".join(f"{t[c]:.4f}" for c in cols)
            + f" | {d.get('best_epoch', '-')} |"
        )
    return lines


def write_report(
    run_dir: Path,
    metrics: dict[str, Any],
    sections: list[tuple[Any, dict[str, Any]]],
    prepare_report: dict[str, Any],
    run: Any = None,
) -> Path:
    """Write ``run_dir/report.md`` (and ``run_dir/plots/training_curves.png``).

    Args:
        metrics: the ``RUN/metrics.json`` content (DESIGN.md shape).
        sections: ``(task, {model name: Evaluation})`` per family, in report order. Models of
            tasks with ``ranks_items`` share the full-ranking test table; every task then adds
            its own section (``task.report_section``).
        prepare_report: ``RUN/data/prepare_report.json``.
        run: the :class:`reelrec.tasks.base.RunFolder` handed to the tasks' sections.

    Returns:
        Path of the report.
    """
    run_dir = Path(run_dir)
    ranked = {n: e for task, evs in sections if task.ranks_items for n, e in evs.items()}
    lines = [f"# reelrec run report: {metrics['dataset']}", ""]
    lines += _data_lines(prepare_report)
    lines += content_lines(run_dir)
    if lines[-1] != "":
        lines.append("")
    if ranked:
        lines += retrieval_section(run_dir, metrics, ranked)
    else:  # a run of rankers or skip models only: no retrieval table
        lines.append(f"reelrec {metrics['version']}, commit `{metrics['commit']}`.")
    for task, evs in sections:
        lines += task.report_section(run, evs)
    lines += serve_lines(run_dir)
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def serve_lines(run_dir: Path) -> list[str]:
    """The report's last section: the command that serves this run, when it can be served
    (a generator and SASRec: the generative path; item embeddings and CAN: the faiss path);
    none otherwise."""
    models = run_dir / "models"
    if all((models / m / "model.safetensors").exists() for m in ("onerec-v2", "sasrec")):
        how = "OneRec-V2 beam search generates the candidates, SASRec ranks them"
    elif (models / "can" / "model.safetensors").exists() and (
        run_dir / "content" / "item_embeddings.npy"
    ).exists():
        how = "faiss retrieves the candidates over the item embeddings, CAN ranks them"
    else:
        return []
    return [
        "",
        "## Serve it",
        "",
        f"{how}, DCAF sets the compute of each request (docs/serving.md):",
        "",
        "```",
        f"reelrec serve {run_dir}",
        "```",
        "",
        "then open http://127.0.0.1:8000/ (the web page) or `POST /recommend`.",
    ]


def generator_rule(details: dict[str, dict]) -> str:
    """The sentence that says how the generators of a report were ranked, from each model's
    ``metrics.json`` (``ranking``: ``exact`` or ``beam``)."""
    rankings = {d.get("ranking") for d in details.values() if d.get("ranking") in ("exact", "beam")}
    text = "Generative models (onerec, onerec-v2, tiger and their aligned versions ipa, ecpo) "
    if rankings == {"beam"}:
        return text + (
            "are ranked by their beam's top-k list (``eval.ranking=beam``): a target outside "
            "it is a miss, and the uncut MRR is not defined (shown as -)."
        )
    if rankings == {"exact", "beam"}:
        return text + (
            "are ranked exactly or by their beam's list, model by model (``ranking`` in each "
            "metrics.json); the uncut MRR of either is not defined (shown as -)."
        )
    return text + (
        "rank every item by its semantic ID's exact log-probability (``eval.ranking=exact``); "
        "their ranks are computed up to the largest cutoff, so their uncut MRR is not "
        "defined (shown as -). The beam table below ranks them by their beam's list instead."
    )


def retrieval_section(
    run_dir: Path, metrics: dict[str, Any], evaluations: dict[str, Any]
) -> list[str]:
    """The full-ranking test table and the training-curve plot of the next-item models.

    Args:
        evaluations: model name -> :class:`reelrec.tasks.base.Evaluation` (``summary``,
            ``detail``, ``history``).
    """
    models = {n: e.summary for n, e in evaluations.items()}
    details = {n: e.detail for n, e in evaluations.items()}
    histories = {n: e.history for n, e in evaluations.items()}
    cols = [
        c
        for c in ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr")
        if any(c in m for m in models.values())
    ]
    masked = {bool(d.get("mask_history", False)) for d in details.values()}
    history_rule = (
        "history items masked out of the ranking"
        if masked == {True}
        else "history items kept in the ranking (unmasked)"
        if masked == {False}
        else "history masking differs between models (see each metrics.json)"
    )
    lines = [
        "## Retrieval",
        "",
        f"Protocol: **{metrics['protocol']}**, full ranking over every train item (no sampled "
        f"negatives), {history_rule}; ties count as their expected position. reelrec "
        f"{metrics['version']}, commit `{metrics['commit']}`.",
        "",
        generator_rule(details),
        "",
        "## Test metrics",
        "",
        "| model | " + " | ".join(cols) + " | best epoch | train s |",
        "|---|" + "---|" * (len(cols) + 2),
    ]
    for name, m in models.items():
        d = details.get(name, {})
        lines.append(
            f"| {name} | "
            + " | ".join(f"{m[c]:.4f}" if c in m else "-" for c in cols)
            + f" | {d.get('best_epoch', '-')} | {d.get('train_seconds', '-')} |"
        )
    both = {n: d for n, d in details.items() if "test_protocols" in d}
    if both:
        lines += [
            "",
            "## NDCG@10 under both protocols, exact and by the beam",
            "",
            "| model | unmasked | masked | beam, unmasked | beam, masked |",
            "|---|---|---|---|---|",
        ]
        for name, d in both.items():
            p, b = d["test_protocols"], d.get("test_beam", {})

            def cell(x: dict, key: str) -> str:
                return f"{x[key]['ndcg@10']:.4f}" if key in x else "-"

            lines.append(
                f"| {name} | {cell(p, 'unmasked')} | {cell(p, 'masked')} | "
                f"{cell(b, 'unmasked')} | {cell(b, 'masked')} |"
            )
    any_d = next(iter(details.values()), {})
    test = any_d.get("test", {})
    if test:
        lines += [
            "",
            f"{test.get('n_instances', '?'):,} test instances; {test.get('oov_targets', 0):,} of "
            "them have a target item never seen in train, which no ID-based model can rank: "
            "they count as misses.",
        ]
    baselines = {
        n: d["valid"]["ndcg@10"]
        for n, d in details.items()
        if not histories.get(n) and "valid" in d and "alignment" not in d
    }
    curves = {n: h for n, h in histories.items() if h}
    if plot_training_curves(
        curves, baselines, "ndcg@10", run_dir / "plots" / "training_curves.png"
    ):
        lines += ["", "## Training curves", "", "![training curves](plots/training_curves.png)"]
    return lines


def alignment_section(aligned: dict[str, dict[str, Any]]) -> list[str]:
    """Before / after table of the aligned generators (``metrics.json["alignment"]``)."""
    keys = ("pscore_mean@10", "pscore_max@10", "recall@10", "ndcg@10", "hate_share@10")
    lines = [
        "",
        "## Preference alignment (test day, one request per user)",
        "",
        "P-Score: the reward model's score of the generated top 10; recall / NDCG of the day's "
        "liked videos; hate share: hated videos among the 10 slots; legal rate: real items "
        "among an unconstrained beam search's top 10 (docs/alignment.md).",
        "",
        "| model | from | " + " | ".join(keys) + " | legal rate |",
        "|---|---|" + "---|" * (len(keys) + 1),
    ]
    rows: dict[str, tuple[str, dict]] = {}
    for name, d in aligned.items():  # each starting generator once, before its aligned models
        rows.setdefault(d.get("init", "init"), ("-", d["alignment"]["init_test"]))
        rows[name] = (d.get("init", "-"), d["alignment"]["test"])
    for label, (init, m) in rows.items():
        lines.append(
            f"| {label} | {init} | "
            + " | ".join(f"{m[k]:.4f}" for k in keys)
            + f" | {m['legal_rate']:.4f} |"
        )
    return lines


def _json(path: Path) -> dict[str, Any] | None:
    """A JSON file of the run, or None when it is missing or unreadable (the report goes on)."""
    import json

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def content_lines(run_dir: Path) -> list[str]:
    """The report's Content and Semantic IDs sections, from ``RUN/content/encoder.json``,
    ``align.json`` and ``RUN/tokenizer/stats.json`` (nothing when the run has none)."""
    lines: list[str] = []
    enc = _json(run_dir / "content" / "encoder.json")
    if enc:
        lines += ["", "## Content", ""]
        lines.append(
            f"- {enc.get('items', '?'):,} items embedded by `{enc.get('encoder')}` "
            f"(source: {enc.get('source', '?')}, D = {enc.get('dim', '?')}) in "
            f"{enc.get('seconds', '?')} s"
            + (" (from the embedding cache)" if enc.get("cache_hit") else "")
        )
        if enc.get("items_without_text"):
            lines.append(f"- items without text: {enc['items_without_text']:,}")
        align = _json(run_dir / "content" / "align.json")
        if align:
            before, after = align.get("test_before", {}), align.get("test_after", {})
            if "recall@10" in before and "recall@10" in after:
                lines.append(
                    f"- QARM alignment to behaviour: test pair Recall@10 "
                    f"{before['recall@10']:.4f} before, {after['recall@10']:.4f} after "
                    f"({align.get('epochs_run', '?')} epochs, best {align.get('best_epoch', '?')})"
                )
    stats = _json(run_dir / "tokenizer" / "stats.json")
    if stats and "utilisation" in stats:
        k = stats.get("codebook_size", "?")
        lines += [
            "",
            "## Semantic IDs",
            "",
            f"`{stats.get('method')}` over {stats.get('items', '?'):,} items: "
            f"{stats.get('levels', '?')} levels of {k} codes, then one disambiguation level; "
            f"{stats.get('collision_rate', 0):.2%} of items share their codes with another "
            "before it.",
            "",
            "| level | utilisation | entropy (bits) | of max | reconstruction loss |",
            "|---|---|---|---|---|",
        ]
        recon = stats.get("recon_loss_per_level") or []
        top = stats.get("max_entropy_bits") or 0
        ents = stats.get("entropy_bits") or [float("nan")] * len(stats["utilisation"])
        for i, (u, h) in enumerate(zip(stats["utilisation"], ents, strict=True)):
            r = f"{recon[i]:.4f}" if i < len(recon) else "-"
            share = f"{h / top:.1%}" if top else "-"
            lines.append(f"| {i + 1} | {u:.1%} | {h:.2f} | {share} | {r} |")
    return lines


def _data_lines(r: dict[str, Any]) -> list[str]:
    """The report's Data section from ``prepare_report.json``."""
    lines: list[str] = []
    if r:
        lines += [
            "## Data",
            "",
            f"- rows {r.get('rows', '?'):,}, users {r.get('users', '?'):,}, items {r.get('items', '?'):,}",
            "- rows per split: "
            + ", ".join(f"{k} {v:,}" for k, v in (r.get("rows_per_split") or {}).items())
            + "; positive rows per split: "
            + ", ".join(f"{k} {v:,}" for k, v in (r.get("positive_rows_per_split") or {}).items()),
            f"- duplicate events removed: {r.get('duplicate_events_removed')}; rows out of time order in the file: {r.get('rows_out_of_time_order', 'n/a')}; rows in (user, time) tie groups: {r.get('rows_in_tie_groups', 'n/a')} (kept in file order)",
        ]
    return lines
