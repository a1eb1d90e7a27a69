"""The native hybrid LM: pre-norm decoder layers whose token mixer is attention, Mamba-2 or Gated DeltaNet.

    embed -> [x + mixer(norm(x)); x + SwiGLU(norm(x))] * num_layers -> norm -> lm_head

Every mixer carries a ``plan`` (:class:`models.plan.LayerPlan`) that it obeys at forward time;
``set_plans`` swaps plans without touching weights, ``native_plans()`` reproduces the configured model.
No KV cache: each forward recomputes the whole sequence (see ``models.generate.greedy_generate``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from models.attention_mixer import HybridAttention
from models.config import HybridConfig
from models.layers import GatedRMSNorm, RMSNorm, ShortConv, SwiGLU, rope_cos_sin
from models.linear_mixers import GatedDeltaNetMixer, Mamba2Mixer, init_decay_params
from models.plan import ATTENTION_KINDS, GDN, MAMBA2, LayerPlan, ModelInfo
from models.plan import native_plans as _native_plans

_MIXERS = {MAMBA2: Mamba2Mixer, GDN: GatedDeltaNetMixer}


class HybridDecoderLayer(nn.Module):
    """Pre-norm block: ``h = x + mixer(norm1(x)); out = h + mlp(norm2(h))``."""

    def __init__(self, config: HybridConfig, layer_idx: int) -> None:
        super().__init__()
        kind = config.layer_types[layer_idx]
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mixer = _MIXERS.get(kind, HybridAttention)(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


def check_plans(info: ModelInfo, plans: list[LayerPlan]) -> None:
    """Raise ``ValueError`` naming ``plans[i].<field>`` unless ``plans`` fit the model ``info`` describes."""
    if len(plans) != info.num_layers:
        raise ValueError(f"plans: got {len(plans)} plans for a model with {info.num_layers} layers")
    for i, p in enumerate(plans):
        if not isinstance(p, LayerPlan):
            raise ValueError(f"plans[{i}]: expected a LayerPlan, got {type(p).__name__}")
        kind = info.layer_types[i]
        if p.kind != kind:
            raise ValueError(f"plans[{i}].kind: layer {i} is {kind!r}, got {p.kind!r}")
        bad_heads = [h for h in p.masked_heads if not 0 <= h < info.num_heads[i]]
        if bad_heads:
            raise ValueError(f"plans[{i}].masked_heads: {bad_heads} not in 0..{info.num_heads[i] - 1}")
        if p.sinks < 0:
            raise ValueError(f"plans[{i}].sinks: must be >= 0, got {p.sinks}")
        if kind in ATTENTION_KINDS:
            if p.pe not in ("rope", "nope"):
                raise ValueError(f"plans[{i}].pe: attention layers take 'rope' or 'nope', got {p.pe!r}")
            if p.window is not None and p.window < 1:
                raise ValueError(f"plans[{i}].window: must be a positive int or None, got {p.window}")
        else:
            if p.window is not None or p.pe is not None:
                raise ValueError(f"plans[{i}].window/pe: recurrent layer {i} ({kind}) takes None for both")
            k = p.receptive_field
            if k is not None and k < info.conv_kernel:
                raise ValueError(
                    f"plans[{i}].receptive_field: {k} < conv_kernel ({info.conv_kernel}); use >= "
                    f"{info.conv_kernel} or None"
                )


class HybridPreTrainedModel(PreTrainedModel):
    """Weights init, HF plumbing and the plan API shared by :class:`HybridModel` and the LM."""

    config_class = HybridConfig
    config: HybridConfig
    base_model_prefix = "model"
    _no_split_modules = ["HybridDecoderLayer"]
    supports_gradient_checkpointing = False

    def _init_weights(self, module: nn.Module) -> None:
        """Linear/Embedding ~ N(0, initializer_range), norms = 1, ShortConv kaiming-uniform,
        Mamba-2 / GDN decay parameters as in Mamba-2 (A ~ U[1,16], dt ~ logU[1e-3, 0.1]), D = 1."""
        super()._init_weights(module)
        if isinstance(module, ShortConv):
            init.kaiming_uniform_(module.weight, a=5**0.5)
            init.zeros_(module.bias)
        elif isinstance(module, (RMSNorm, GatedRMSNorm)):
            init.ones_(module.weight)
        elif isinstance(module, (Mamba2Mixer, GatedDeltaNetMixer)):
            init_decay_params(module.A_log, module.dt_bias)
            if isinstance(module, Mamba2Mixer):
                init.ones_(module.D)

    # ------------------------------------------------------------------ plan API
    def _mixers(self) -> list[nn.Module]:
        return [layer.mixer for layer in self.base_model.layers]

    def model_info(self) -> ModelInfo:
        """Layer kinds, heads per layer, native windows / pe and conv width (for the ablation engine)."""
        c = self.config
        n = c.num_hidden_layers
        heads = tuple(
            c.num_attention_heads if c.layer_types[i] in ATTENTION_KINDS else c.linear_num_heads
            for i in range(n)
        )
        return ModelInfo(
            layer_types=tuple(c.layer_types),
            num_heads=heads,
            windows=tuple(c.window_of(i) for i in range(n)),
            pe=tuple(c.pe_of(i) for i in range(n)),
            conv_kernel=c.conv_kernel,
        )

    def native_plans(self) -> list[LayerPlan]:
        """Plans that reproduce the configured model exactly."""
        return _native_plans(self.model_info())

    def current_plans(self) -> list[LayerPlan]:
        return [m.plan for m in self._mixers()]

    def set_plans(self, plans: list[LayerPlan]) -> None:
        """Validate (all before any change) and install one plan per layer. Weights are untouched."""
        plans = list(plans)
        check_plans(self.model_info(), plans)
        for mixer, plan in zip(self._mixers(), plans, strict=True):
            mixer.plan = plan


class HybridModel(HybridPreTrainedModel):
    """Embedding + decoder layers + final norm; returns the last hidden state [B, L, hidden]."""

    def __init__(self, config: HybridConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(HybridDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("input_ids/inputs_embeds: pass exactly one of them")
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        positions = torch.arange(h.shape[1], device=h.device)
        cos, sin = rope_cos_sin(positions, self.config.head_dim, float(self.config.rope_theta))
        cos, sin = cos.to(h.dtype), sin.to(h.dtype)
        all_hidden = [h] if output_hidden_states else None
        for layer in self.layers:
            h = layer(h, cos, sin)
            if all_hidden is not None:
                all_hidden.append(h)
        h = self.norm(h)
        if all_hidden is not None:
            all_hidden[-1] = h
        return BaseModelOutputWithPast(
            last_hidden_state=h, hidden_states=tuple(all_hidden) if all_hidden is not None else None
        )


class HybridForCausalLM(HybridPreTrainedModel, GenerationMixin):
    """Causal LM head on :class:`HybridModel` (``lm_head`` tied to the embedding when configured)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: HybridConfig) -> None:
        super().__init__(config)
        self.model = HybridModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        """No KV cache: tells ``generate`` not to build a DynamicCache (it cannot hold recurrent layers)."""
        return False

    def prepare_inputs_for_generation(
        self, input_ids: torch.LongTensor, attention_mask=None, **kwargs
    ) -> dict:
        """No cache: every generation step re-reads the full sequence."""
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits [B, L, vocab] (last ``logits_to_keep`` positions if > 0); next-token loss if ``labels``.

        ``attention_mask`` is accepted for API compatibility only: padding is not supported, so any
        zero in it raises ``ValueError``. Labels use -100 for ignored positions and are shifted inside.
        """
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError(
                "attention_mask: padding (zeros) is not supported by the native hybrid; pass unpadded rows"
            )
        out = self.model(
            input_ids=input_ids, inputs_embeds=inputs_embeds, output_hidden_states=output_hidden_states
        )
        h = out.last_hidden_state
        if logits_to_keep and labels is None:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1).to(logits.device),
                ignore_index=-100,
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=out.hidden_states)


# Importing this module registers the family with the Auto classes (see models/__init__.py).
AutoConfig.register(HybridConfig.model_type, HybridConfig, exist_ok=True)
AutoModel.register(HybridConfig, HybridModel, exist_ok=True)
AutoModelForCausalLM.register(HybridConfig, HybridForCausalLM, exist_ok=True)

__all__ = [
    "HybridConfig",
    "HybridPreTrainedModel",
    "HybridModel",
    "HybridDecoderLayer",
    "HybridForCausalLM",
    "check_plans",
]
