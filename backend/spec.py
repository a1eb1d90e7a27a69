"""RunSpec: the one type that is the CLI argument, cache key, HTTP payload and permalink payload.

Torch-free (the dashboard imports it). ``run_id`` combines the canonical spec with the model
fingerprint, the dataset fingerprint and the probe version, so the same spec gives the same id on
any machine, and a retrained model or a changed probe never hits a stale cache entry.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from backend.params import check_ref
from backend.probes.registry import PROBES
from backend.store import canonical_json
from models.ablation import Ablation, AblationError


class SpecError(ValueError):
    """Bad spec input; the message is one line naming the field and what is allowed."""


class RunSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="model ref: zoo/<name> or a directory under a model root")
    probe: str
    data: str | None = Field(None, description="dataset ref; None = the probe's default")
    ablation: Ablation = Field(default_factory=Ablation)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model", "data")
    @classmethod
    def _ref(cls, v: str | None, info: Any) -> str | None:
        return check_ref(v, info.field_name)

    @field_validator("probe")
    @classmethod
    def _probe(cls, v: str) -> str:
        if v not in PROBES:
            raise ValueError(f"probe: unknown probe {v!r}; allowed: {', '.join(PROBES)}")
        return v

    @field_validator("ablation", mode="before")
    @classmethod
    def _ablation(cls, v: Any) -> Any:
        return Ablation.from_text(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _params(self) -> RunSpec:
        model_cls = PROBES[self.probe].params
        try:
            typed = model_cls(**self.params)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            raise ValueError(f"params{'.' + loc if loc else ''}: {msg} (probe {self.probe})") from None
        # canonical: only non-default values, in sorted order
        object.__setattr__(self, "params", json.loads(typed.model_dump_json(exclude_defaults=True)))
        return self

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def build(cls, **kw: Any) -> RunSpec:
        """Validate, turning any pydantic/ablation error into a one-line SpecError."""
        try:
            return cls(**kw)
        except AblationError as e:
            raise SpecError(str(e)) from None
        except ValidationError as e:
            err = e.errors()[0]
            msg = err["msg"].removeprefix("Value error, ")
            loc = ".".join(str(x) for x in err["loc"])
            raise SpecError(msg if msg.startswith(loc.split(".")[0]) else f"{loc}: {msg}") from None

    # -- canonical forms ----------------------------------------------------------------------
    @property
    def typed_params(self) -> Any:
        return PROBES[self.probe].params(**self.params)

    @property
    def probe_version(self) -> str:
        return PROBES[self.probe].version

    def canonical(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "probe": self.probe}
        if self.data is not None:
            out["data"] = self.data
        if not self.ablation.is_empty:
            out["ablation"] = json.loads(self.ablation.canonical_json())
        if self.params:
            out["params"] = self.params
        return out

    def canonical_json(self) -> str:
        """The canonical JSON text (the same function that writes specs into manifests and ``runs.spec``)."""
        return canonical_json(self.canonical())

    def run_id(self, model_fingerprint: str, data_fingerprint: str = "") -> str:
        h = hashlib.sha256()
        for part in (self.canonical_json(), model_fingerprint, data_fingerprint, self.probe_version):
            h.update(part.encode())
            h.update(b"\0")
        return h.hexdigest()[:20]
