"""Trainer for the native zoo models: AdamW, linear warmup + cosine decay, grad clipping, bf16 autocast
on CUDA (FlexAttention / fla kernels through the config's "auto" backends), optional torch.compile,
JSONL + stdout logging, checkpoints and exact resume, retrieval-head formation at evaluation points.

Length of a run: ``steps`` fixed, or ``time_budget_s``: the first ``calib_steps`` steps are timed
(the first two, which include compilation, are skipped) and the schedule's total is set once to the
number of steps that fit in the remaining budget (minus the measured cost of evaluations and the
final export); a hard wall-clock stop at the budget is a backstop. Evaluation points are at fixed
fractions of the total (``EVAL_FRACTIONS``); each writes a checkpoint and a formation record
(``save_every`` adds checkpoints every N steps; only the newest ``keep_checkpoints`` are kept).

Files of a run (``run_dir``): ``train_log.jsonl``, ``formation.json``, ``checkpoints/``, ``summary.json``,
``qk/`` (the full-attention layers' Q/K weights at step 0 of a fresh run and at every evaluation point,
format in :mod:`zoo.qk`); the final bf16 export (with tokenizer, model card and a copy of ``qk/``) goes
to ``export_dir``.

Continued training (``init_from``): the earlier root's Q/K series and formation records come along, the
data stream goes on from where the earlier run stopped (its ``summary.json`` records the position;
same seed: the tokens an uninterrupted run would have seen next), and with ``schedule_total`` the LR
follows one warmup + cosine schedule of that many steps over all stages (counted from the earlier
steps; re-warmed over ``warmup_steps`` for the fresh optimizer).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from zoo import checkpoint as ck
from zoo import qk
from zoo.continued import load_earlier
from zoo.data import BatchStream, Corpus, SyntheticSource, corpus_summary
from zoo.formation import EvalSet, key_token_stats, passkey_accuracy, retrieval_scores, val_loss
from zoo.variants import context_of, get_variant, param_count, variant_config

EVAL_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 1.0)


@dataclass
class TrainArgs:
    """Hyperparameters and run control of one variant (all variants of a zoo share them)."""

    variant: str
    size: str = "zoo"
    batch_size: int = 16
    micro_batch: int = 0  # rows per forward (0 = batch_size); gradients are accumulated
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 30
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    steps: int | None = None
    time_budget_s: float | None = None
    max_seconds: float | None = None  # hard wall-clock stop (default: time_budget_s)
    calib_steps: int = 10
    log_every: int = 10
    eval_fractions: tuple[float, ...] = EVAL_FRACTIONS
    keep_checkpoints: int = 1
    save_every: int = 0  # extra checkpoints every N steps (0 = only at evaluation points)
    checkpoints: bool = True  # False: none at evaluation points (a pilot: nothing to resume)
    seed: int = 0
    synthetic_frac: float = 0.08
    synthetic_long_frac: float = 0.0  # rows whose documents fill the row (zoo.synthetic_rows; v1: 0)
    synthetic_parts: int = 1  # independently seeded parts per epoch, built in parallel (zoo.data; v1: 1)
    compile: bool = False
    device: str = "auto"
    attn_backend: str = "auto"  # kernel paths used in training (the saved config keeps "auto")
    linear_backend: str = "auto"
    # continued training: a zoo root (train-all --out) whose zoo/<variant> export gives the initial
    # weights; its train_summary.json the steps / tokens already seen, its formation.json the earlier
    # formation records. Fresh optimizer, warmup and cosine schedule; steps and tokens in records, logs
    # and the card count from the earlier run's totals.
    init_from: str | None = None
    schedule_total: int | None = None  # one LR schedule over all stages (see the module docstring)
    # sha256 of the natural training token stream this run must train on (zoo.data.check_corpus); a
    # round's plan names it so that every round trains on the same tokens in the same order
    corpus_sha256: str | None = None

    def check(self) -> None:
        get_variant(self.variant, self.size)
        if (self.steps is None) == (self.time_budget_s is None):
            raise ValueError("steps/time_budget_s: give exactly one of them")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps: must be >= 1, got {self.steps}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ValueError(f"max_seconds: must be > 0, got {self.max_seconds}")
        if self.time_budget_s is not None and self.calib_steps < 3:
            raise ValueError(f"calib_steps: must be >= 3 with a time budget, got {self.calib_steps}")
        if self.batch_size < 1 or self.micro_batch < 0 or (self.micro_batch and self.batch_size % self.micro_batch):
            raise ValueError(f"micro_batch: must divide batch_size ({self.batch_size}), got {self.micro_batch}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.schedule_total is not None and self.schedule_total <= self.warmup_steps:
            raise ValueError(f"schedule_total: must be > warmup_steps ({self.warmup_steps}), got {self.schedule_total}")


def lr_at(step: int, total: int | None, warmup: int, peak: float, min_ratio: float) -> float:
    """LR for optimizer step ``step`` (0-based): linear warmup over ``warmup`` steps, then cosine from
    ``peak`` to ``peak * min_ratio`` at ``total``; ``peak`` while total is still unknown."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if total is None:
        return peak
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_backends(model: torch.nn.Module, attn: str, linear: str) -> None:
    """Set the kernel backend of every mixer (module attributes only; the config is untouched)."""
    from models.attention_mixer import HybridAttention
    from models.config import ATTN_BACKENDS, LINEAR_BACKENDS
    from models.linear_mixers import GatedDeltaNetMixer, Mamba2Mixer

    if attn not in ATTN_BACKENDS or linear not in LINEAR_BACKENDS:
        raise ValueError(
            f"attn_backend/linear_backend: allowed {list(ATTN_BACKENDS)} / {list(LINEAR_BACKENDS)}, "
            f"got {attn!r} / {linear!r}"
        )
    for m in model.modules():
        if isinstance(m, HybridAttention):
            m.backend = attn
        elif isinstance(m, (Mamba2Mixer, GatedDeltaNetMixer)):
            m.backend = linear


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_optimizer(model: torch.nn.Module, args: TrainArgs, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on >= 2-d parameters only (fused on CUDA)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    kw = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(args.beta1, args.beta2),
        eps=1e-8,
        **kw,
    )


