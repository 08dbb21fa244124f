"""CT-LLM adapter: mean-pooled hidden states of a local ``m-a-p/CT-LLM-Base`` as item embeddings.

Source: Du et al., "Chinese Tiny LLM: Pretraining a Chinese-Centric Large Language Model"
(arXiv 2404.04167), Section 4 (model: a 2B decoder of the stock Llama architecture, with a
SentencePiece tokenizer of 125,696 pieces). The checkpoint loads with ``LlamaForCausalLM`` and
its ``tokenizer.model`` with the ``sentencepiece`` package: no remote code.

Embedding: texts are tokenised with a leading BOS, right-padded, run through the decoder, and the
last layer's hidden states are averaged over the real tokens (``masked_mean``) and L2-normalised.
Right padding keeps every real token's state independent of the padding (attention is causal),
so a text's embedding does not depend on the batch it is in.

Deviations: the paper trains the model; reelrec only reads it. Mean pooling of a base LLM is our
choice for item text (the paper defines no embedding).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from reelrec.config import ConfigError
from reelrec.content.encoders import Encoder, optional_import
from reelrec.data.readers import DataFormatError

#: where the weights come from (for error messages; nothing is downloaded by reelrec)
CT_LLM_REPO = "m-a-p/CT-LLM-Base"


def masked_mean(hidden, mask):
    """Mean over the positions where ``mask`` is 1.

    Args:
        hidden: ``(B, L, D)`` float tensor.
        mask: ``(B, L)`` 0/1 (or bool) tensor; each row needs at least one 1.

    Returns:
        ``(B, D)`` float tensor (float32).

    Raises:
        ValueError: shapes disagree or a row of ``mask`` is all zero.
    """
    if hidden.dim() != 3 or mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"masked_mean: hidden {tuple(hidden.shape)} and mask {tuple(mask.shape)} must be "
            "(B, L, D) and (B, L)"
        )
    m = mask.to(hidden.dtype).unsqueeze(-1)
    counts = m.sum(dim=1)
    if bool((counts == 0).any()):
        raise ValueError("masked_mean: a row of the mask selects no position")
    return ((hidden * m).sum(dim=1) / counts).float()


#: any one of these holds a checkpoint's weights
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def check_model_dir(path: Path | str | None, what: str, repo: str, files: tuple[str, ...]) -> Path:
    """``path`` as a folder holding ``files`` and one of :data:`WEIGHT_FILES`, or a clear error
    saying how to get the weights.

    Raises:
        FileNotFoundError: no path given, no such folder, or a file missing.
    """
    hint = (
        f"download {repo} once (e.g. `huggingface-cli download {repo} --local-dir DIR`) and "
        "pass its folder with --model-path DIR; reelrec never downloads weights itself"
    )
    if path is None or str(path) == "":
        raise FileNotFoundError(f"the {what} adapter needs local weights: {hint}")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{p}: no such folder of {what} weights; {hint}")
    missing = [f for f in files if not (p / f).exists()]
    if not any((p / f).exists() for f in WEIGHT_FILES):
        missing.append("the weights (model.safetensors or pytorch_model.bin, or their index)")
    if missing:
        raise FileNotFoundError(f"{p}: missing {', '.join(missing)} ({what} weights); {hint}")
    return p


def resolve_device(device: str, what: str) -> str:
    """``device`` checked against what torch sees (``auto``: cuda when available, else cpu).

    Raises:
        ValueError: not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        RuntimeError: a CUDA device was asked for and none is available.
    """
    import re

    import torch

    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"the {what} adapter was asked for {device} but torch sees no GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}); "
            "use --device cpu (slow for 2B+ weights) or a machine with a GPU"
        )
    return device


class CTLLMEncoder(Encoder):
    """Item text -> mean-pooled last-layer state of CT-LLM-Base (``D`` = hidden size, 2048).

    Args:
        model_path: local folder with ``config.json``, the weights and ``tokenizer.model``.
        device: ``cpu``, ``cuda[:i]`` or ``auto``.
        batch_size: texts per forward.
        max_length: tokens per text (BOS included); longer texts are truncated. Capped at the
            model's ``max_position_embeddings``.
        dtype: ``float32`` (default on CPU) or ``bfloat16`` / ``float16`` (default on GPU).

    Raises:
        FileNotFoundError: the folder or one of its files is missing (says how to get them).
        RuntimeError: a GPU was asked for and none is available.
        ImportError: transformers or sentencepiece is not installed (``reelrec[llm]``).
    """

    name = "ct-llm"

    def __init__(
        self,
        model_path: Path | str | None,
        device: str = "auto",
        batch_size: int = 16,
        max_length: int = 256,
        dtype: str | None = None,
    ) -> None:
        self.path = check_model_dir(
            model_path, "CT-LLM", CT_LLM_REPO, ("config.json", "tokenizer.model")
        )
        self.device = resolve_device(device, "CT-LLM")
        ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (batch_size, max_length))
        if not ok or batch_size < 1 or max_length < 2:
            raise ValueError(
                f"batch_size ({batch_size!r}) >= 1 and max_length ({max_length!r}) >= 2 must be "
                "integers"
            )
        self.batch_size = batch_size
        self.dtype = dtype or ("float32" if self.device == "cpu" else "bfloat16")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        cfg_path = self.path / "config.json"
        try:
            config = json.loads(cfg_path.read_text())
            self.dim = int(config["hidden_size"])
            context = int(config.get("max_position_embeddings") or max_length)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataFormatError(
                f"{cfg_path}: not a Llama config with hidden_size ({type(exc).__name__}: {exc})"
            ) from None
        # longer inputs would run past the positions the model was trained on
        self.max_length = min(max_length, context)
        self._config = config
        self._model = None
        self._sp = None

    @property
    def cache_key(self) -> str:
        cfg = hashlib.sha256(json.dumps(self._config, sort_keys=True).encode()).hexdigest()[:12]
        tok = hashlib.sha256((self.path / "tokenizer.model").read_bytes()).hexdigest()[:12]
        return f"{self.name}-{cfg}-{tok}-{self.max_length}-{self.dtype}-mean"

    def _load(self) -> None:
        import torch

        spm = optional_import("sentencepiece", "llm", "the ct-llm encoder")
        LlamaForCausalLM = optional_import(
            "transformers", "llm", "the ct-llm encoder"
        ).LlamaForCausalLM  # noqa: N806
        self._sp = spm.SentencePieceProcessor(model_file=str(self.path / "tokenizer.model"))
        model = LlamaForCausalLM.from_pretrained(
            self.path, dtype=getattr(torch, self.dtype), local_files_only=True
        )
        self._model = model.model.to(self.device).eval()  # the decoder, without the LM head

    def tokenize(self, texts: list[str]):
        """``(input_ids, attention_mask)``: ``(B, L)`` int64 each, BOS first, right-padded."""
        import torch

        if self._sp is None:
            self._load()
        vocab = self._sp.get_piece_size()
        bos = self._config.get("bos_token_id")
        bos = bos if isinstance(bos, int) and 0 <= bos < vocab else self._sp.bos_id()
        pad = self._config.get("pad_token_id")
        pad = pad if isinstance(pad, int) and 0 <= pad < vocab else 0
        # a piece covers at least one character: a prefix of 32 x max_length characters holds
        # every token kept, and a megabyte-long text is not tokenised whole
        cut = 32 * self.max_length
        ids = [[bos, *self._sp.encode(t[:cut])][: self.max_length] for t in texts]
        width = max(map(len, ids))
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        return input_ids, mask

    def _encode(self, texts: list[str]) -> np.ndarray:
        import torch

        from reelrec.progress import progress

        if self._model is None:
            self._load()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        starts = range(0, len(texts), self.batch_size)
        with torch.inference_mode():
            for s in progress(starts, "encode ct-llm", "batch", enabled=len(starts) >= 4):
                ids, mask = self.tokenize(texts[s : s + self.batch_size])
                ids, mask = ids.to(self.device), mask.to(self.device)
                hidden = self._model(input_ids=ids, attention_mask=mask).last_hidden_state
                out[s : s + len(ids)] = masked_mean(hidden, mask).cpu().numpy()
        return out
