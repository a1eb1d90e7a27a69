"""HybridScope models: the native hybrid family, the ablation plans it obeys, HF adapters.

Importing this package registers ``HybridConfig`` / ``HybridForCausalLM`` (model_type
"hybridscope") with ``AutoConfig`` / ``AutoModel`` / ``AutoModelForCausalLM``.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from models.config import HybridConfig
from models.modeling import HybridForCausalLM, HybridModel

AutoConfig.register(HybridConfig.model_type, HybridConfig, exist_ok=True)
AutoModel.register(HybridConfig, HybridModel, exist_ok=True)
AutoModelForCausalLM.register(HybridConfig, HybridForCausalLM, exist_ok=True)

__all__ = ["HybridConfig", "HybridModel", "HybridForCausalLM"]
