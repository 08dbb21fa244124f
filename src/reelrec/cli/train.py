"""``reelrec train CONFIG --run RUN [--a.b=c ...]``: train one model on a prepared run
(:meth:`reelrec.run.Run.train`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reelrec.cli.common import parse_with_overrides
from reelrec.run import Run
from reelrec.tasks.config import config_text
from reelrec.tasks.registry import MODELS, PRESETS, resolve_config
from reelrec.training import distributed as D


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``reelrec train``."""
    p = argparse.ArgumentParser(
        prog="reelrec train",
        description="Train one model on RUN/data (prepared first if missing), keep the best "
        "epoch by validation NDCG@10 (rankers can, din, deepfm, mmoe, ple and the reward model "
        "pscore: mean validation AUC over the binary tasks; ipa, ecpo: validation P-Score mean@10; "
        "train.metric), and write RUN/models/NAME/{model.safetensors, "
        "config.yaml, metrics.json, history.json, checkpoint/}. An interrupted run resumes "
        "from its checkpoint when started again with the same command.",
        epilog="Overrides: any key of the config's sections as --section.key=value, e.g. "
        "--train.epochs=5 --sasrec.hidden=128 --data.dataset=amazon-beauty. Every model has the "
        "sections data, train and eval, plus its own (a key of another model's section is "
        "rejected like any unknown key; --print-config shows every key and value before a run). "
        f"Presets: {', '.join(PRESETS)}; a preset trains on the dataset RUN was prepared for "
        "(RUN/run.json) unless --data.dataset names another. Models (their own sections in brackets): "
        + "; ".join(f"{k} [{', '.join(v.sections)}]: {v.description}" for k, v in MODELS.items())
        + ". Each model writes to RUN/models/<--name, default the model name>: use --name=NAME "
        "to keep several runs of one model side by side. The generative presets onerec, "
        "onerec-v2 and tiger (OneRec with TIGER's setup, saved as RUN/models/tiger) read "
        "semantic IDs from RUN/tokenizer (tiger: RUN/tokenizer-rq-vae), made by reelrec "
        "encode, align and tokenize (docs/generative-retrieval.md). ELASTIC: preset elastic, "
        "frozen long-history configs in configs/elastic-*.yaml (docs/long-sequences.md). The "
        "rankers can, din, deepfm, mmoe and ple train on KuaiRand impressions (kuairand, or the "
        "impression log with --data.dataset=kuairand-pure; multi-task click, "
        "long_view, like, follow, comment, forward and watch ratio; early stopping on the mean "
        "validation AUC; docs/ranking.md; lists are written --ranking.tasks=[click,like]; "
        "--ranking.multitask=mmoe|ple gives can, din or deepfm MMoE or PLE instead of the "
        "shared bottom). The "
        "preset segment-interest is SegMM video-skip prediction on --data.dataset=segmm. "
        "Preference alignment (docs/alignment.md): pscore trains the reward model; ipa (DPO) "
        "and ecpo (RL) fine-tune the generator RUN/models/onerec (--preference.init) with the "
        "reward RUN/models/pscore (--preference.reward), single process. "
        "--train.progress=false hides the progress bar; --train.threads=N sets torch's CPU "
        "threads. Several processes: torchrun --nproc_per_node N $(which reelrec) train CONFIG "
        "--run-dir RUN ... (DDP; --train.strategy=fsdp shards the model; train.batch_size is "
        "the global batch, split across ranks).",
    )
    p.add_argument("config", help="preset name or path to a YAML config")
    p.add_argument(
        "--run",
        "--run-dir",
        dest="run",
        required=True,
        type=Path,
        help="run folder (RUN); under torchrun write --run-dir (torchrun reads --run as its own --run-path)",
    )
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (every key of the model's sections, with the overrides "
        "applied) as YAML and exit without training",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``reelrec train``; returns the exit status."""
    args, overrides = parse_with_overrides(build_parser(), argv)
    cfg = resolve_config(args.config, Run(args.run).with_run_dataset(args.config, overrides))
    if args.print_config:
        print(config_text(cfg), end="")
        return 0
    env = D.setup()  # joins the process group under torchrun (gloo on CPU, NCCL on GPU)
    try:
        Run(args.run).train(cfg, resume=not args.no_resume, log=print if env.main else _quiet)
    finally:
        if env.distributed:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


def _quiet(_: str) -> None:
    """The log of ranks other than 0."""
