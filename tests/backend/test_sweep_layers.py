"""The sweep restricts the layers the *loaded* config calls full / efficient, also when config.json
spells the layout another way (Gemma 3's ``sliding_window_pattern`` instead of ``layer_types``)."""

from __future__ import annotations

import json

from backend import loading
from backend.runner import Runner
from backend.spec import RunSpec
from tests import hf_tiny
from tests.backend.test_longppl import write_docs


def test_sweep_groups_follow_the_loaded_config(tmp_path, monkeypatch):
    model = hf_tiny.build("gemma3", vocab_size=320, sliding_window_pattern=2)
    assert model.config.layer_types == ["sliding_attention", "full_attention"] * 2
    root = tmp_path / "roots"
    hf_tiny.save_checkpoint(model, root / "gemma3-pattern", drop_config_keys=("layer_types",))
    raw = json.loads((root / "gemma3-pattern" / "config.json").read_text())
    assert "layer_types" not in raw and raw["sliding_window_pattern"] == 2
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(root))
    loading.clear_cache()
    data = write_docs(tmp_path, n_docs=1, n_words=60)
    params = {"n_docs": 1, "max_tokens": 200, "trunc_len": 32, "stride": 16, "ks": [8]}
    runner = Runner(tmp_path / "store", read_only_roots=[])
    rows = runner.run(RunSpec.build(model="gemma3-pattern", probe="sweep", data=data, params=params)).tables["sweep"]
    labels = dict(zip(rows["name"], rows["label"], strict=False))
    assert labels == {"baseline": "unrestricted", "restrict_full": "rf[1,3]=8", "restrict_efficient": "rf[0,2]=8"}
    loading.clear_cache()