@dataclass
class _Loop:
    """Bookkeeping of one ``Trainer.run`` call: wall clock and deadlines, calibration step times, and
    the logging window (steps, summed loss and last grad norm since the previous log line)."""

    wall0: float  # start of the wall time not yet added to Trainer.train_seconds
    budget_end: float | None  # hard stop (max_seconds, else time_budget_s)
    plan_end: float | None  # end of the time budget the calibrated schedule must fit
    eval_cost_s: float
    step_times: list[float] = field(default_factory=list)
    win_t: float = 0.0
    win_steps: int = 0
    loss_sum: torch.Tensor | None = None
    gn_last: torch.Tensor | None = None


class Trainer:
    """One variant's training run. ``run()`` trains to the end (resuming first if asked)."""

    def __init__(self, args: TrainArgs, corpus: Corpus, synthetic: SyntheticSource, run_dir: Path,
                 export_dir: Path | None = None, eval_set: EvalSet | None = None, quiet: bool = False) -> None:
        from models.modeling import HybridForCausalLM

        args.check()
        if corpus.seq_len != context_of(args.size):
            raise ValueError(f"corpus: seq_len {corpus.seq_len} != training context {context_of(args.size)}")
        self.args, self.corpus, self.eval_set, self.quiet = args, corpus, eval_set, quiet
        self.run_dir, self.export_dir = Path(run_dir), Path(export_dir) if export_dir else None
        self.device = pick_device(args.device)
        self.config = variant_config(args.variant, args.size)
        self.n_params = param_count(self.config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            self.model = HybridForCausalLM(self.config).to(self.device).train()
        set_backends(self.model, args.attn_backend, args.linear_backend)
        self.forward = torch.compile(self.model) if args.compile else self.model
        self.opt = make_optimizer(self.model, args, self.device)
        self.batches = BatchStream(corpus, synthetic, args.batch_size, args.seed)
        self.step, self.tokens = 0, 0
        self.total_steps = args.steps
        self.eval_steps: list[int] = []
        self.formation: list[dict] = []
        self.train_seconds = 0.0  # wall time of completed steps (carried over a resume)
        self.last_loss: float | None = None
        self.status = "running"
        self.prior: dict[str, Any] = {"steps": 0, "tokens": 0}
        self.earlier_qk: Path | None = None
        if args.init_from:
            earlier = load_earlier(Path(args.init_from), args.variant, self.config)
            self.model.load_state_dict(earlier.state_dict)
            self.prior, self.formation = earlier.prior, earlier.formation
            self.earlier_qk = Path(args.init_from) / "zoo" / args.variant / qk.DIR
            if earlier.data is not None:  # the stream goes on where the earlier run stopped
                self.batches.load_state_dict(earlier.data)

    # ------------------------------------------------------------------ one step
    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; returns (loss, grad norm) as device tensors (no host sync)."""
        a = self.args
        if a.schedule_total:  # one schedule over all stages, re-warmed after a stage boundary
            lr = lr_at(self.prior["steps"] + self.step, a.schedule_total, a.warmup_steps, a.lr, a.min_lr_ratio)
            if self.prior["steps"]:
                lr *= min(1.0, (self.step + 1) / a.warmup_steps)
        else:
            lr = lr_at(self.step, self.total_steps, a.warmup_steps, a.lr, a.min_lr_ratio)
        for g in self.opt.param_groups:
            g["lr"] = lr
        x, y = self.batches.next()
        micro = a.micro_batch or a.batch_size
        n_micro = a.batch_size // micro
        amp = torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else nullcontext()
        total = torch.zeros((), device=self.device)
        for i in range(n_micro):
            xb = x[i * micro : (i + 1) * micro].to(self.device, non_blocking=True)
            yb = y[i * micro : (i + 1) * micro].to(self.device, non_blocking=True)
            with amp:
                loss = self.forward(input_ids=xb, labels=yb).loss / n_micro
            loss.backward()
            total += loss.detach()
        gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), a.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += x.numel()
        return total, gn

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    # ------------------------------------------------------------------ bookkeeping
    def _log(self, rec: dict) -> None:
        rec = {"variant": self.args.variant, **rec}
        with open(self.run_dir / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        if not self.quiet:
            keys = ("step", "loss", "lr", "grad_norm", "tok_per_s", "elapsed_s", "event", "max_full", "val_loss",
                    "passkey_acc", "n_key")
            print(f"[{self.args.variant}] " + " ".join(f"{k}={rec[k]}" for k in keys if k in rec), flush=True)

    def set_total(self, total: int) -> None:
        """Fix the schedule length (at least one step past the current one) and the evaluation steps."""
        self.total_steps = max(total, self.step + 1)
        evals = {max(1, min(self.total_steps, round(f * self.total_steps))) for f in self.args.eval_fractions}
        self.eval_steps = sorted(s for s in evals if s > self.step or s == self.total_steps)

    def evaluate(self) -> dict:
        rec: dict[str, Any] = {"step": self.prior["steps"] + self.step, "tokens": self.prior["tokens"] + self.tokens}
        if self.args.init_from:
            rec["stage_step"] = self.step
        if self.eval_set is not None:
            t0 = time.perf_counter()
            rec.update(retrieval_scores(self.model, self.eval_set, self.device))
            rec["val_loss"] = val_loss(self.model, self.eval_set, self.device)
            if rec["val_loss"] is not None:
                rec["val_ppl"] = math.exp(rec["val_loss"])
            if self.eval_set.passkey:
                rec["passkey_acc"] = passkey_accuracy(self.model, self.eval_set, self.device)
                rec["passkey_length"] = self.eval_set.passkey[0].length
            if self.eval_set.key_chunks:
                rec.update(key_token_stats(self.model, self.eval_set, self.device))
                rec["trunc_len"] = self.eval_set.trunc_len
            rec["eval_seconds"] = round(time.perf_counter() - t0, 3)
        qk.save_point(self.model, self.run_dir / qk.DIR, rec["step"], rec["tokens"])
        self.formation = [r for r in self.formation if r["step"] != rec["step"]] + [rec]
        (self.run_dir / "formation.json").write_text(
            json.dumps({"variant": self.args.variant, "records": self.formation}, indent=1), encoding="utf-8"
        )
        return rec

    def state(self) -> dict:
        """What a checkpoint holds besides the weights and RNG state (see ``resume``)."""
        return {"args": asdict(self.args), "total_steps": self.total_steps, "eval_steps": self.eval_steps,
                "tokens": self.tokens, "optimizer": self.opt.state_dict(), "data": self.batches.state_dict(),
                "formation": self.formation, "train_seconds": self.train_seconds, "last_loss": self.last_loss}

    def save(self) -> Path:
        state, keep = self.state(), self.args.keep_checkpoints
        return ck.save_checkpoint(self.run_dir, self.step, self.model, self.corpus.tokenizer_dir, state, keep=keep)

    def resume(self) -> bool:
        """Load the latest complete checkpoint of ``run_dir``; False when there is none."""
        path = ck.latest_checkpoint(self.run_dir)
        if path is None:
            return False
        st = ck.load_state(path)
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.batches.load_state_dict(st["data"])
        self.step, self.tokens = int(st["step"]), int(st["tokens"])
        self.total_steps, self.eval_steps = st["total_steps"], list(st["eval_steps"])
        self.formation, self.train_seconds = list(st["formation"]), float(st["train_seconds"])
        self.last_loss = st.get("last_loss")
        ck.set_rng_state(st["rng"])
        qk.drop_after(self.run_dir / qk.DIR, self.prior["steps"] + self.step)
        log = self.run_dir / "train_log.jsonl"
        if log.is_file():  # drop records past the checkpoint: the resumed run rewrites them
            lines = log.read_text(encoding="utf-8").splitlines()
            keep = [ln for ln in lines if ln.strip() and json.loads(ln).get("step", 0) <= self.step]
            log.write_text("".join(ln + "\n" for ln in keep), encoding="utf-8")
        self._log({"event": "resumed", "step": self.step, "from": path.name})
        return True

    def card(self) -> dict:
        v, c = get_variant(self.args.variant, self.args.size), self.config
        last = self.formation[-1] if self.formation else {}
        return {
            "name": v.name,
            "description": v.description,
            "pattern": v.pattern,
            "ratio": v.ratio,
            "window": c.sliding_window if v.window else None,
            "full_pe": v.full_pe,
            "params": self.n_params,
            "size": self.args.size,
            "context": self.corpus.seq_len,
            "steps": self.prior["steps"] + self.step,
            "tokens_seen": self.prior["tokens"] + self.tokens,
            "batch": f"{self.args.batch_size} x {self.corpus.seq_len} tokens",
            "final_train_loss": None if self.last_loss is None else round(self.last_loss, 4),
            "final_val_loss": None if last.get("val_loss") is None else round(last["val_loss"], 4),
            "train_seconds": round(self.train_seconds, 1),
            "device": _device_name(self.device),
            "synthetic_frac": self.args.synthetic_frac,
            "status": self.status,
            **({"continued_from": {**self.prior, "stage_steps": self.step}} if self.args.init_from else {}),
            "hyperparameters": {k: v for k, v in asdict(self.args).items() if k not in ("variant", "device")},
        }

    # ------------------------------------------------------------------ the loop
    def run(self, resume: bool = False, eval_cost_s: float | None = None, stop_after: int | None = None) -> dict:
        """Train to the end; export; return the summary. ``eval_cost_s`` (seconds per evaluation, if
        known) sharpens the time-budget estimate; else the first evaluation is timed. ``stop_after``:
        stop at that step with a checkpoint and no export (status "interrupted"; resume later)."""
        self._start_or_resume(resume)
        loop = self._start_clock(eval_cost_s)
        while not self._at_total():
            self._timed_step(loop)
            done = self._at_total()
            if not self._log_window(loop, done):
                self.status = "diverged"
                break
            self._eval_or_checkpoint(loop, done)
            if done:
                break
            if loop.budget_end is not None and time.perf_counter() > loop.budget_end:
                self.status = "stopped_at_time_limit"
                break
            if stop_after is not None and self.step >= stop_after:
                return self._interrupt(loop)
        return self._wrap_up(loop)

    def _at_total(self) -> bool:
        """The schedule's length is known and reached."""
        return self.total_steps is not None and self.step >= self.total_steps

    def _start_or_resume(self, resume: bool) -> None:
        """Continue from the latest checkpoint if asked and there is one; else a fresh log (and the
        evaluation steps of a fixed-length schedule)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume and self.resume():
            return
        (self.run_dir / "train_log.jsonl").unlink(missing_ok=True)
        shutil.rmtree(self.run_dir / qk.DIR, ignore_errors=True)
        if self.earlier_qk is not None:  # the earlier stages' series, up to where they ended
            qk.copy_series(self.earlier_qk, self.run_dir / qk.DIR, up_to=self.prior["steps"])
        else:  # the initialisation: distance 0 -> final is the whole way
            qk.save_point(self.model, self.run_dir / qk.DIR, 0, 0)
        summary = corpus_summary(self.corpus, self.batches.synthetic)
        self._log({"event": "start", "step": 0, "params": self.n_params, "device": str(self.device),
                   "data_position": self.batches.state_dict(), **summary})
        if self.total_steps is not None:
            self.set_total(self.total_steps)

    def _start_clock(self, eval_cost_s: float | None) -> _Loop:
        """This call's deadlines (net of the time trained before a resume) and the cost of one evaluation,
        timed on a step-0 evaluation when a time budget is still to be planned and no cost was given."""
        a = self.args
        wall0 = time.perf_counter()
        limit = a.max_seconds if a.max_seconds is not None else a.time_budget_s
        budget_end = None if limit is None else wall0 + limit - self.train_seconds
        plan_end = None if a.time_budget_s is None else wall0 + a.time_budget_s - self.train_seconds
        if eval_cost_s is None and a.time_budget_s is not None and self.total_steps is None:
            t0 = time.perf_counter()
            self.evaluate()  # step 0 point, and its cost
            eval_cost_s = time.perf_counter() - t0
        return _Loop(wall0, budget_end, plan_end, eval_cost_s or 0.0, win_t=time.perf_counter())

    def _timed_step(self, loop: _Loop) -> None:
        """One optimizer step into the logging window; while calibrating, timed (then calibrate)."""
        t_step = time.perf_counter()
        loss, gn = self.train_step()
        loop.loss_sum = loss if loop.loss_sum is None else loop.loss_sum + loss
        loop.gn_last, loop.win_steps = gn, loop.win_steps + 1
        if self.total_steps is None and len(loop.step_times) < self.args.calib_steps:
            self._sync()
            loop.step_times.append(time.perf_counter() - t_step)
            if len(loop.step_times) == self.args.calib_steps:
                self._calibrate(loop)

    def _calibrate(self, loop: _Loop) -> None:
        """Fix the schedule at the steps that fit the time budget: median step time (the first two steps,
        with compilation, left out) after a reserve for evaluations, checkpoints and the export."""
        a = self.args
        sps = sorted(loop.step_times[2:])[len(loop.step_times[2:]) // 2]
        reserve = (loop.eval_cost_s + 0.5) * len(a.eval_fractions) + 3.0 + 2.0 * sps  # + saves
        left = loop.plan_end - time.perf_counter() - reserve
        self.set_total(max(a.warmup_steps + 1, self.step + int(max(0.0, left) / sps * 0.95)))
        self._log({"event": "calibrated", "step": self.step, "sec_per_step": round(sps, 4),
                   "total_steps": self.total_steps, "eval_cost_s": round(loop.eval_cost_s, 2)})

    def _log_window(self, loop: _Loop, done: bool) -> bool:
        """At a log point (every ``log_every`` steps, and the last step): log the window's mean loss and
        throughput, then open a new window. False when the loss is not finite (the run diverged)."""
        if self.step % self.args.log_every and not done:
            return True
        self._sync()
        now = time.perf_counter()
        self.last_loss = float(loop.loss_sum) / loop.win_steps
        tokens = loop.win_steps * self.args.batch_size * self.corpus.seq_len
        self._log({"step": self.step, "loss": round(self.last_loss, 4),
                   "lr": float(f"{self.opt.param_groups[0]['lr']:.3g}"), "grad_norm": round(float(loop.gn_last), 3),
                   "tokens": self.tokens, "tok_per_s": round(tokens / (now - loop.win_t)),
                   "elapsed_s": round(self.train_seconds + now - loop.wall0, 1)})
        if not math.isfinite(self.last_loss):
            return False
        loop.win_t, loop.win_steps, loop.loss_sum = now, 0, None
        return True

    def _eval_or_checkpoint(self, loop: _Loop, done: bool) -> None:
        """At an evaluation point: a formation record, its log line and a checkpoint; else a checkpoint
        every ``save_every`` steps (never at the last step, which exports instead)."""
        a = self.args
        if self.step in self.eval_steps:
            rec = self.evaluate()
            self._log({"event": "eval", **{k: v for k, v in rec.items() if k != "per_layer"}})
            self._bank_time(loop)
            if a.checkpoints:
                self.save()
        elif a.save_every and self.step % a.save_every == 0 and not done:
            self.save()

    def _bank_time(self, loop: _Loop) -> None:
        """Add the wall time since ``loop.wall0`` to ``train_seconds`` (what checkpoints and the card record)."""
        self.train_seconds += time.perf_counter() - loop.wall0
        loop.wall0 = time.perf_counter()

    def _interrupt(self, loop: _Loop) -> dict:
        """Stop at ``stop_after``: a checkpoint, no export (status "interrupted"; resume later)."""
        self._bank_time(loop)
        self.status = "interrupted"
        self.save()
        self._log({"event": "interrupted", "step": self.step})
        return {"status": self.status, "step": self.step}

    def _wrap_up(self, loop: _Loop) -> dict:
        """After the loop: bank the time, "done" unless it stopped early, a final formation record if
        the last step has none, then the export and summary."""
        self._bank_time(loop)
        if self.status == "running":
            self.status = "done"
        if not self.formation or self.formation[-1]["step"] != self.prior["steps"] + self.step:
            self.evaluate()
        return self.finish()

    def finish(self) -> dict:
        """Export (if an export dir is set), write summary.json and return its content."""
        card = self.card()
        if self.export_dir is not None:
            ck.export_pretrained(self.model, self.export_dir, self.corpus.tokenizer_dir, card)
            qk.copy_series(self.run_dir / qk.DIR, self.export_dir / qk.DIR)
        last = self.formation[-1] if self.formation else None
        text = json.dumps({**card, "formation": last, "data": self.batches.state_dict()}, default=str)
        (self.run_dir / "summary.json").write_text(text, encoding="utf-8")
        self._log({"event": "finished", "step": self.step, "status": self.status, "tokens": self.tokens})
        return json.loads(text)  # exactly what summary.json holds (JSON types)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"
