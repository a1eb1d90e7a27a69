"""LongPPL over training on the long held-out split, with one evaluator's key tokens (issue 12, finding 1).

The site corpus holds out whole long documents (``zoo.site_corpus``: ``longeval_tokens.npy``, ~1.6M
tokens); here they are cut into consecutive ``seq_len`` windows (the training context; a remainder
shorter than a window is dropped). LongPPL as in the longppl probe (Fang et al.; the maths in
``backend.probes.longppl_math``): the *evaluator* marks key tokens in every window (log p_long -
log p_short > ALPHA and log p_long > BETA, short context ``trunc_len`` tokens slid by ``stride``), and
every model is then scored on those same tokens: ``longppl`` = exp(mean NLL over the key tokens),
``ppl`` = exp(mean NLL over every target of the windows), both with the full window as context.

``python -m zoo longeval --data SITE --roots WORK... --evaluator DIR --out longeval.json`` scores every
evaluation checkpoint of every variant under the train-all roots (``runs/<v>/checkpoints/step-*``,
bf16 exports) and the final export (``zoo/<v>``), so each variant gets a LongPPL curve over training
even though the evaluator finishes training with it, not before it. ``--keys`` reuses the key tokens
of an earlier call (``--keys-out``), so later rounds score on exactly the same tokens.

Finding 2 (receptive-field restriction, :func:`score_restricted` / :func:`run_restricted`)::

    python -m zoo longeval --data SITE --models DIR... --keys keys.npz --restrict-ks 256 \
        [--restrict full efficient] [--max-windows N] --out restrict.json

scores the named model directories (final exports; each keyed by its directory name) unrestricted and
with the *full-attention* layers, or the *efficient* layers (SWA and recurrent), restricted to a receptive
field of k tokens, for every k of ``--restrict-ks``. The restriction is the ablation engine's, exactly as
the sweep probe applies it (``backend.probes.sweep.groups``: ``Ablation(receptive_field={<layers>: k})``
through ``models.apply.apply_ablation``): an attention layer runs with window min(native window, k), a
recurrent layer with its state restarted so that nothing older than k tokens reaches its output. A
group the model lacks (``full`` has no efficient layers) is left out of its record. Windows: the first
``--max-windows`` of the split (all by default) with their key tokens from ``--keys`` (which must cover
every window of the split; sliced to the first N) or, with ``--evaluator``, key tokens found on them.
The output JSON: the keys' meta, ``windows`` / ``n_key`` actually used, ``ks``, ``restrict`` and
``models.<name>`` = {path, layer_types, groups (the selectors of each group), unrestricted: {ppl,
longppl, n_key, n_targets, seconds}, restricted: {group: {str(k): {the same, ablation (text form),
longppl_ratio, ppl_ratio (restricted / unrestricted), noop}}}}; it is rewritten after every model.
A restriction whose resolved plans are the unrestricted ones (``backend.ablation_match.same_effect``: an
SWA-128 layer restricted to 256 keeps its window 128) is not run again: it gets the unrestricted numbers
and ``noop: true``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.formation import ALPHA, BETA, _autocast, attention_backend
from zoo.site_corpus import LONGEVAL_DOC_ENDS_FILE, LONGEVAL_TOKENS_FILE


def windows(data_dir: Path | str, seq_len: int, max_windows: int | None = None) -> list[np.ndarray]:
    """Consecutive ``seq_len``-token windows of every long held-out document, in document order."""
    data_dir = Path(data_dir)
    if not (data_dir / LONGEVAL_TOKENS_FILE).is_file():
        raise FileNotFoundError(f"data: {data_dir} has no {LONGEVAL_TOKENS_FILE} (build it with "
                                f"`python -m zoo build-data --sources site`)")
    toks = np.load(data_dir / LONGEVAL_TOKENS_FILE)
    ends = np.load(data_dir / LONGEVAL_DOC_ENDS_FILE)
    out: list[np.ndarray] = []
    for a, b in zip([0, *ends[:-1].tolist()], ends.tolist(), strict=True):
        out += [toks[s : s + seq_len].astype(np.int64) for s in range(a, b - seq_len + 1, seq_len)]
    out = out[:max_windows] if max_windows is not None else out
    if not out:
        raise ValueError(f"data: the long held-out split of {data_dir} has no window of {seq_len} tokens")
    return out


def _nll(model: torch.nn.Module, wins: list[np.ndarray], device: torch.device, batch: int) -> list[np.ndarray]:
    from backend.forward import token_nll

    out = []
    for i in range(0, len(wins), batch):
        x = torch.tensor(np.stack(wins[i : i + batch]), device=device)
        out += list(token_nll(model, x).float().cpu().numpy().astype(np.float64))
    return out


@torch.no_grad()
def evaluator_keys(model: torch.nn.Module, wins: list[np.ndarray], trunc_len: int, stride: int,
                   device: torch.device, batch: int = 8) -> list[np.ndarray]:
    """Per window, the target indices (into token_nll's [L-1] axis) that are key tokens."""
    from backend.probes.longppl_math import key_mask, short_logprobs

    model.eval()
    keys = []
    with attention_backend(model, "sdpa"), _autocast(device):
        nlls = _nll(model, wins, device, batch)
        for w, nll in zip(wins, nlls, strict=True):
            short = short_logprobs(model, torch.from_numpy(np.asarray(w)[None]).to(device), trunc_len, stride)
            keys.append(np.flatnonzero(key_mask(-nll, short, ALPHA, BETA)).astype(np.int32))
    return keys


@torch.no_grad()
def score(model: torch.nn.Module, wins: list[np.ndarray], keys: list[np.ndarray], device: torch.device,
          batch: int = 8, ablation: Any = None) -> dict[str, Any]:
    """{ppl, longppl, n_key, n_targets} of ``model`` on the windows and the evaluator's key tokens, with
    ``ablation`` (a :class:`models.ablation.Ablation`, its text form, or None) applied."""
    from models.apply import apply_ablation

    model.eval()
    with attention_backend(model, "sdpa"), _autocast(device), apply_ablation(model, ablation):
        nlls = _nll(model, wins, device, batch)
    total = sum(float(n.sum()) for n in nlls)
    n_targets = sum(len(n) for n in nlls)
    key_sum = sum(float(n[k].sum()) for n, k in zip(nlls, keys, strict=True))
    n_key = sum(len(k) for k in keys)
    return {"ppl": math.exp(total / n_targets), "longppl": math.exp(key_sum / n_key) if n_key else None,
            "n_key": n_key, "n_targets": n_targets}


GROUPS = ("full", "efficient")


def restriction_groups(model: torch.nn.Module) -> dict[str, list[str]]:
    """group ("full" / "efficient") -> the receptive-field selectors of its layers (empty: no such layer),
    exactly the sweep probe's groups."""
    from backend.probes.sweep import groups
    from models.adapters import adapter_for

    return groups(adapter_for(model).info())


def restriction(model: torch.nn.Module, group: str, k: int):
    """The :class:`models.ablation.Ablation` restricting ``group``'s layers of ``model`` to receptive field
    ``k`` (the sweep probe's ``rf[<layers>]=k``), or None when the model has no such layer."""
    from models.ablation import Ablation

    if group not in GROUPS:
        raise ValueError(f"restrict: {group!r} is not a layer group; allowed: {', '.join(GROUPS)}")
    selectors = restriction_groups(model)[group]
    return Ablation(receptive_field=dict.fromkeys(selectors, k)) if selectors else None


def score_restricted(model: torch.nn.Module, wins: list[np.ndarray], keys: list[np.ndarray],
                     device: torch.device, group: str | None, k: int | None, batch: int = 8) -> dict[str, Any]:
    """:func:`score` with ``group``'s layers restricted to receptive field ``k`` (``group`` None:
    unrestricted); adds ``ablation`` (the text form; "" unrestricted). ValueError when the model has
    no layer of ``group``."""
    ab = None
    if group is not None:
        if k is None:
            raise ValueError("restrict: a layer group needs a receptive field k")
        ab = restriction(model, group, k)
        if ab is None:
            raise ValueError(f"restrict: the model has no {group} layers ({', '.join(model.config.layer_types)})")
    return {**score(model, wins, keys, device, batch, ablation=ab), "ablation": ab.to_text() if ab else ""}


def keys_sha256(keys: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for i, k in enumerate(keys):
        h.update(f"{i}:".encode())
        h.update(np.asarray(k, dtype="<i4").tobytes())
    return h.hexdigest()


def save_keys(path: Path, keys: list[np.ndarray], meta: dict) -> None:
    np.savez_compressed(path, counts=np.asarray([len(k) for k in keys], dtype="<i4"),
                        flat=np.concatenate(keys).astype("<i4") if keys else np.zeros(0, "<i4"),
                        meta=np.asarray(json.dumps(meta)))


def load_keys(path: Path) -> tuple[list[np.ndarray], dict]:
    z = np.load(path)
    ends = np.cumsum(z["counts"])
    flat = z["flat"]
    return [flat[a:b] for a, b in zip([0, *ends[:-1].tolist()], ends.tolist(), strict=True)], json.loads(str(z["meta"]))


def load_model(path: Path, device: torch.device, linear_backend: str) -> torch.nn.Module:
    from models.modeling import HybridForCausalLM
    from zoo.train import set_backends

    model = HybridForCausalLM.from_pretrained(str(path), torch_dtype=torch.float32).to(device)
    set_backends(model, "sdpa", linear_backend)
    return model


def checkpoints_of(root: Path, variant: str) -> list[tuple[Path, int | None]]:
    """(model directory, step) of every kept evaluation checkpoint of ``variant``, then its final export
    (step None: read from its summary by the caller)."""
    ck = sorted((root / "runs" / variant / "checkpoints").glob("step-*"))
    out: list[tuple[Path, int | None]] = [(p, int(p.name.split("-")[1])) for p in ck if (p / "config.json").is_file()]
    final = root / "zoo" / variant
    if (final / "config.json").is_file():
        out.append((final, None))
    return out


def _steps_tokens(root: Path, variant: str) -> dict[int, int]:
    f = root / "runs" / variant / "formation.json"
    recs = json.loads(f.read_text(encoding="utf-8"))["records"] if f.is_file() else []
    return {int(r["step"]): int(r["tokens"]) for r in recs}


def run(data: Path, roots: list[Path], out: Path, evaluator: Path | None, keys_in: Path | None,
        keys_out: Path | None, seq_len: int, trunc_len: int, stride: int, device: torch.device,
        linear_backend: str, max_windows: int | None = None) -> dict:
    t0 = time.perf_counter()
    wins = windows(data, seq_len, max_windows)
    if keys_in is not None:
        keys, meta = load_keys(keys_in)
        if len(keys) != len(wins):
            raise ValueError(f"keys: {keys_in} has {len(keys)} windows, the data {len(wins)}")
    else:
        if evaluator is None:
            raise ValueError("evaluator: name a model directory or pass --keys")
        ev = load_model(evaluator, device, linear_backend)
        keys = evaluator_keys(ev, wins, trunc_len, stride, device)
        meta = {"evaluator": str(evaluator), "trunc_len": trunc_len, "stride": stride, "seq_len": seq_len,
                "alpha": ALPHA, "beta": BETA, "windows": len(wins)}
        del ev
    meta["keys_sha256"] = keys_sha256(keys)
    meta["n_key"] = int(sum(len(k) for k in keys))
    if keys_out is not None:
        save_keys(keys_out, keys, meta)
    result: dict[str, Any] = {**meta, "variants": {}}
    prev = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    if prev.get("keys_sha256") == meta["keys_sha256"]:
        result["variants"] = prev.get("variants", {})
    for root in roots:
        for vdir in sorted((root / "runs").glob("*")):
            v = vdir.name
            tokens = _steps_tokens(root, v)
            recs = []
            for path, step in checkpoints_of(root, v):
                if step is None:
                    step = max(tokens) if tokens else -1  # the final export: the last formation record
                    if recs and recs[-1]["step"] == step:
                        continue
                m = load_model(path, device, linear_backend)
                rec = {"step": step, "tokens": tokens.get(step), **score(m, wins, keys, device)}
                recs.append(rec)
                print(f"[longeval] {v} step {step}: ppl {rec['ppl']:.3f} longppl {rec['longppl']} "
                      f"({rec['n_key']} key tokens)", flush=True)
                del m
            result["variants"][v] = recs
    result["seconds"] = round(time.perf_counter() - t0, 1)
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def run_restricted(data: Path, models: list[Path], out: Path, ks: list[int], restrict: list[str],
                   keys_in: Path | None, evaluator: Path | None, seq_len: int, trunc_len: int, stride: int,
                   device: torch.device, linear_backend: str, max_windows: int | None = None,
                   batch: int = 8) -> dict:
    """Finding 2: every model of ``models`` unrestricted and with each group of ``restrict`` restricted to
    each k of ``ks`` (see the module docstring for the output); writes ``out`` after every model."""
    from backend.ablation_match import same_effect
    from models.ablation import Ablation
    from models.adapters import adapter_for

    t0 = time.perf_counter()
    bad = [g for g in restrict if g not in GROUPS]
    if bad or not restrict:
        raise ValueError(f"restrict: {bad or restrict!r}; allowed: one or more of {', '.join(GROUPS)}")
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"restrict-ks: {ks!r}; allowed: one or more integers >= 1")
    names = [Path(m).name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"models: directory names must be distinct (they key the output): {names}")
    wins = windows(data, seq_len, max_windows)
    if keys_in is not None:
        keys, meta = load_keys(keys_in)
        n_all = len(windows(data, seq_len))
        if len(keys) != n_all or meta.get("seq_len", seq_len) != seq_len:
            raise ValueError(f"keys: {keys_in} has {len(keys)} windows of {meta.get('seq_len')} tokens, the data "
                             f"{n_all} of {seq_len}")
        keys = keys[: len(wins)]
        meta = {**meta, "keys": str(keys_in), "windows_total": n_all}
    elif evaluator is not None:
        ev = load_model(evaluator, device, linear_backend)
        keys = evaluator_keys(ev, wins, trunc_len, stride, device)
        meta = {"evaluator": str(evaluator), "trunc_len": trunc_len, "stride": stride, "seq_len": seq_len,
                "alpha": ALPHA, "beta": BETA}
        del ev
    else:
        raise ValueError("keys: pass --keys (an earlier call's key tokens) or --evaluator")
    result: dict[str, Any] = {**meta, "data": str(data), "windows": len(wins),
                              "keys_sha256_used": keys_sha256(keys), "n_key": int(sum(len(k) for k in keys)),
                              "ks": list(ks), "restrict": list(restrict), "device": str(device),
                              "linear_backend": linear_backend, "models": {}}
    for path, name in zip(models, names, strict=True):
        m = load_model(Path(path), device, linear_backend)
        groups = restriction_groups(m)
        info = adapter_for(m).info()
        t = time.perf_counter()
        base = score_restricted(m, wins, keys, device, None, None, batch)
        base["seconds"] = round(time.perf_counter() - t, 1)
        rec: dict[str, Any] = {"path": str(path), "layer_types": list(m.config.layer_types), "groups": groups,
                               "unrestricted": base, "restricted": {}}
        print(f"[longeval] {name} unrestricted: ppl {base['ppl']:.4f} longppl {base['longppl']} "
              f"({base['seconds']} s)", flush=True)
        for g in restrict:
            if not groups[g]:
                print(f"[longeval] {name}: no {g} layers, skipped", flush=True)
                continue
            rec["restricted"][g] = {}
            for k in ks:
                t = time.perf_counter()
                ab = restriction(m, g, k)
                if same_effect(ab, Ablation(), info):  # e.g. SWA-128 layers restricted to 256: same plans
                    r = {**base, "ablation": ab.to_text(), "noop": True}
                else:
                    r = {**score_restricted(m, wins, keys, device, g, k, batch), "noop": False}
                r.update(seconds=round(time.perf_counter() - t, 1), longppl_ratio=_ratio(r["longppl"], base["longppl"]),
                         ppl_ratio=_ratio(r["ppl"], base["ppl"]))
                rec["restricted"][g][str(k)] = r
                print(f"[longeval] {name} {r['ablation']}: ppl {r['ppl']:.4f} (x{r['ppl_ratio']:.4f}) longppl "
                      f"{r['longppl']} (x{r['longppl_ratio']}) ({r['seconds']} s)", flush=True)
        result["models"][name] = rec
        del m
        result["seconds"] = round(time.perf_counter() - t0, 1)
        out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result
