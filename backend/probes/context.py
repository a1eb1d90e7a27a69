"""What a probe receives from the runner, and small helpers probes share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from backend.loading import LoadedModel
from backend.spec import RunSpec
from models.adapters import ModelAdapter, adapter_for


class ProbeInputError(ValueError):
    """The probe cannot run on this input (e.g. text too short); the message is for the user."""


@dataclass
class ProbeContext:
    spec: RunSpec
    params: Any  # the probe's typed params (backend.params)
    lm: LoadedModel  # the ablation is already applied while the probe runs
    docs: list | None  # backend.data Doc objects, or None for probes that make their own inputs
    progress: Callable[[float, str], None]
    deps: list = field(default_factory=list)  # RunResults of the probe's dependencies, in declared order
    meta: dict = field(default_factory=dict)  # extra numbers for the run manifest

    @property
    def model(self) -> torch.nn.Module:
        return self.lm.model

    @property
    def adapter(self) -> ModelAdapter:
        return adapter_for(self.lm.model)

    def ids(self, token_ids: list[int]) -> torch.Tensor:
        return torch.tensor([token_ids], dtype=torch.long, device=self.lm.device)


def encode_doc(lm: LoadedModel, text: str, max_tokens: int, what: str = "document"):
    """Tokenise only the first ``max_tokens`` tokens; returns (ids, offsets, text actually used)."""
    enc = lm.codec.encode(text, max_tokens=max_tokens)
    ids, offsets = enc.ids[:max_tokens], enc.offsets[:max_tokens]
    if len(ids) < 2:
        raise ProbeInputError(f"data: {what} has {len(ids)} token(s); at least 2 are needed")
    return ids, offsets, text[: offsets[-1][1]]


def position_buckets(positions: np.ndarray, nll: np.ndarray, bucket: int) -> dict[str, list]:
    """Mean NLL per position bucket [k*bucket, (k+1)*bucket) over all documents."""
    idx = positions // bucket
    out: dict[str, list] = {"bucket_start": [], "bucket_end": [], "mean_nll": [], "n": []}
    if len(idx) == 0:
        return out
    sums = np.bincount(idx, weights=nll.astype(np.float64))
    counts = np.bincount(idx)
    for k in np.nonzero(counts)[0]:
        out["bucket_start"].append(int(k * bucket))
        out["bucket_end"].append(int((k + 1) * bucket))
        out["mean_nll"].append(float(sums[k] / counts[k]))
        out["n"].append(int(counts[k]))
    return out


def token_rows(lm: LoadedModel, doc: int, ids: list[int], offsets, nll: np.ndarray, is_key=None) -> dict:
    """token_loss rows for targets 1..L-1 of one document (position 0 has no prediction)."""
    n = len(ids) - 1
    return {
        "doc": [doc] * n,
        "pos": list(range(1, n + 1)),
        "token_id": ids[1:],
        "token": lm.codec.tokens(ids[1:]),
        "char_start": [o[0] for o in offsets[1:]],
        "char_end": [o[1] for o in offsets[1:]],
        "nll": nll.tolist(),
        "is_key": [False] * n if is_key is None else [bool(x) for x in is_key],
    }


def concat(parts: list[dict]) -> dict:
    if not parts:
        return {}
    return {k: [v for p in parts for v in p[k]] for k in parts[0]}
