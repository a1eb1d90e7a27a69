"""The one model interface: every model, native or HF, is reached through a :class:`ModelAdapter`.

``adapter_for(model)`` (``models.adapters``) picks the adapter class registered for
``model.config.model_type``. An adapter is a light view over the model (make one whenever needed);
what must outlive a call lives on the model or in :data:`_STATE`, a map weakly keyed by the model
(nothing is keyed by ``id()``, which is reused after garbage collection):

* the plans in force inside ``with adapter.apply(plans):`` (at most one apply per model: the one
  nesting guard of the project; combine ablations with ``Ablation.merge`` instead),
* the layers being captured (one capture per layer at a time: the one capture guard).

What every adapter offers (subclasses fill in the family specifics, the ``_`` methods):

* ``info()``: layer types (from the *loaded* config), heads, native windows / PE, conv width,
* ``native_plans()`` / ``current_plans()``,
* ``apply(plans)``: the model follows ``plans`` inside the block and is exactly restored after,
* ``capture(names, layers, on_record)``: q / k / mixer_out of chosen layers during forwards,
* inside either, forwards of the model and its decoder keep no KV cache unless the caller asks for one
  (:mod:`models.adapters.no_cache`: the one place HybridScope sets ``use_cache=False``),
* ``attention_scale(layer)``, ``attention_module(layer)``, ``decoder()`` and ``lm_head()`` (the
  loss head: probes run the decoder once and the head on the positions they need).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from torch import nn

from models.ablation_text import AblationError
from models.adapters.no_cache import no_kv_cache
from models.capture import CAPTURE_NAMES, Capture
from models.plan import ATTENTION_KINDS, LayerPlan, ModelInfo, check_plans, native_plans

NESTING = (
    "ablation: an ablation is already applied to this model; nesting is not supported; allowed: one "
    "apply_ablation(model, outer.merge(inner)) instead"
)


class UnsupportedModel(ValueError):
    """The model (its config) has no adapter support for what was asked; the message names what is missing."""


@dataclass
class ModelState:
    """What HybridScope has changed on one model right now."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    plans: tuple[LayerPlan, ...] | None = None  # inside apply(): the plans in force
    captured: set[int] = field(default_factory=set)  # layers inside a capture()
    extra: dict = field(default_factory=dict)  # adapter-family bookkeeping (e.g. switched configs)


_STATE: weakref.WeakKeyDictionary[nn.Module, ModelState] = weakref.WeakKeyDictionary()
_STATE_LOCK = threading.Lock()
# model_type -> adapter class (filled by the @register decorator of each family file)
REGISTRY: dict[str, type[ModelAdapter]] = {}


def model_state(model: nn.Module) -> ModelState:
    """The state record of ``model`` (created on first use; dropped with the model)."""
    with _STATE_LOCK:
        st = _STATE.get(model)
        if st is None:
            st = _STATE[model] = ModelState()
        return st


def register(cls: type[ModelAdapter]) -> type[ModelAdapter]:
    """Class decorator: make ``cls`` the adapter for each of its ``model_types``."""
    for model_type in cls.model_types:
        REGISTRY[model_type] = cls
    return cls


