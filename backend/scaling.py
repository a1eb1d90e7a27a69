"""Scaling-law fit of long-context loss: L(N, D) = b * N^-alpha + c * D^-beta (torch-free: numpy + scipy).

As the paper's authors fit it: in log space, log L_hat = logsumexp(log b - alpha log N, log c - beta log D),
minimising sum_i Huber_delta(log L_hat_i - log L_i) (delta = 1e-3) with L-BFGS-B from a grid of starts,
alpha bounded to [0.2, 0.3] and beta >= 0 (``bounded=False``: no bounds), the largest model (the rows of the largest N)
held out for validation. R^2 is computed on L itself: 1 - SS_res / SS_tot over the rows of a split.

With 17 training points the exponents are poorly identified (an unbounded refit reaches a lower
objective at very different alpha, beta): :func:`bootstrap` refits on resampled training rows and gives
percentile intervals of every parameter and of the predicted curve, which the dashboard shows.

Tables: the authors' format (``model_size, token_multiplier, n, loss`` with ``token_multiplier`` as
``"<k>n"``, i.e. D = k * N; :data:`AUTHORS_TABLE` is theirs, for SWA-128 LongPPL) or a plain one with
columns ``N, D, loss`` (optional ``group``), tab- or comma-separated. :meth:`Table.log_loss` fits
ln(loss) instead (for a LongPPL column: the long-context loss in nats).
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

AUTHORS_TABLE = Path(__file__).resolve().parent / "data" / "swa128_longppl.tsv"
HUBER_DELTA = 1e-3
ALPHA_BOUNDS = (0.2, 0.3)
BETA_MIN = 0.0  # the authors' fit also keeps beta >= 0 (bounded fits only)
# The authors' fit of ln(LongPPL) on AUTHORS_TABLE (their fit_scaling.py --formula no_constant --validate
# --longppl, as their script prints it, 6 decimals); it scores R^2 train 0.984198, held-out 0.963306.
AUTHORS_FIT = {"b": 104.853394, "alpha": 0.247547, "c": 2951.010225, "beta": 0.355089}
AUTHORS_R2 = {"train": 0.984198, "validation": 0.963306}
PARAMS = ("b", "alpha", "c", "beta")
MAX_STARTS = 24  # L-BFGS-B runs per fit (from the grid starts of lowest objective)
_GRID = {"a": (0.0, 5.0, 10.0, 20.0), "alpha": (0.2, 0.25, 0.3, 0.5), "c": (0.0, 5.0, 10.0, 20.0),
         "beta": (0.0, 0.25, 0.5, 1.0)}  # 256 starts: the Huber objective (delta 1e-3: nearly L1) has many optima


class TableError(ValueError):
    """A scaling table that cannot be read (the message names the row or column)."""


@dataclass(frozen=True)
class Table:
    n: np.ndarray  # parameters
    d: np.ndarray  # training tokens
    loss: np.ndarray
    group: tuple[str, ...]

    def log_loss(self) -> Table:
        """The same table with ln(loss) as the quantity fitted (a LongPPL column -> the loss in nats)."""
        return Table(self.n, self.d, np.log(self.loss), self.group)

    @property
    def held_out(self) -> np.ndarray:
        """The rows of the largest model (validation)."""
        return self.n == self.n.max()


def _num(text: str, what: str, row: int) -> float:
    try:
        v = float(text)
    except ValueError:
        raise TableError(f"row {row}: {what} {text!r} is not a number") from None
    if not np.isfinite(v) or v <= 0:
        raise TableError(f"row {row}: {what} must be a positive number, got {text!r}")
    return v


def parse_table(text: str) -> Table:
    """A scaling table from TSV/CSV text (see the module docstring for the two formats)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) < 2:
        raise TableError("table: a header and at least one row are needed")
    delim = "\t" if "\t" in lines[0] else ","
    rows = list(csv.DictReader(io.StringIO("\n".join(lines)), delimiter=delim))
    cols = {c.strip().lower() for c in rows[0]}
    n, d, loss, group = [], [], [], []
    for i, raw in enumerate(rows, start=2):
        r = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
        if {"token_multiplier", "n", "loss"} <= cols:
            nn = _num(r["n"], "n", i)
            d.append(_num(r["token_multiplier"].removesuffix("n"), "token_multiplier", i) * nn)
            group.append(r.get("model_size") or str(int(nn)))
        elif {"n", "d", "loss"} <= cols:
            nn = _num(r["n"], "N", i)
            d.append(_num(r["d"], "D", i))
            group.append(r.get("group") or str(int(nn)))
        else:
            raise TableError("table: expected columns model_size, token_multiplier, n, loss (the authors') or "
                             f"N, D, loss; got {sorted(cols)}")
        n.append(nn)
        loss.append(_num(r["loss"], "loss", i))
    t = Table(np.array(n), np.array(d), np.array(loss), tuple(group))
    if len(set(t.n)) < 2:
        raise TableError("table: at least two model sizes are needed (the largest is held out)")
    return t


