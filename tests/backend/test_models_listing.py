"""``python -m backend models``: per model ref, supported or not and which toggles apply, from configs alone.

Tiny configs of the HF attention families (:mod:`tests.hf_families`), the recurrent hybrids
(:mod:`tests.hf_hybrids`) and the paper's remote-code checkpoint are written under a temporary model
root next to weights that are not safetensors at all, with hashing and loading forbidden: the listing
works, so no weight is read.
"""

from __future__ import annotations

import json

import pytest
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from backend import cli, loading, model_refs
from backend.model_listing import TINY_REF, layers_text, rows, table
from models.plan import FULL, LAYER_LETTERS
from models.tiny import tiny_config
from tests.hf_families import BASE, FAMILIES
from tests.hf_hybrids import HYBRIDS
from tests.mystery_remote import write_mystery_checkpoint
from tests.paper_remote import write_paper_checkpoint

ATTENTION = ("llama", "qwen3", "mistral", "gemma2", "gpt_oss", "llama4_text", "cohere2")
RECURRENT = ("qwen3_next", "nemotron_h", "falcon_h1", "jamba", "lfm2", "zamba2")
ALL_TOGGLES = ["window", "pe", "receptive_field", "sinks", "skip_layers", "mask_heads"]


def _forbidden(*args, **kwargs):
    raise AssertionError("the listing read weights")


@pytest.fixture
def root(tmp_path, monkeypatch):
    r = tmp_path / "roots"
    for name in ATTENTION:
        fam = FAMILIES[name]
        CONFIG_MAPPING[fam.model_type](**{**BASE, **fam.config}).save_pretrained(r / name)
    for name in RECURRENT:
        fam = HYBRIDS[name]
        CONFIG_MAPPING[fam.model_type](**{**BASE, **fam.config}).save_pretrained(r / name)
    write_paper_checkpoint(r / "paper")
    (r / "broken").mkdir()
    (r / "broken" / "config.json").write_text("{not json")
    zoo = tmp_path / "bundle" / "zoo"
    tiny_config("SSSF").save_pretrained(zoo / "swa")  # a bundled native checkpoint
    for d in [*r.iterdir(), zoo / "swa"]:
        (d / "model.safetensors").write_bytes(b"these are not weights")
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(r))
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path / "bundle"))
    monkeypatch.delenv("HYBRIDSCOPE_TRUST_REMOTE_CODE", raising=False)
    monkeypatch.setattr(loading, "load", _forbidden)
    monkeypatch.setattr(model_refs, "_file_digest", _forbidden)  # nothing hashed either
    return r


def by_ref(listing: list[dict]) -> dict[str, dict]:
    return {r["ref"]: r for r in listing}


def test_listing_says_support_layers_and_toggles_per_family(root, monkeypatch):
    listed = by_ref(rows())
    assert list(listed) == ["zoo/swa", *sorted([*ATTENTION, *RECURRENT, "paper", "broken"]), TINY_REF]
    native = listed["zoo/swa"]
    assert native["supported"] and native["adapter"] == "HybridScope" and native["model_type"] == "hybridscope"
    assert native["layer_types"] == ["sliding_attention"] * 3 + [FULL] and native["toggles"] == ALL_TOGGLES
    for name in ATTENTION:
        row, fam = listed[name], FAMILIES[name]
        assert row["supported"] and row["model_type"] == fam.model_type and row["reason"] is None
        want = fam.config.get("layer_types") or (["sliding_attention"] * 4 if name == "mistral" else [FULL] * 4)
        assert row["layer_types"] == want
        # window / sinks / receptive-field changes on attention run through the kernel: only where it can
        assert row["toggles"] == (ALL_TOGGLES if fam.kernel else ["pe", "skip_layers", "mask_heads"]), name
        assert bool(row["kernel_gaps"]) == (not fam.kernel)
    for name in RECURRENT:
        row, fam = listed[name], HYBRIDS[name]
        assert row["supported"] and row["layer_types"] == list(fam.kinds), name
        assert {"receptive_field", "skip_layers", "window"} <= set(row["toggles"])  # rf on recurrent layers too
        assert ("pe" in row["toggles"]) == fam.rope, name
    assert listed["nemotron_h"]["adapter"] == "Nemotron-H" and listed["llama"]["adapter"] == "HF"
    assert not listed["broken"]["supported"] and listed["broken"]["reason"].startswith("config: cannot be read (")
    paper = listed["paper"]
    assert not paper["supported"] and paper["remote_code"] and "HYBRIDSCOPE_TRUST_REMOTE_CODE=1" in paper["reason"]
    assert {ref: row["status"] for ref, row in listed.items() if row["status"] != "supported"} == {
        "paper": "refused", "broken": "refused"}  # nothing runs on them (remote code not allowed, no config)
    tiny = listed[TINY_REF]
    assert tiny["supported"] and tiny["layer_types"] == list(LAYER_LETTERS.values()) and tiny["toggles"] == ALL_TOGGLES
    monkeypatch.setenv("HYBRIDSCOPE_TRUST_REMOTE_CODE", "1")  # the operator allows remote code: its config
    paper = by_ref(rows())["paper"]
    assert paper["supported"] and paper["adapter"] == "paper checkpoint" and paper["toggles"] == ALL_TOGGLES


