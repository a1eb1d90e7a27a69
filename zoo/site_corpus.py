"""The zoo's *site* corpus: a carried ``build-data`` corpus (tokenizer, val/test splits, training
documents) extended, on the machine that trains, with the sources of that machine's installed Python
(``python -m zoo build-data --sources site --base .data/zoo --out DIR``).

Nothing is retrained: the base's tokenizer and val/test splits are copied unchanged (their sha256 checked
against the base manifest first), so evaluations stay comparable with every earlier round. The training
token stream is, in this order: the base's natural training documents (its file order), then every file
of :mod:`zoo.site_sources` (stdlib, then the allowed distributions by name, paths sorted) that is not

- a held-out document: same id as a val/test document (any version of that file: ``heldout_id``), the
  same text (``heldout_duplicate``), or at least half of its lines of >= 20 characters found in the
  held-out documents (``heldout_overlap``);
- a base document (same id: ``in_base``) or an exact duplicate of an earlier document (``duplicate``);

each document's tokens followed by <|endoftext|>. Files are read, checked and tokenized in ``workers``
processes (chunks of ~4 MB in a fixed order, results consumed in that order, so the stream does not
depend on the number of workers). Written to ``out``:

  train_tokens.npy        uint16 token stream (memory-mapped by zoo.data; rows = consecutive seq_len slices)
  train_doc_ends.npy      int64 end offset of each document in the stream
  longeval_tokens.npy     uint16 tokens of the long held-out split (LONGEVAL_*: whole site documents of
  longeval_doc_ends.npy   >= 4,096 tokens, chosen by text hash, left out of the stream; LongPPL's
  longeval_docs.json      evaluation documents, zoo.longeval), their end offsets and id/source/licence
  tokenizer/, val.jsonl, test.jsonl, train.jsonl.gz   copies of the base (synthetic rows and evaluations
                          read them as before)
  manifest.json           kind "site": the stream's token count and sha256 (``train_tokens.sha256``,
                          what a round's ``--corpus-sha256`` names), per source its name, version,
                          licence, files, docs, tokens and excluded files by reason, refused
                          distributions, the base's hashes, sha256 of every file, build seconds
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zoo.build import MAX_BYTES, MIN_BYTES, sha256_file
from zoo.corpus import is_synthetic, read_jsonl
from zoo.packages import ALLOWED_LICENCE_TERMS, SITE_EXTRA_LICENCE_TERMS
from zoo.site_sources import Source, default_roots, package_sources, stdlib_source, text_reason

SITE_KIND = "site"
SITE_FORMAT = 3
TOKENS_FILE = "train_tokens.npy"
DOC_ENDS_FILE = "train_doc_ends.npy"
COPIED = ("tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "tokenizer/special_tokens_map.json",
          "val.jsonl", "test.jsonl", "train.jsonl.gz")
# The long held-out split (``longeval``): whole site documents of >= LONGEVAL_MIN_TOKENS tokens whose text
# sha256 (first 8 hex digits) is divisible by LONGEVAL_EVERY, in stream order, until LONGEVAL_CAP tokens;
# they leave the training stream (LongPPL needs many held-out tokens beyond trunc_len: val/test hold 213K)
LONGEVAL_MIN_TOKENS = 4096
LONGEVAL_EVERY = 16
LONGEVAL_CAP = 1_600_000
LONGEVAL_TOKENS_FILE = "longeval_tokens.npy"
LONGEVAL_DOC_ENDS_FILE = "longeval_doc_ends.npy"
LONGEVAL_DOCS_FILE = "longeval_docs.json"
OVERLAP_MIN_CHARS = 20
OVERLAP_FRAC = 0.5
CHUNK_BYTES = 4 << 20
BASE_SOURCE = "base"

_W: dict = {}  # worker state (tokenizer, held-out lines)


def significant_lines(text: str) -> list[str]:
    """Stripped lines of at least ``OVERLAP_MIN_CHARS`` characters (the held-out overlap test's unit)."""
    return [s for line in text.splitlines() if len(s := line.strip()) >= OVERLAP_MIN_CHARS]


def overlaps(text: str, heldout_lines: set[str]) -> bool:
    """True when at least ``OVERLAP_FRAC`` of the text's significant lines occur in held-out documents."""
    lines = significant_lines(text)
    return bool(lines) and sum(s in heldout_lines for s in lines) >= OVERLAP_FRAC * len(lines)


def _init(tokenizer_json: str, heldout_texts: Sequence[str]) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker process
    from tokenizers import Tokenizer

    _W["tok"] = Tokenizer.from_file(tokenizer_json)
    _W["lines"] = {s for t in heldout_texts for s in significant_lines(t)}


def _work(task: tuple[str, list[str]]) -> list[tuple[str | None, str, np.ndarray | None]]:
    """(reason or None, sha256 of the text, token ids or None) per item of a task: ("text", texts) are
    base documents (kept as they are), ("file", paths) candidate files (read and checked)."""
    kind, items = task
    out: list[list] = []
    keep: list[tuple[int, str]] = []
    for item in items:
        reason, text = None, item
        if kind == "file":
            raw = Path(item).read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text, reason = "", "not_utf8"
            reason = reason or text_reason(text) or ("heldout_overlap" if overlaps(text, _W["lines"]) else None)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if reason is None:
            keep.append((len(out), text))
        out.append([reason, digest, None])
    tok = _W["tok"]
    encode = getattr(tok, "encode_batch_fast", tok.encode_batch)  # the same ids without offsets: ~1.5x faster
    for (i, _), enc in zip(keep, encode([t for _, t in keep], add_special_tokens=False), strict=True):
        out[i][2] = np.asarray(enc.ids, dtype="<u2")
    return [tuple(r) for r in out]


def _chunks(kind: str, items: list[tuple[str, int]]) -> list[tuple[str, list[str]]]:
    """Consecutive items grouped into tasks of about ``CHUNK_BYTES`` (item, size)."""
    tasks, cur, size = [], [], 0
    for item, n in items:
        cur.append(item)
        size += n
        if size >= CHUNK_BYTES:
            tasks.append((kind, cur))
            cur, size = [], 0
    if cur:
        tasks.append((kind, cur))
    return tasks


def _check_base(base: Path) -> dict:
    mpath = base / "manifest.json"
    if not mpath.is_file():
        raise ValueError(f"base: {base} has no manifest.json; build it with `python -m zoo build-data`")
    man = json.loads(mpath.read_text(encoding="utf-8"))
    if man.get("kind") == SITE_KIND:
        raise ValueError(f"base: {base} is itself a site corpus; give the bundled build it extends")
    for rel in COPIED:
        want = man.get("sha256", {}).get(rel)
        if want is None or not (base / rel).is_file() or sha256_file(base / rel) != want:
            raise ValueError(f"base: {base / rel} is missing or differs from the sha256 its manifest records")
    return man


def build_site_data(
    out: Path | str,
    base: Path | str,
    stdlib_root: Path | str | None = None,
    roots: Sequence[Path | str] | None = None,
    include_stdlib: bool = True,
    workers: int | None = None,
    max_files: int | None = None,
    min_bytes: int = MIN_BYTES,
    max_bytes: int = MAX_BYTES,
    strict_licences: bool = False,
    longeval_cap: int = LONGEVAL_CAP,
    longeval_min_tokens: int = LONGEVAL_MIN_TOKENS,
    longeval_every: int = LONGEVAL_EVERY,
) -> dict:
    """Build the site corpus into ``out`` from ``base`` and this machine's sources; returns the
    manifest (also written). ``roots``: site-packages directories (default :func:`default_roots`);
    ``max_files``: first N candidate files per source (quick builds); ``workers``: processes (default
    all cores; 0 or 1 = in this process); ``strict_licences``: the bundled build's licence terms only;
    ``longeval_*``: the long held-out split's token cap (0: none), smallest document and hash modulus."""
    t0 = time.perf_counter()
    out, base = Path(out), Path(base)
    if out.resolve() == base.resolve():
        raise ValueError("out: must differ from base (the base corpus is carried unchanged)")
    man = _check_base(base)
    heldout = [d for s in ("val", "test") for d in read_jsonl(base / f"{s}.jsonl")]
    heldout_ids = {d.id for d in heldout}
    heldout_hashes = {hashlib.sha256(d.text.encode("utf-8")).hexdigest() for d in heldout}
    base_docs = [d for d in read_jsonl(base / "train.jsonl.gz") if not is_synthetic(d.source)]
    base_ids = {d.id for d in base_docs}
    roots = [Path(r) for r in roots] if roots is not None else default_roots()
    sources = [stdlib_source(stdlib_root, min_bytes, max_bytes, max_files)] if include_stdlib else []
    extra = frozenset() if strict_licences else SITE_EXTRA_LICENCE_TERMS
    pkgs, refused = package_sources(roots, min_bytes, max_bytes, max_files, extra)
    sources += pkgs
    base_src = Source(BASE_SOURCE, man.get("python_version", "?"), "see the base manifest", "base")
    tasks = _chunks("text", [(d.text, len(d.text)) for d in base_docs])
    owners: list[tuple[Source, str]] = [(base_src, d.id) for d in base_docs]  # one per item, task order
    for src in sources:
        items = []
        for doc_id, path in src.files:
            if doc_id in heldout_ids or doc_id in base_ids:
                src.exclude("heldout_id" if doc_id in heldout_ids else "in_base")
                continue
            items.append((path, os.path.getsize(path)))
            owners.append((src, doc_id))
        tasks += _chunks("file", items)
    t_collect = time.perf_counter() - t0

    tok_json = str(base / "tokenizer" / "tokenizer.json")
    eos = np.asarray([man["tokenizer"]["eos_id"]], dtype="<u2")
    stats = {s.name: {"docs": 0, "tokens": 0} for s in [base_src, *sources]}
    seen: set[str] = set()
    pieces: list[np.ndarray] = []
    ends: list[int] = []
    longeval: list[tuple[Source, str, np.ndarray]] = []
    longeval_n = 0
    h = hashlib.sha256()
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    pool = None
    if n_workers > 1:
        pool = multiprocessing.get_context("spawn").Pool(n_workers, _init, (tok_json, [d.text for d in heldout]))
        results = pool.imap(_work, tasks)
    else:
        _init(tok_json, [d.text for d in heldout])
        results = map(_work, tasks)
    k = 0
    try:
        for res in results:
            for reason, digest, ids in res:
                src, doc_id = owners[k]
                k += 1
                if src is not base_src:  # the base's documents stay as its build chose them
                    if digest in heldout_hashes:  # whatever else is wrong with it
                        reason = "heldout_duplicate"
                    elif reason is None and digest in seen:
                        reason = "duplicate"
                if reason is not None:
                    src.exclude(reason)
                    continue
                seen.add(digest)
                if (src is not base_src and longeval_n < longeval_cap and len(ids) >= longeval_min_tokens
                        and int(digest[:8], 16) % longeval_every == 0):
                    longeval.append((src, doc_id, ids))
                    longeval_n += len(ids)
                    src.exclude("longeval")
                    continue
                pieces += [ids, eos]
                h.update(ids.tobytes())
                h.update(eos.tobytes())
                ends.append((ends[-1] if ends else 0) + len(ids) + 1)
                stats[src.name]["docs"] += 1
                stats[src.name]["tokens"] += len(ids) + 1
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    t_tok = time.perf_counter() - t0 - t_collect

    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # a half-written build never looks finished
    for rel in COPIED:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / rel, out / rel)
    total = ends[-1] if ends else 0
    tmp = out / (TOKENS_FILE + ".tmp")
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype="<u2", shape=(total,))
    pos = 0
    for p in pieces:
        mm[pos : pos + len(p)] = p
        pos += len(p)
    mm.flush()
    del mm
    tmp.replace(out / TOKENS_FILE)
    np.save(out / DOC_ENDS_FILE, np.asarray(ends, dtype="<i8"))
    np.save(out / LONGEVAL_TOKENS_FILE, np.concatenate([d[2] for d in longeval]).astype("<u2")
            if longeval else np.zeros(0, dtype="<u2"))
    np.save(out / LONGEVAL_DOC_ENDS_FILE, np.cumsum([len(d[2]) for d in longeval], dtype="<i8"))
    (out / LONGEVAL_DOCS_FILE).write_text(json.dumps(
        [{"id": i, "source": s.name, "version": s.version, "licence": s.licence, "tokens": len(t)}
         for s, i, t in longeval], indent=0) + "\n", encoding="utf-8")
    t_write = time.perf_counter() - t0 - t_collect - t_tok

    manifest = {
        "format": SITE_FORMAT,
        "kind": SITE_KIND,
        "python_version": platform.python_version(),
        "built_on": {"platform": platform.platform(), "cpus": os.cpu_count(), "workers": n_workers},
        "base": {
            "dir": str(base),
            "python_version": man.get("python_version"),
            "sha256": {rel: man["sha256"][rel] for rel in COPIED},
            "content_sha256": man.get("content_sha256"),
        },
        "params": {"max_files": max_files, "min_bytes": min_bytes, "max_bytes": max_bytes,
                   "include_stdlib": include_stdlib, "roots": [str(r) for r in roots],
                   "licence_terms": sorted(ALLOWED_LICENCE_TERMS | extra),
                   "overlap_min_chars": OVERLAP_MIN_CHARS, "overlap_frac": OVERLAP_FRAC},
        "tokenizer": man["tokenizer"],
        "train_tokens": {"file": TOKENS_FILE, "doc_ends": DOC_ENDS_FILE, "dtype": "uint16",
                         "tokens": total, "docs": len(ends), "sha256": h.hexdigest()},
        "sources": [
            {"source": s.name, "version": s.version, "licence": s.licence, "licence_from": s.licence_from,
             "files": len(s.files) if s is not base_src else len(base_docs), **stats[s.name],
             "excluded": dict(sorted(s.excluded.items()))}
            for s in [base_src, *sources]
        ],
        "refused_packages": refused,
        "splits": {s: man["splits"][s] for s in ("val", "test") if s in man.get("splits", {})},
        "longeval": {"tokens_file": LONGEVAL_TOKENS_FILE, "doc_ends": LONGEVAL_DOC_ENDS_FILE,
                     "docs_file": LONGEVAL_DOCS_FILE, "docs": len(longeval), "tokens": longeval_n,
                     "min_tokens": longeval_min_tokens, "every": longeval_every, "cap": longeval_cap},
        "sha256": {rel: sha256_file(out / rel) for rel in (*COPIED, DOC_ENDS_FILE, LONGEVAL_TOKENS_FILE)},
        "seconds": {"collect": round(t_collect, 1), "read_check_tokenize": round(t_tok, 1),
                    "write": round(t_write, 1), "total": round(time.perf_counter() - t0, 1)},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def is_site_corpus(data_dir: Path | str) -> bool:
    """True when ``data_dir`` holds a site corpus's token stream."""
    return (Path(data_dir) / TOKENS_FILE).is_file()


def site_summary(manifest: dict, top: int = 12) -> dict:
    """A compact view of a site manifest: totals, hash, seconds, the largest sources."""
    t = manifest["train_tokens"]
    srcs = sorted(manifest["sources"], key=lambda s: -s["tokens"])
    return {"tokens": t["tokens"], "docs": t["docs"], "sha256": t["sha256"], "build_s": manifest["seconds"],
            "sources": len(manifest["sources"]), "refused_packages": len(manifest["refused_packages"]),
            "largest": {s["source"]: f"{s['version']}: {s['docs']} docs, {s['tokens']:,} tokens" for s in srcs[:top]}}
