"""Parameter schemas of the probes (pydantic, torch-free so the app can import them).

Each probe's name, version, params class, run function, dependencies and tables are declared once, in
:mod:`backend.probes.registry`.

Numbers are strict: an integer field takes an integer only (not ``true``, ``1e3``, ``2.0`` or ``"5"``), a
float field a finite int or float (not a bool or a string). Text forms (the CLI's ``--param``, the
dashboard's URL) turn their values into numbers first with :func:`parse_scalar`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_origin

from pydantic import AllowInfNan, BaseModel, ConfigDict, Field, Strict, field_validator, model_validator

MAX_LEN = 1 << 20  # 1M tokens: a hard ceiling on any length parameter
REF_PATTERN = r"[A-Za-z0-9_.:/@+=,~-]{1,512}"  # a model or dataset ref (check_ref; the HTTP schema)
_REF = re.compile(REF_PATTERN)
Int = Annotated[int, Strict()]  # no bool, float or string coercion
Float = Annotated[float, Strict(), AllowInfNan(False)]  # an int or a finite float
_INT_TEXT = re.compile(r"[+-]?[0-9]{1,19}")  # ASCII digits: \d would also take "１２"
_FLOAT_TEXT = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+(\.[0-9]*)?[eE][+-]?[0-9]{1,3})")


def parse_scalar(text: str) -> Any:
    """A value typed as text (CLI ``--param``, URL): an int for digits, a float for decimal/exponent
    notation, else the text itself (``true``, ``abc``...; a strict field then refuses it)."""
    if _INT_TEXT.fullmatch(text):
        return int(text)
    if _FLOAT_TEXT.fullmatch(text):
        return float(text)
    return text


def check_ref(value: str | None, field: str | None = None) -> str | None:
    """A model or dataset ref: 1-512 of letters, digits and ``._:/@+=,~-`` only (None passes)."""
    if value is not None and not (isinstance(value, str) and _REF.fullmatch(value)):
        where = f"{field}: " if field else ""
        raise ValueError(f"{where}{value!r} is not a valid ref (letters, digits and ._:/@+=,~- only)")
    return value


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _scalars_to_tuples(cls, data: Any) -> Any:
        """A single value where a list is expected (``lengths=512`` on the CLI or in a URL) is a 1-list."""
        if isinstance(data, dict):
            data = dict(data)
            for name, field in cls.model_fields.items():
                is_tuple = get_origin(field.annotation) is tuple
                if is_tuple and name in data and isinstance(data[name], int | float | str):
                    data[name] = (data[name],)
        return data


class TokenLossParams(_Params):
    n_docs: Int = Field(4, ge=1, le=10_000)
    max_tokens: Int = Field(4096, ge=16, le=MAX_LEN)
    bucket: Int = Field(256, ge=1, le=MAX_LEN)
    batch_tokens: Int = Field(0, ge=0, le=MAX_LEN)  # 0 = the whole document in one forward


class LongPPLParams(_Params):
    n_docs: Int = Field(4, ge=1, le=10_000)
    max_tokens: Int = Field(4096, ge=16, le=MAX_LEN)
    # short context 1024 slid by 256 (the reference's 4096/1024 ratio): with the default 4096 tokens,
    # targets 1024..4095 can be key tokens (trunc_len >= max_tokens would leave none)
    trunc_len: Int = Field(1024, ge=8, le=MAX_LEN)
    stride: Int = Field(256, ge=1, le=MAX_LEN)
    alpha: Float = 2.0  # key token: log p_long - log p_short > alpha
    beta: Float = -2.0  # ... and log p_long > beta
    evaluator: str | None = None  # model ref that picks key tokens; None = the evaluated model

    @field_validator("evaluator")
    @classmethod
    def _evaluator(cls, v: str | None) -> str | None:
        return check_ref(v)

    @model_validator(mode="after")
    def _stride(self) -> LongPPLParams:
        if self.stride >= self.trunc_len:
            raise ValueError(f"stride must be < trunc_len ({self.trunc_len}), got {self.stride}")
        if self.trunc_len >= self.max_tokens:
            raise ValueError(
                f"trunc_len must be < max_tokens ({self.max_tokens}), got {self.trunc_len}: only targets beyond "
                "the short context (trunc_len tokens) can be key tokens, so none would exist"
            )
        return self


class KeyTokenParams(LongPPLParams):
    """Internal probe: the key-token set of LongPPL, cached as its own run (evaluator-specific)."""


class NIAHParams(_Params):
    lengths: tuple[Int, ...] = (256, 512, 1024)
    depths: tuple[Float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    samples: Int = Field(2, ge=1, le=1000)
    haystack: Literal["repeat", "text"] = "repeat"
    task: Literal["niah", "passkey"] = "niah"
    max_new_tokens: Int = Field(12, ge=1, le=256)
    seed: Int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("lengths")
    @classmethod
    def _lengths(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(not (16 <= x <= MAX_LEN) for x in v):
            raise ValueError(f"each length must be in [16, {MAX_LEN}]")
        return tuple(sorted(set(v)))

    @field_validator("depths")
    @classmethod
    def _depths(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not (0.0 <= x <= 1.0) for x in v):
            raise ValueError("each depth must be in [0, 1]")
        return tuple(sorted(set(v)))


class RetrievalHeadParams(NIAHParams):
    lengths: tuple[Int, ...] = (512,)
    depths: tuple[Float, ...] = (0.1, 0.5, 0.9)
    # mass: answer-row attention mass on the needle's character span (default); copy: Wu et al.'s copy
    # score; authors: the paper's script (one query row before the answer, prefill only, needle tokens
    # found by matching the answer's token ids: may also match equal tokens in the haystack)
    metric: Literal["mass", "copy", "authors"] = "mass"


class AttentionRowParams(_Params):
    n_docs: Int = Field(1, ge=1, le=100)
    max_tokens: Int = Field(1024, ge=16, le=MAX_LEN)
    layers: tuple[Int, ...] = ()  # empty = every attention layer
    heads: tuple[Int, ...] = ()  # empty = every head
    queries: tuple[Int, ...] = (-1,)  # positions; negative counts from the end
    top_k: Int = Field(16, ge=1, le=1024)


class SweepParams(LongPPLParams):
    """Receptive-field sweep: LongPPL when the full layers, or the efficient (SWA + recurrent) layers,
    may only use the last k tokens (each point is a cached longppl run)."""

    ks: tuple[Int, ...] = (64, 256, 1024)
    restrict: tuple[Literal["full", "efficient"], ...] = ("full", "efficient")

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or len(v) > 32 or any(not (1 <= x <= MAX_LEN) for x in v):
            raise ValueError(f"give 1-32 values, each in [1, {MAX_LEN}]")
        return tuple(sorted(set(v)))


class GradientInfluenceParams(_Params):
    """Gradient influence vs distance: target = sum over the vocabulary of the logits, averaged over the
    last ``last`` positions; score of input position i = ||d target / d embedding_i||_2, binned by
    distance from the end (``bins_per_octave`` log-spaced bins)."""

    n_docs: Int = Field(1, ge=1, le=1000)
    max_tokens: Int = Field(4096, ge=32, le=MAX_LEN)
    last: Int = Field(20, ge=1, le=4096)
    bins_per_octave: Int = Field(2, ge=1, le=16)

    @model_validator(mode="after")
    def _last(self) -> GradientInfluenceParams:
        if self.last >= self.max_tokens:
            raise ValueError(f"last must be < max_tokens ({self.max_tokens}), got {self.last}")
        return self


class RetrievalProbeParams(_Params):
    """Layer-wise retrieval probing: single-needle NIAH prompts whose value is one of 8 magic numbers
    (``easy``: 8 far-apart numbers; ``hard``: 8 near-duplicates differing in one digit); a standardised
    logistic regression on the last token's hidden state after each layer (and on the layer's own delta)
    predicts the class; 80/20 stratified split with ``seed``."""

    length: Int = Field(1024, ge=64, le=MAX_LEN)
    per_class: Int = Field(10, ge=5, le=1000)  # prompts per class and set
    sets: tuple[Literal["easy", "hard"], ...] = ("easy", "hard")
    haystack: Literal["repeat", "text"] = "repeat"
    c: Float = Field(1.0, gt=0, le=1e6)  # inverse L2 regularisation of the logistic regression
    seed: Int = Field(0, ge=0, le=2**31 - 1)

    @field_validator("sets")
    @classmethod
    def _sets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("give at least one of easy, hard")
        return tuple(sorted(set(v)))


class QKDistanceParams(_Params):
    """Q/K weight distance over training: per full-attention head, ||W_t - W_final||_F / ||W_final||_F of
    its Q slice and of its (GQA-shared) K slice, over the model directory's checkpoint series."""

    layers: tuple[Int, ...] = ()  # empty = every full-attention layer in the series


class AttributionParams(_Params):
    """Integrated Gradients (captum) over the input embeddings of one synthetic prompt, for the log-prob
    of the answer's first token; ``n_steps`` Gauss-Legendre steps. Baseline ``mean``: the mean embedding
    row at every position (default); ``zero``: zero embeddings, whose path passes through the pre-norm's
    singular point at 0, so the attributions stop summing to F(x) - F(baseline)."""

    task: Literal["passkey", "niah"] = "passkey"
    length: Int = Field(1024, ge=32, le=MAX_LEN)
    depth: Float = Field(0.5, ge=0.0, le=1.0)
    sample: Int = Field(0, ge=0, le=1000)
    haystack: Literal["repeat", "text"] = "repeat"
    n_steps: Int = Field(16, ge=2, le=512)
    baseline: Literal["mean", "zero"] = "mean"
    seed: Int = Field(0, ge=0, le=2**31 - 1)