def test_table_and_json_on_the_command_line(root, capsys):
    assert cli.main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert by_ref(listing) == by_ref(rows())
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "type", "adapter", "layers", "toggles", "notes"]
    assert len(lines) == len(listing) + 1
    cells = {r["ref"]: line for r, line in zip(listing, lines[1:], strict=True)}
    assert all(line.startswith(ref + " ") for ref, line in cells.items())
    columns = [lines[0].index(c) for c in ("type", "adapter", "layers", "toggles", "notes")]
    for line in lines[1:]:  # aligned: every row's cells start under their headers
        assert all(line[c - 2 : c] == "  " and line[c] != " " for c in columns if c < len(line)), line
        assert len(line) > columns[-2]  # a toggles cell on every row
    assert cells["qwen3"].split()[1:6] == ["qwen3", "HF", "4:", "swa×2", "full×2"]
    assert "window,pe,rf,sinks,skip,heads" in cells["qwen3"] and cells["qwen3"].endswith("heads")
    assert "5: mamba2×2 moe×1 full×1 mlp×1" in cells["nemotron_h"]
    for name in (n for n in ATTENTION if not FAMILIES[n].kernel):  # what the attention kernel lacks, if anything
        assert "pe,skip,heads  no window/sinks changes on attention layers (kernel lacks" in cells[name]
    assert "not supported: model: 'paper' runs its own code" in cells["paper"]
    assert "not supported: config: cannot be read" in cells["broken"]
    assert "any of full, swa, mamba2, gated_deltanet" in cells[TINY_REF]
    assert cells["zoo/swa"].split()[1:5] == ["hybridscope", "HybridScope", "4:", "swa×3"]


def test_layers_text():
    assert layers_text(["full_attention", "mamba2", "full_attention", "chunked_attention"]) == (
        "4: full×2 mamba2×1 chunked×1")
    assert layers_text([]) == "-"
    assert table([]) == "model  type  adapter  layers  toggles  notes"


def test_supported_plain_probes_only_and_refused_are_told_apart(tmp_path, monkeypatch, capsys):
    """One supported family (every probe, its toggles), one model whose layers the adapters do not know
    (the remote-code ``mystery_mixer`` checkpoint: the plain probes still run through its own forward) and
    one refused config (bidirectional attention: nothing runs), in the table and in --json."""
    r = tmp_path / "roots"
    fam = FAMILIES["qwen3"]
    CONFIG_MAPPING[fam.model_type](**{**BASE, **fam.config}).save_pretrained(r / "q3")
    write_mystery_checkpoint(r / "mystery")
    g3 = FAMILIES["gemma3_text"]
    bidi = CONFIG_MAPPING[g3.model_type](**{**BASE, **g3.config, "use_bidirectional_attention": True})
    bidi.save_pretrained(r / "g3b")
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(r))
    monkeypatch.setenv("HYBRIDSCOPE_PRECOMPUTED", str(tmp_path / "none"))
    monkeypatch.setenv("HYBRIDSCOPE_TRUST_REMOTE_CODE", "1")
    monkeypatch.setattr(loading, "load", _forbidden)
    monkeypatch.setattr(model_refs, "_file_digest", _forbidden)
    assert cli.main(["models", "--json"]) == 0
    listed = by_ref(json.loads(capsys.readouterr().out))
    assert list(listed) == ["g3b", "mystery", "q3", TINY_REF]
    unknown = ("config.layer_types[1]: 'mystery_mixer' layers are not supported by the HF adapter (model_type "
               "'mystery_hybrid'); supported layer types: full_attention, sliding_attention, chunked_attention")
    bidirectional = "config.use_bidirectional_attention: only causal (False) models are supported"
    keys = {"ref", "model_type", "adapter", "supported", "layer_types", "toggles", "kernel_gaps", "remote_code",
            "reason", "status", "plain_probes"}
    assert all(set(row) == keys for row in listed.values())  # the old keys kept, two added
    plain = ["token_loss", "longppl", "niah"]
    assert {k: listed["q3"][k] for k in ("supported", "status", "reason", "plain_probes", "toggles")} == {
        "supported": True, "status": "supported", "reason": None, "plain_probes": plain, "toggles": ALL_TOGGLES}
    assert {k: listed["mystery"][k] for k in ("supported", "status", "reason", "plain_probes", "toggles",
                                               "remote_code", "model_type")} == {
        "supported": False, "status": "plain_probes_only", "reason": unknown, "plain_probes": plain, "toggles": [],
        "remote_code": True, "model_type": "mystery_hybrid"}
    assert {k: listed["g3b"][k] for k in ("supported", "status", "reason", "plain_probes", "toggles")} == {
        "supported": False, "status": "refused", "reason": bidirectional, "plain_probes": [], "toggles": []}

    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    notes = lines[0].index("notes")
    cells = {line.split()[0]: line for line in lines[1:]}
    assert cells["q3"][notes:] == "" and cells["q3"].endswith("window,pe,rf,sinks,skip,heads")
    assert cells["mystery"][notes:] == (
        "remote code; plain probes only (token_loss, longppl, niah): " + unknown)
    assert cells["g3b"][notes:] == "not supported: " + bidirectional
    assert cells["mystery"].split()[1:5] == ["mystery_hybrid", "HF", "-", "-"]  # no layers, no toggles


def test_without_the_remote_code_opt_in_the_unknown_model_is_refused(tmp_path, monkeypatch):
    write_mystery_checkpoint(tmp_path / "roots" / "mystery")
    monkeypatch.setenv("HYBRIDSCOPE_MODEL_ROOTS", str(tmp_path / "roots"))
    monkeypatch.delenv("HYBRIDSCOPE_TRUST_REMOTE_CODE", raising=False)
    row = by_ref(rows())["mystery"]
    assert row["status"] == "refused" and row["plain_probes"] == [] and row["remote_code"]
    assert table([row]).splitlines()[1].endswith(
        "not supported: model: 'mystery' runs its own code (config.json auto_map: "
        "modeling_mystery_hybrid.MysteryForCausalLM); HybridScope loads remote code only when the operator sets "
        "HYBRIDSCOPE_TRUST_REMOTE_CODE=1")
