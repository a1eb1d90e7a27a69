"""Command line: ``python -m backend models | run | show | sql | serve | sweep | scaling``.

Bad input exits with code 2 and one line on stderr (``error: ...``); a failing probe exits 1; a
cancelled run exits 3 (``run`` turns SIGTERM into its ``CancelToken``: the run stops at its next
progress report and stores nothing; ``backend.client.LocalClient`` cancels its child this way).
``--json`` prints machine-readable output on stdout; ``--progress`` writes JSON progress lines on
stderr (what ``backend.client.LocalClient`` reads); otherwise progress is a tqdm bar.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_BAD_INPUT, EXIT_FAILED, EXIT_CANCELLED = 2, 1, 3


def parse_param(item: str) -> tuple[str, Any]:
    """``key=value`` (``key=a,b`` for a list): numbers become numbers (the params are strict, so
    ``true`` or ``1e3`` for an integer is refused), ``none``/``null`` is None, anything else text."""
    from backend.params import parse_scalar

    if "=" not in item:
        raise ValueError(f"--param: expected key=value, got {item!r}")
    key, raw = item.split("=", 1)
    if not key.strip():
        raise ValueError(f"--param: expected key=value, got {item!r}")

    def one(v: str) -> Any:
        return None if v.lower() in ("none", "null") else parse_scalar(v)

    return key.strip(), [one(v) for v in raw.split(",")] if "," in raw else one(raw)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit code 2) like every other bad input."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m backend", description="HybridScope backend")
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("models", help="known model refs: supported?, layers, toggles (configs only, no weights)")
    m.add_argument("--json", action="store_true")
    r = sub.add_parser("run", help="run a probe (cached)")
    r.add_argument("--model")
    r.add_argument("--probe")
    r.add_argument("--data")
    r.add_argument("--ablation", default="")
    r.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--spec-json", help="a whole RunSpec as JSON (instead of the flags above)")
    for p in (r, sub.add_parser("show", help="show a stored run"), sub.add_parser("sql", help="read-only SQL")):
        p.add_argument("--store", help="trace store directory (default: $HYBRIDSCOPE_STORE or a user cache dir)")
        p.add_argument("--json", action="store_true")
    r.add_argument("--progress", action="store_true", help="JSON progress lines on stderr")
    sub.choices["show"].add_argument("run_id")
    sub.choices["sql"].add_argument("query")
    s = sub.add_parser("serve", help="HTTP backend (FastAPI) on 127.0.0.1")
    s.add_argument("--port", type=_port, default=8765)
    s.add_argument("--host", help="address to listen on (default: $HYBRIDSCOPE_LISTEN_HOST or 127.0.0.1)")
    s.add_argument("--store")
    w = sub.add_parser("sweep", help="a grid of cached runs on a Dask cluster (LocalCluster on 127.0.0.1 by default)")
    w.add_argument("--model", action="append", default=[], help="repeat for several models")
    w.add_argument("--probe", action="append", default=[], help="repeat for several probes")
    w.add_argument("--ablation", action="append", default=[], help="repeat; '' = none (default: none)")
    w.add_argument("--data", action="append", default=[], help="repeat; default: the probe's default")
    w.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="for every point")
    w.add_argument("--workers", type=_port, default=2, help="local workers (CPU; one per GPU where GPUs exist)")
    w.add_argument("--scheduler", help="address of a running Dask scheduler (default: start a local cluster)")
    w.add_argument("--store")
    w.add_argument("--json", action="store_true")
    k = sub.add_parser("scaling", help="fit L(N, D) = b N^-alpha + c D^-beta to a table of runs (default: the "
                       "authors' SWA-128 LongPPL table)")
    k.add_argument("--table", help="TSV/CSV with columns N, D, loss (or the authors' model_size, "
                   "token_multiplier, n, loss); default: the authors' table")
    k.add_argument("--boot", type=_port, default=50, help="bootstrap resamples per fit")
    k.add_argument("--out", help="write the whole report (fits, intervals, curves and bands) as JSON here")
    k.add_argument("--json", action="store_true")
    return ap


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}; allowed: an integer 1-65535")
    return int(text)


def _spec(args):
    from backend.spec import RunSpec, SpecError

    if args.spec_json:
        from backend.jsonin import loads
        from backend.limits import cpu_limits

        try:
            body = loads(args.spec_json, "--spec-json", max_bytes=int(cpu_limits()["max_body_bytes"]))
        except ValueError as e:
            raise SpecError(str(e)) from None
        if not isinstance(body, dict):
            raise SpecError(f"--spec-json: expected a JSON object (a RunSpec), got {type(body).__name__}")
        return RunSpec.build(**body)
    if not args.model or not args.probe:
        raise SpecError("run: --model and --probe are required (or --spec-json)")
    params = dict(parse_param(p) for p in args.param)
    return RunSpec.build(model=args.model, probe=args.probe, data=args.data, ablation=args.ablation, params=params)


def _hosted_checks(spec):
    """A hosted backend's command line (the dashboard's child process) keeps the HTTP limits: size
    (exit 2) and wall-clock (a CancelToken); elsewhere the command line is the operator's own."""
    from backend.limits import cpu_limits, hosted, limit_message
    from backend.runner import CancelToken

    if not hosted():
        return None
    lim = cpu_limits()
    why = limit_message(spec, lim)
    if why:
        raise ValueError(why)
    return CancelToken(float(lim["max_run_seconds"]))