def load_table(path: str | Path = AUTHORS_TABLE) -> Table:
    return parse_table(Path(path).read_text(encoding="utf-8"))


def log_predict(theta: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """log L_hat for theta = (log b, alpha, log c, beta)."""
    a, alpha, c, beta = theta
    return np.logaddexp(a - alpha * np.log(n), c - beta * np.log(d))


def predict(params: dict, n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """L_hat = b N^-alpha + c D^-beta."""
    return params["b"] * np.power(n, -params["alpha"]) + params["c"] * np.power(d, -params["beta"])


def objective(theta: np.ndarray, n, d, loss, delta: float = HUBER_DELTA) -> tuple[float, np.ndarray]:
    """(sum of Huber losses of the log residuals, its gradient in theta)."""
    a, alpha, c, beta = theta
    u, v = a - alpha * np.log(n), c - beta * np.log(d)
    lse = np.logaddexp(u, v)
    r = lse - np.log(loss)
    w = np.exp(u - lse)  # d lse / d u
    huber = np.where(np.abs(r) <= delta, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
    g = np.clip(r, -delta, delta)
    grad = np.array([(g * w).sum(), -(g * w * np.log(n)).sum(), (g * (1 - w)).sum(), -(g * (1 - w) * np.log(d)).sum()])
    return float(huber.sum()), grad


def r2(y: np.ndarray, y_hat: np.ndarray) -> float:
    y, y_hat = np.asarray(y, dtype=float), np.asarray(y_hat, dtype=float)
    return float(1.0 - ((y - y_hat) ** 2).sum() / ((y - y.mean()) ** 2).sum())


@dataclass
class Fit:
    params: dict  # b, alpha, c, beta
    objective: float  # Huber objective on the training rows
    r2_train: float
    r2_val: float
    bounded: bool
    n_train: int
    n_val: int
    intervals: dict = field(default_factory=dict)  # param -> (lo, hi), from bootstrap()

    def to_dict(self) -> dict:
        return asdict(self)


def _theta(params: dict) -> np.ndarray:
    return np.array([np.log(params["b"]), params["alpha"], np.log(params["c"]), params["beta"]])


def _params(theta: np.ndarray) -> dict:
    a, alpha, c, beta = (float(x) for x in theta)
    return {"b": float(np.exp(a)), "alpha": alpha, "c": float(np.exp(c)), "beta": beta}


def evaluate(table: Table, params: dict, bounded: bool = True, delta: float = HUBER_DELTA) -> Fit:
    """The objective and train / held-out R^2 of given parameters (e.g. published ones)."""
    tr, va = ~table.held_out, table.held_out
    obj, _ = objective(_theta(params), table.n[tr], table.d[tr], table.loss[tr], delta)
    return Fit(dict(params), obj, r2(table.loss[tr], predict(params, table.n[tr], table.d[tr])),
               r2(table.loss[va], predict(params, table.n[va], table.d[va])), bounded, int(tr.sum()), int(va.sum()))


def _minimise(n, d, loss, bounded: bool, delta: float, starts) -> np.ndarray:
    from scipy.optimize import minimize

    bounds = [(None, None), ALPHA_BOUNDS if bounded else (None, None), (None, None),
              (BETA_MIN, None) if bounded else (None, None)]
    if len(starts) > MAX_STARTS:  # screen: L-BFGS-B from the starts with the lowest objective
        with np.errstate(all="ignore"):
            f0 = [objective(np.array(x, dtype=float), n, d, loss, delta)[0] for x in starts]
        starts = [starts[i] for i in np.argsort(np.nan_to_num(f0, nan=np.inf), kind="stable")[:MAX_STARTS]]
    best = None
    for x0 in starts:
        x0 = np.array(x0, dtype=float)
        if bounded:
            x0[1], x0[3] = np.clip(x0[1], *ALPHA_BOUNDS), max(x0[3], BETA_MIN)
        with np.errstate(all="ignore"):
            res = minimize(objective, x0, args=(n, d, loss, delta), jac=True, method="L-BFGS-B", bounds=bounds)
        if np.isfinite(res.fun) and (best is None or res.fun < best.fun):
            best = res
    if best is None:
        raise ValueError("fit: no start converged to a finite objective")
    return best.x


def grid_starts() -> list[tuple[float, ...]]:
    return list(itertools.product(*_GRID.values()))


def fit(table: Table, bounded: bool = True, delta: float = HUBER_DELTA) -> Fit:
    """The best of L-BFGS-B runs from every grid start, on the training rows (all but the largest model).
    The unbounded fit also starts from the bounded optimum, so its objective is never worse."""
    tr = ~table.held_out
    args = (table.n[tr], table.d[tr], table.loss[tr])
    starts = grid_starts()
    if not bounded:
        starts = [tuple(_minimise(*args, True, delta, starts)), *starts]
    theta = _polish(_minimise(*args, bounded, delta, starts), args, bounded, delta)
    return evaluate(table, _params(theta), bounded, delta)


def _polish(theta: np.ndarray, args: tuple, bounded: bool, delta: float) -> np.ndarray:
    """A derivative-free Nelder-Mead pass from the L-BFGS-B optimum (the nearly-L1 objective has kinks
    where L-BFGS-B stops a little early); alpha clipped to its bounds."""
    from scipy.optimize import minimize

    def clip(th: np.ndarray) -> np.ndarray:
        return np.r_[th[0], np.clip(th[1], *ALPHA_BOUNDS), th[2], max(th[3], BETA_MIN)] if bounded else th

    res = minimize(lambda th: objective(clip(th), *args, delta)[0], theta, method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-15, "maxiter": 4000})
    best = clip(res.x)
    return best if objective(best, *args, delta)[0] <= objective(theta, *args, delta)[0] else theta


def bootstrap(table: Table, base: Fit, n_boot: int = 100, seed: int = 0, level: float = 0.9,
              delta: float = HUBER_DELTA) -> tuple[dict, np.ndarray]:
    """(percentile intervals per parameter, [n_boot, 4] refitted parameters b, alpha, c, beta): training rows
    resampled with replacement, each refit started from the full fit and a few grid points."""
    rng = np.random.default_rng(seed)
    tr = np.flatnonzero(~table.held_out)
    starts = [tuple(_theta(base.params))] + grid_starts()[:: max(1, len(grid_starts()) // 4)]
    out = []
    for _ in range(n_boot):
        idx = rng.choice(tr, size=len(tr), replace=True)
        theta = _minimise(table.n[idx], table.d[idx], table.loss[idx], base.bounded, delta, starts)
        p = _params(theta)
        out.append([p[k] for k in PARAMS])
    draws = np.array(out)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    intervals = {k: (float(np.percentile(draws[:, i], lo)), float(np.percentile(draws[:, i], hi)))
                 for i, k in enumerate(PARAMS)}
    return intervals, draws


def band(draws: np.ndarray, n: np.ndarray, d: np.ndarray, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of the predicted L over bootstrap parameter draws."""
    preds = np.stack([predict(dict(zip(PARAMS, row)), n, d) for row in draws])
    return np.percentile(preds, (1 - level) / 2 * 100, axis=0), np.percentile(preds, (1 + level) / 2 * 100, axis=0)


def report(table: Table, n_boot: int = 50, seed: int = 0, level: float = 0.9, reference: dict | None = None) -> dict:
    """Everything the dashboard shows for a table (JSON-ready): for the fitted quantity ``log`` (ln loss)
    and ``loss``, the bounded and unbounded fits with bootstrap intervals, the points, and per model
    size the fitted curves with their bootstrap bands over the table's range of D, and every bootstrap
    refit's parameters (``draws``). ``reference``: given
    parameters of the ln(loss) fit (e.g. :data:`AUTHORS_FIT`), evaluated on the table as ``"reference"``."""
    out: dict = {"n_boot": n_boot, "seed": seed, "level": level, "fits": [], "points": [], "curves": [], "draws": []}
    if reference is not None:
        out["reference"] = {"quantity": "log", **evaluate(table.log_loss(), reference).to_dict()}
    for i in range(len(table.n)):
        out["points"].append({"group": table.group[i], "N": float(table.n[i]), "D": float(table.d[i]),
                              "loss": float(table.loss[i]), "held_out": bool(table.held_out[i])})
    d_grid = np.geomspace(table.d.min() / 1.5, table.d.max() * 1.5, 40)
    for quantity, t in (("log", table.log_loss()), ("loss", table)):
        for bounded in (True, False):
            f = fit(t, bounded=bounded)
            f.intervals, draws = bootstrap(t, f, n_boot=n_boot, seed=seed, level=level)
            out["fits"].append({"quantity": quantity, **f.to_dict()})
            out["draws"] += [{"quantity": quantity, "bounded": bounded, **dict(zip(PARAMS, map(float, row)))}
                             for row in draws]
            sizes = sorted({(table.group[i], float(table.n[i])) for i in range(len(table.n))}, key=lambda x: x[1])
            for g, n in sizes:
                nn = np.full_like(d_grid, n)
                mid = predict(f.params, nn, d_grid)
                lo, hi = band(draws, nn, d_grid, level)
                tf = np.exp if quantity == "log" else (lambda x: x)  # curves in the table's own unit
                for dd, m, a, b in zip(d_grid, tf(mid), tf(lo), tf(hi), strict=True):
                    out["curves"].append({"quantity": quantity, "bounded": bounded, "group": g, "N": n,
                                          "D": float(dd), "fit": float(m), "lo": float(a), "hi": float(b)})
    return out
