"""A local remote-code checkpoint whose layer kinds HybridScope does not know (issue 10): its own config
class with ``layer_types`` ``[sliding_attention, mystery_mixer, sliding_attention, full_attention]`` and its
own modeling code. Layer 1's mixer is a causal running mean of the values (no attention module HybridScope
could hook), and the causal LM's forward multiplies the logits by ``mystery_logit_scale`` (a loss head no
adapter knows: only the model's own forward output is right). Weights of the tiny Qwen3 of
:mod:`tests.hf_tiny` (vocab 320); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from tests import hf_tiny

MODEL_TYPE = "mystery_hybrid"
LAYER_TYPES = ["sliding_attention", "mystery_mixer", "sliding_attention", "full_attention"]

CONFIG_PY = '''
from transformers import Qwen3Config


class MysteryConfig(Qwen3Config):
    model_type = "mystery_hybrid"

    def __init__(self, layer_types=None, mystery_logit_scale=0.5, **kwargs):
        super().__init__(**kwargs)  # transformers validates layer_types words: ours is set afterwards
        self.layer_types = layer_types
        self.mystery_logit_scale = mystery_logit_scale
'''

MODELING_PY = '''
import torch
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3ForCausalLM, Qwen3Model

from .configuration_mystery_hybrid import MysteryConfig


class MysteryMixer(Qwen3Attention):
    """Causal running mean of v_proj(x), then o_proj: a mixer kind no HybridScope adapter knows."""

    def forward(self, hidden_states, **kwargs):
        v = self.v_proj(hidden_states)
        n = torch.arange(1, v.shape[1] + 1, device=v.device, dtype=v.dtype)[None, :, None]
        reps = self.config.num_attention_heads // self.config.num_key_value_heads
        return self.o_proj((v.cumsum(1) / n).repeat_interleave(reps, dim=-1)), None


class MysteryModel(Qwen3Model):
    config_class = MysteryConfig

    def __init__(self, config):
        super().__init__(config)
        for i, layer in enumerate(self.layers):
            if config.layer_types[i] == "mystery_mixer":
                layer.self_attn = MysteryMixer(config, i)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kwargs):
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        pos = torch.arange(h.shape[1], device=h.device)[None]
        args = dict(config=self.config, inputs_embeds=h, attention_mask=attention_mask, past_key_values=None,
                    position_ids=pos)
        full = create_causal_mask(**args)
        masks = {"full_attention": full, "mystery_mixer": full,
                 "sliding_attention": create_sliding_window_causal_mask(**args)}
        pe = self.rotary_emb(h, pos)
        for i, layer in enumerate(self.layers):
            h = layer(h, attention_mask=masks[self.config.layer_types[i]], position_embeddings=pe, position_ids=pos)
        return BaseModelOutputWithPast(last_hidden_state=self.norm(h))


class MysteryForCausalLM(Qwen3ForCausalLM):
    config_class = MysteryConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = MysteryModel(config)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask)
        logits = self.lm_head(out.last_hidden_state) * self.config.mystery_logit_scale
        loss = None
        if labels is not None:
            loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())
        return CausalLMOutputWithPast(loss=loss, logits=logits)
'''


def write_mystery_checkpoint(path, **config) -> Path:
    """Write the remote-code checkpoint (``hf_tiny.write_remote_checkpoint``) to ``path``; ``config`` sets
    fields of config.json."""
    return hf_tiny.write_remote_checkpoint(path, MODEL_TYPE, CONFIG_PY, MODELING_PY, "MysteryConfig",
                                           "MysteryForCausalLM",
                                           {"layer_types": LAYER_TYPES, "mystery_logit_scale": 0.5, **config})