def _cancel_on_sigterm(token) -> None:
    """SIGTERM cancels the run (the main thread only; the process exits once the run stopped)."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: token.cancel("run: cancelled; nothing was stored"))


def cmd_run(args) -> int:
    from backend.runner import CancelToken, Runner

    spec = _spec(args)
    cancel = _hosted_checks(spec) or CancelToken()
    _cancel_on_sigterm(cancel)
    runner = Runner(args.store)
    if args.progress:
        def progress(f: float, msg: str) -> None:
            print(json.dumps({"progress": round(f, 4), "message": msg}), file=sys.stderr, flush=True)
        res = runner.run(spec, progress, cancel=cancel)
    else:
        from tqdm import tqdm

        # disable=None: a bar only on a terminal; piped stderr gets just the one-line error, if any
        with tqdm(total=100, desc=spec.probe, unit="%", file=sys.stderr, disable=None) as bar:
            def progress(f: float, msg: str) -> None:
                bar.set_postfix_str(msg[:40])
                bar.update(max(0, int(f * 100) - bar.n))
            res = runner.run(spec, progress, cancel=cancel)
    out = {"run_id": res.run_id, "cached": res.cached, "store": str(res.store.root), "spec": spec.canonical(),
           "rows": res.manifest.get("rows", {}), "meta": res.manifest.get("meta", {})}
    print(json.dumps(out) if args.json else _human(out))
    meta = out["meta"]
    if spec.probe == "longppl" and meta.get("longppl") is None:
        print(f"note: LongPPL is undefined: the evaluator found no key tokens (n_key {meta.get('n_key')}); "
              "try a smaller trunc_len / stride, longer documents or another evaluator", file=sys.stderr)
    return 0


def cmd_sweep(args) -> int:
    from backend.dask_sweep import grid, sweep

    params = dict(parse_param(p) for p in args.param)
    specs = grid(args.model, args.probe, args.ablation or [""], args.data or [None], params)
    from tqdm import tqdm

    with tqdm(total=100, desc="sweep", unit="%", file=sys.stderr, disable=None) as bar:
        def progress(f: float, msg: str) -> None:
            bar.set_postfix_str(msg[:50])
            bar.update(max(0, int(f * 100) - bar.n))

        try:
            points = sweep(specs, store=args.store, scheduler=args.scheduler, n_workers=args.workers,
                           progress=progress)
        except KeyboardInterrupt:
            print("error: sweep cancelled", file=sys.stderr)
            return EXIT_FAILED
    rows = [p.to_dict() for p in points]
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            err = f"  {r['error']}" if r["error"] else ""
            print(f"{r['status']:9} {r['run_id'] or '-':20} {json.dumps(r['spec'])}{err}")
    return EXIT_FAILED if any(r["status"] == "error" for r in rows) else 0


def cmd_scaling(args) -> int:
    from pathlib import Path

    from backend import scaling

    table = scaling.load_table(args.table) if args.table else scaling.load_table()
    rep = scaling.report(table, n_boot=args.boot, reference=None if args.table else scaling.AUTHORS_FIT)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rep) + "\n", encoding="utf-8")
    rows = ([{**rep["reference"], "fit": "authors"}] if "reference" in rep else []) + [
        {**f, "fit": "bounded" if f["bounded"] else "unbounded"} for f in rep["fits"]]
    if args.json:
        print(json.dumps(rows))
    else:
        for f in rows:
            p = f["params"]
            what = "ln(loss)" if f["quantity"] == "log" else "loss"
            print(f"{what:8} {f['fit']:9} objective {f['objective']:.6g}  R2 train {f['r2_train']:.6f} "
                  f"held-out {f['r2_val']:.6f}  b {p['b']:.6g} alpha {p['alpha']:.4f} "
                  f"c {p['c']:.6g} beta {p['beta']:.4f}")
    return 0


def _human(d: dict) -> str:
    lines = [f"run_id  {d['run_id']}  ({'cached' if d['cached'] else 'computed'})", f"store   {d['store']}"]
    lines += [f"rows    {k}: {v}" for k, v in d.get("rows", {}).items()]
    lines += [f"meta    {k}: {v}" for k, v in d.get("meta", {}).items() if not isinstance(v, list | dict)]
    return "\n".join(lines)


def _reader(store: str | None):
    from backend.runner import Runner
    from backend.store_reader import StoreReader

    r = Runner(store)
    return StoreReader([r.store, *r.extra])


def cmd_show(args) -> int:
    from backend.runner import Runner
    from backend.store import check_run_id

    check_run_id(args.run_id)
    r = Runner(args.store)
    for store in [r.store, *r.extra]:
        m = store.manifest(args.run_id)
        if m:
            print(json.dumps(m, indent=1) if args.json else _human({**m, "cached": True, "store": str(store.root)}))
            return 0
    raise LookupError(f"run_id: no run {args.run_id!r} in {', '.join(str(s.root) for s in [r.store, *r.extra])}")


def cmd_sql(args) -> int:
    from backend.limits import sql_limits

    table = _reader(args.store).sql(args.query, max_rows=int(sql_limits()["sql_max_rows"]))
    if args.json:
        print(json.dumps(table.to_pylist(), default=str))
    else:
        cols = table.column_names
        print("\t".join(cols))
        for row in table.to_pylist()[:1000]:
            print("\t".join(str(row[c]) for c in cols))
    return 0


def cmd_models(args) -> int:
    from backend.model_listing import rows, table

    listing = rows()  # configs only: no weight is read
    print(json.dumps(listing) if args.json else table(listing))
    return 0


def cmd_serve(args) -> int:
    import socket

    import uvicorn

    from backend.limits import listen_host
    from backend.server import make_app

    host = args.host or listen_host()
    try:  # a port in use or an address not on this machine: one line, not uvicorn's log and exit
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, args.port))
    except (OSError, OverflowError) as e:
        raise ValueError(f"serve: cannot listen on {host}:{args.port} ({getattr(e, 'strerror', None) or e})") from None
    uvicorn.run(make_app(args.store, host=host), host=host, port=args.port, log_level="warning")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cmds = {"run": cmd_run, "show": cmd_show, "sql": cmd_sql, "models": cmd_models, "serve": cmd_serve,
            "sweep": cmd_sweep, "scaling": cmd_scaling}
    try:
        return cmds[args.cmd](args)
    except (ValueError, LookupError, PermissionError) as e:
        print(f"error: {_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # noqa: BLE001 - a failed probe: its message is stored with the run
        from backend.store import StoreError

        if type(e).__name__ == "RunCancelled":  # backend.runner.RunCancelled: nothing was stored
            print(f"error: {_line(e)}", file=sys.stderr)
            return EXIT_CANCELLED

        code = EXIT_BAD_INPUT if isinstance(e, StoreError) else EXIT_FAILED
        print(f"error: {_line(e)}", file=sys.stderr)
        return code


def _line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
