"""The native hybrid LM: pre-norm decoder layers whose token mixer is attention, Mamba-2 or Gated DeltaNet.

    embed -> [x + mixer(norm(x)); x + SwiGLU(norm(x))] * num_layers -> norm -> lm_head

Every mixer carries a ``plan`` (:class:`models.plan.LayerPlan`) that it obeys at forward time; the
native plans reproduce the configured model. Plans and capture points are reached through
``models.adapters.adapter_for(model)`` (:mod:`models.adapters.native`), never set here.
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
from models.plan import GDN, MAMBA2

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


class HybridPreTrainedModel(PreTrainedModel):
    """Weights init and HF plumbing shared by :class:`HybridModel` and the LM."""

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
]
