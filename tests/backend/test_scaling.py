"""Scaling-law fit (backend.scaling) on the authors' SWA-128 LongPPL table and on small known tables."""

from __future__ import annotations

import numpy as np
import pytest

from backend import scaling as S


@pytest.fixture(scope="module")
def table():
    return S.load_table()


@pytest.fixture(scope="module")
def fits(table):
    log = table.log_loss()
    return {"bounded": S.fit(log, bounded=True), "unbounded": S.fit(log, bounded=False)}


def test_the_authors_table_reads_as_published(table):
    assert len(table.n) == 23 and table.group.count("S4") == 6 and int(table.held_out.sum()) == 6
    assert table.n[0] == 14999424 and table.d[0] == pytest.approx(200.110938 * 14999424)
    assert table.loss[0] == 20.7426 and set(np.array(table.group)[table.held_out]) == {"S4"}


def test_plain_tables_and_errors():
    t = S.parse_table("N,D,loss\n1e6,2e7,5.0\n1e6,4e7,4.0\n2e6,4e7,3.5\n")
    assert list(t.d) == [2e7, 4e7, 4e7] and list(t.held_out) == [False, False, True]
    with pytest.raises(S.TableError, match="row 3: loss must be a positive number"):
        S.parse_table("N,D,loss\n1e6,2e7,5.0\n2e6,4e7,-1\n")
    with pytest.raises(S.TableError, match="expected columns"):
        S.parse_table("a,b\n1,2\n")
    with pytest.raises(S.TableError, match="two model sizes"):
        S.parse_table("N,D,loss\n1e6,2e7,5.0\n")


def test_r2_and_the_objective_gradient():
    assert S.r2([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    assert S.r2([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == 0.0
    rng = np.random.default_rng(0)
    n, d, loss = 10 ** rng.uniform(7, 8, 9), 10 ** rng.uniform(9, 11, 9), rng.uniform(1.5, 3.0, 9)
    theta = np.array([5.0, 0.3, 6.0, 0.25])
    for delta in (1e-3, 10.0):  # the linear and the quadratic branch of the Huber loss
        f, g = S.objective(theta, n, d, loss, delta)
        num = [(S.objective(theta + e, n, d, loss, delta)[0] - S.objective(theta - e, n, d, loss, delta)[0]) / 2e-7
               for e in np.eye(4) * 1e-7]
        np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-9)


def test_known_law_is_recovered():
    n = np.repeat([1e7, 3e7, 1e8, 3e8], 4)
    d = n * np.tile([20.0, 50.0, 100.0, 200.0], 4)
    law = {"b": 40.0, "alpha": 0.25, "c": 900.0, "beta": 0.3}
    t = S.Table(n, d, S.predict(law, n, d), tuple(str(x) for x in n))
    f = S.fit(t, bounded=True)
    assert f.objective < 1e-9 and f.r2_train == pytest.approx(1.0) and f.r2_val == pytest.approx(1.0)
    assert f.params["alpha"] == pytest.approx(0.25, abs=1e-3) and f.params["beta"] == pytest.approx(0.3, abs=1e-3)


def test_bounded_fit_is_a_minimum_and_unbounded_goes_lower_elsewhere(table, fits):
    from scipy.optimize import minimize

    log = table.log_loss()
    b, u = fits["bounded"], fits["unbounded"]
    assert S.ALPHA_BOUNDS[0] <= b.params["alpha"] <= S.ALPHA_BOUNDS[1] and (b.n_train, b.n_val) == (17, 6)
    tr = ~log.held_out
    # reference: derivative-free Nelder-Mead polish from the fit (alpha clipped) finds nothing lower
    clip = lambda th: np.r_[th[0], np.clip(th[1], *S.ALPHA_BOUNDS), th[2:]]  # noqa: E731
    ref = minimize(lambda th: S.objective(clip(th), log.n[tr], log.d[tr], log.loss[tr])[0], S._theta(b.params),
                   method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000})
    assert b.objective <= ref.fun * (1 + 1e-9)
    assert b.objective == pytest.approx(S.evaluate(log, b.params).objective)
    # poorly identified exponents: the unbounded refit reaches a lower loss at very different alpha, beta
    assert u.objective < b.objective and not S.ALPHA_BOUNDS[0] <= u.params["alpha"] <= S.ALPHA_BOUNDS[1]
    assert abs(u.params["beta"] - b.params["beta"]) > 0.05
    assert b.r2_train > 0.98 and b.r2_val > 0.95  # the authors report 0.984198 / 0.963306


def test_bootstrap_intervals(table, fits):
    log = table.log_loss()
    intervals, draws = S.bootstrap(log, fits["unbounded"], n_boot=8, seed=1)
    assert draws.shape == (8, 4) and set(intervals) == set(S.PARAMS)
    assert all(lo <= hi for lo, hi in intervals.values())
    lo, hi = S.band(draws, log.n[:3], log.d[:3])
    assert (lo <= hi).all()


def test_at_the_authors_parameters_r2_is_theirs_and_our_bounded_fit_is_no_worse(table, fits):
    ref = S.evaluate(table.log_loss(), S.AUTHORS_FIT)
    assert ref.r2_train == pytest.approx(S.AUTHORS_R2["train"], abs=1e-4) == pytest.approx(0.984198, abs=1e-4)
    assert ref.r2_val == pytest.approx(S.AUTHORS_R2["validation"], abs=1e-4) == pytest.approx(0.963306, abs=1e-4)
    assert (ref.n_train, ref.n_val) == (17, 6)
    assert fits["bounded"].objective <= ref.objective
    assert S.ALPHA_BOUNDS[0] <= fits["bounded"].params["alpha"] <= S.ALPHA_BOUNDS[1]
    assert fits["bounded"].params["beta"] >= S.BETA_MIN


def test_report_of_a_users_table_and_the_cli(tmp_path, capsys):
    import json

    from backend.cli import main

    n = np.repeat([1e7, 3e7, 1e8], 3)
    d = n * np.tile([20.0, 60.0, 180.0], 3)
    loss = S.predict({"b": 40.0, "alpha": 0.25, "c": 900.0, "beta": 0.3}, n, d) * np.exp(
        np.random.default_rng(3).normal(0, 0.01, 9))
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss\n" + "".join(f"{a},{b},{c}\n" for a, b, c in zip(n, d, loss)))
    rep = S.report(S.load_table(path), n_boot=4)
    assert "reference" not in rep and len(rep["fits"]) == 4 and len(rep["points"]) == 9
    assert {(f["quantity"], f["bounded"]) for f in rep["fits"]} == {("log", True), ("log", False), ("loss", True),
                                                                    ("loss", False)}
    curves = [c for c in rep["curves"] if c["quantity"] == "loss" and c["bounded"]]
    assert len(curves) == 3 * 40 and all(c["lo"] <= c["hi"] for c in curves)
    out = tmp_path / "rep.json"
    assert main(["scaling", "--table", str(path), "--boot", "3", "--out", str(out), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["fit"] for r in rows] == ["bounded", "unbounded", "bounded", "unbounded"]
    assert json.loads(out.read_text())["n_boot"] == 3
    path.write_text("N,D,loss\n1e6,2e7,5\n")
    assert main(["scaling", "--table", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: table: at least two model sizes are needed (the largest is held out)"