class ModelAdapter:
    """Inference-time plans, capture points and structure of one model family."""

    model_types: ClassVar[tuple[str, ...]] = ()
    family: ClassVar[str] = "?"

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.config = model.config
        self.check_supported()

    # ---- family hooks (override)
    @classmethod
    def refusal_for(cls, config) -> str | None:
        """The one line saying why no probe can run a model of this config at all (not even the plain
        probes through its own forward), from the config alone; None when it can run."""
        return None

    def check_supported(self) -> None:
        """Raise :class:`UnsupportedModel` for configurations this adapter refuses (:meth:`refusal_for`)."""
        reason = self.refusal_for(self.config)
        if reason is not None:
            raise UnsupportedModel(reason)

    @classmethod
    def info_for(cls, config) -> ModelInfo:
        """Layer types, heads, native windows / PE and conv width, from a config alone (so support is
        known before weights load); raises :class:`UnsupportedModel` naming what is missing."""
        raise NotImplementedError

    @classmethod
    def kernel_gaps(cls, config) -> list[str]:
        """What this family's attention does that HybridScope's attention kernel does not (window / sinks /
        receptive-field changes on attention layers run through that kernel); empty = nothing."""
        return []

    @classmethod
    def check_plans_for(cls, config, info: ModelInfo, plans: Sequence[LayerPlan]) -> None:
        """Refuse, from the config alone (before any weight loads), plans this family cannot follow:
        here window / sinks changes on attention layers when :meth:`kernel_gaps` is not empty (``apply``
        refuses them too). Raises :class:`UnsupportedModel` (one line)."""
        gaps = cls.kernel_gaps(config)
        changed = [i for i, p in enumerate(plans) if p.is_attention and (
            p.window != info.windows[i] or (p.window is not None and p.sinks > 0))]
        if gaps and changed:
            raise UnsupportedModel(
                f"ablation: window / sinks / receptive-field changes on attention layers ({changed[0]}"
                f"{', ...' if len(changed) > 1 else ''}) of this {cls.family} model need {', '.join(gaps)}, which "
                "HybridScope's attention kernel does not have yet; allowed here: pe, skip_layers, mask_heads"
            )

    @classmethod
    def toggles_for(cls, config, info: ModelInfo) -> list[str]:
        """The ablation fields that apply to this model."""
        attention = any(k in ATTENTION_KINDS for k in info.layer_types)
        recurrent = any(k not in ATTENTION_KINDS for k in info.layer_types)
        kernel = attention and not cls.kernel_gaps(config)
        out = ["window"] if kernel else []
        out += ["pe"] if attention else []
        out += ["receptive_field"] if kernel or recurrent else []
        out += ["sinks"] if kernel else []
        return out + ["skip_layers", "mask_heads"]

    def info(self) -> ModelInfo:
        """:meth:`info_for` of the loaded model's config."""
        return self.info_for(self.config)

    def layers(self) -> nn.ModuleList:
        """The decoder layers, in order."""
        raise NotImplementedError

    def attention_module(self, i: int) -> nn.Module:
        """The module of layer ``i`` whose ``q``/``k`` a capture records (attention layers)."""
        raise NotImplementedError

    def decoder(self) -> nn.Module:
        """The model without its LM head: ``decoder()(input_ids=...).last_hidden_state``."""
        return self.model.get_decoder()

    def forward_modules(self) -> list[nn.Module]:
        """The modules HybridScope calls forwards of: the model and its decoder (:func:`no_kv_cache`)."""
        try:
            return [self.model, self.decoder()]
        except AttributeError:  # no decoder of its own (a stand-in model): the model is called whole
            return [self.model]

    def lm_head(self) -> nn.Module:
        """The LM head module: hidden states of the final norm -> raw logits."""
        return self.model.get_output_embeddings()

    def logits(self, hidden):
        """The loss head: what the model's own forward turns final-norm hidden states into (the LM head
        plus any scaling / softcapping the family applies)."""
        return self.lm_head()(hidden)

    def _apply(self, plans: Sequence[LayerPlan], info: ModelInfo, stack: contextlib.ExitStack, **options) -> None:
        """Make the model follow ``plans`` (validated); register every undo step on ``stack``."""
        raise NotImplementedError

    def _capture(self, cap: Capture, stack: contextlib.ExitStack) -> None:
        """Start recording into ``cap`` (layers and names checked); register the undo on ``stack``."""
        raise NotImplementedError

    # ---- plans
    def native_plans(self) -> list[LayerPlan]:
        return native_plans(self.info())

    def current_plans(self) -> list[LayerPlan]:
        """The plans the model follows now: those of the active apply(), else the native ones."""
        active = model_state(self.model).plans
        return list(active) if active is not None else self.native_plans()

    @contextlib.contextmanager
    def apply(self, plans: Sequence[LayerPlan], **options) -> Iterator[None]:
        """The model follows ``plans`` inside the block; everything is restored on exit (also on error).

        Plans are validated (:func:`models.plan.check_plans`) before the model changes; a second
        apply on a model that is inside one raises :class:`AblationError`. Forwards inside the block keep
        no KV cache unless the caller passes ``use_cache`` / ``past_key_values`` (:func:`no_kv_cache`).
        """
        plans = tuple(plans)
        info = self.info()
        check_plans(info, plans)
        state = model_state(self.model)
        with state.lock:
            if state.plans is not None:
                raise AblationError(NESTING)
            state.plans = plans
        try:
            with contextlib.ExitStack() as stack:
                self._apply(plans, info, stack, **options)
                no_kv_cache(stack, self.forward_modules())
                yield
        finally:
            with state.lock:
                state.plans = None

    # ---- capture
    @contextlib.contextmanager
    def capture(
        self, names: Iterable[str] = CAPTURE_NAMES, layers: Iterable[int] | None = None, on_record=None
    ) -> Iterator[Capture]:
        """Record ``names`` at ``layers`` (None = all) for forwards run inside the block.

        With ``on_record(layer_idx, name, tensor)`` tensors are streamed to the callback as each layer
        produces them and not kept. Enter any ablation (``apply``) first, then the capture. Forwards
        inside the block keep no KV cache unless the caller asks for one (:func:`no_kv_cache`).
        """
        names = tuple(names)
        bad = [n for n in names if n not in CAPTURE_NAMES]
        if bad or not names:
            raise ValueError(f"names: {bad or names!r} not allowed; choose from {list(CAPTURE_NAMES)}")
        n = self.info().num_layers
        layers = tuple(range(n)) if layers is None else tuple(layers)
        missing = [i for i in layers if not isinstance(i, int) or not 0 <= i < n]
        if missing:
            raise ValueError(f"layers: {missing} out of range; the model has layers 0..{n - 1}")
        state = model_state(self.model)
        with state.lock:
            busy = sorted(set(layers) & state.captured)
            if busy:
                raise RuntimeError(f"layers: {busy} are already being captured (nested capture on the same layers)")
            state.captured.update(layers)
        try:
            cap = Capture(names, layers, on_record)
            with contextlib.ExitStack() as stack:
                self._capture(cap, stack)
                no_kv_cache(stack, self.forward_modules())
                yield cap
        finally:
            with state.lock:
                state.captured.difference_update(layers)

    # ---- structure
    def attention_scale(self, layer: int) -> float:
        """Softmax scale of attention layer ``layer`` (what multiplies q.k before the softmax)."""
        info = self.info()
        if not isinstance(layer, int) or not 0 <= layer < info.num_layers:
            raise ValueError(f"layer: {layer!r} out of range; the model has layers 0..{info.num_layers - 1}")
        module = self.attention_module(layer)
        scale = getattr(module, "scaling", None)
        return float(scale) if scale is not None else float(module.head_dim) ** -0.5
