"""A local remote-code checkpoint in the style of the paper's released hybrids: its own config class with
``eval_sliding_window`` / ``eval_attention_sink_size`` and its own modeling code that reads them at forward
time (full-attention layers windowed to the last ``eval_sliding_window`` keys plus the first
``eval_attention_sink_size``; an independent eager implementation, not HybridScope's kernel). Weights and
layout are those of the tiny Qwen3 of :mod:`tests.hf_tiny` (SWA, full, SWA, full; window 8), so the same
weights also load into plain Qwen3 for comparison.
"""

from __future__ import annotations

from pathlib import Path

from tests import hf_tiny

MODEL_TYPE = "paper_hybrid"

CONFIG_PY = '''
from transformers import Qwen3Config


class PaperHybridConfig(Qwen3Config):
    model_type = "paper_hybrid"

    def __init__(self, eval_sliding_window=None, eval_attention_sink_size=0, **kwargs):
        super().__init__(**kwargs)
        self.eval_sliding_window = eval_sliding_window
        self.eval_attention_sink_size = eval_attention_sink_size
'''

MODELING_PY = '''
import torch
from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3ForCausalLM, apply_rotary_pos_emb

from .configuration_paper_hybrid import PaperHybridConfig


class PaperAttention(Qwen3Attention):
    """Eager attention; sliding layers keep their window, full layers obey the eval knobs."""

    def forward(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None, **kwargs):
        b, n, _ = hidden_states.shape
        shape = (b, n, -1, self.head_dim)
        q = self.q_norm(self.q_proj(hidden_states).view(shape)).transpose(1, 2)
        k = self.k_norm(self.k_proj(hidden_states).view(shape)).transpose(1, 2)
        v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        pos = torch.arange(n, device=q.device)
        dist = pos[:, None] - pos[None, :]
        allowed = dist >= 0
        if self.sliding_window is not None:
            allowed &= dist < self.sliding_window
        elif self.config.eval_sliding_window is not None:
            sinks = pos[None, :] < self.config.eval_attention_sink_size
            allowed &= (dist < self.config.eval_sliding_window) | sinks
        scores = (q @ k.transpose(-1, -2)) * self.scaling
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        out = (probs @ v).transpose(1, 2).reshape(b, n, -1)
        return self.o_proj(out), probs


class PaperHybridForCausalLM(Qwen3ForCausalLM):
    config_class = PaperHybridConfig

    def __init__(self, config):
        super().__init__(config)
        for i, layer in enumerate(self.model.layers):
            layer.self_attn = PaperAttention(config, i)
        self.post_init()
'''


def write_paper_checkpoint(path, **config) -> Path:
    """Write the remote-code checkpoint (``hf_tiny.write_remote_checkpoint``) to ``path``; ``config`` sets
    fields of config.json (e.g. the knobs)."""
    return hf_tiny.write_remote_checkpoint(path, MODEL_TYPE, CONFIG_PY, MODELING_PY, "PaperHybridConfig",
                                           "PaperHybridForCausalLM",
                                           {"eval_sliding_window": None, "eval_attention_sink_size": 0, **config})
