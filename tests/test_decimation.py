"""History decimation without loss: the interval corrections keep the integrals over the
responses exact through merges, the masses of R_A keep their total and first moment, and the
train error from the quadratic form C_A = -R_A Sigma_C R_A^T [D.6] does not jump when the grid
changes (the recursion's does: its small difference of O(1) quadratures cancels only on an
even grid)."""

import jax.numpy as jnp
import numpy as np
import pytest

import dmft_jax as dj
from dmft_jax._integrate import merge_intervals, move_masses
from dmft_jax._volterra import Merged


def _grid(size, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([[0.0], np.cumsum(rng.uniform(0.01, 0.03, size - 1))])


def _response(ts, rate=60.0, jump=1.7):
    """x(s, s') = jump exp(-rate (s - s')) + (s - s')^2 / 4 for s > s' (a fast fall from the
    jump, as the responses under lazy initialization, on a slow background); 0 on and above
    the diagonal (the stored diagonal is zero)."""
    lag = ts[:, None] - ts[None, :]
    return np.where(lag > 0, jump * np.exp(-rate * lag) + lag**2 / 4, 0.0)


def _integrals(x, jump, ts, d1, d2, kernel, diagonal_end=True):
    """Trapezoid (with the jump at the diagonal end) plus corrections, the way the models
    integrate: sum_j K(s_j) x(s_j, t_k) along the first argument from t_k, and along the
    second argument up to t_k. The correction of interval j takes the interval mean of
    `kernel` (a function of time), except on the interval next to the diagonal, where it
    takes the kernel at the diagonal end (`diagonal_end`; the mean if False)."""
    size = ts.shape[0]
    xh = np.where(np.eye(size, dtype=bool), jump[None, :], x)
    h = np.diff(ts)
    k = kernel(ts)
    kbar = 0.5 * (k[:-1] + k[1:])
    first, second = np.zeros(size), np.zeros(size)
    for c in range(size):
        for j in range(size - 1):
            if j >= c:
                first[c] += 0.5 * h[j] * (k[j] * xh[j, c] + k[j + 1] * xh[j + 1, c])
                first[c] += (k[c] if diagonal_end and j == c else kbar[j]) * d1[j, c]
            if j + 1 <= c:
                second[c] += 0.5 * h[j] * (k[j] * xh[c, j] + k[j + 1] * xh[c, j + 1])
                second[c] += (k[c] if diagonal_end and j + 1 == c else kbar[j]) * d2[c, j]
    return first, second


def _decimate(size, rng):
    """Keep t_0, the last quarter and a random half of the other odd indices."""
    idx = np.arange(size)
    odd = idx[(idx % 2 == 1) & (idx < size - size // 4 - 1)]
    drop = rng.choice(odd, size=len(odd) // 2, replace=False)
    return np.setdiff1d(idx, drop)


def _merge_rounds(x, jump, ts, rng, rounds):
    """`rounds` decimations of a response x on ts, each merging from the last: yields the
    kept indices and the corrections (d1, d2) on them after each round."""
    size = ts.shape[0]
    d1 = d2 = np.zeros((size, size))
    kept = np.arange(size)
    for _ in range(rounds):
        keep = _decimate(len(kept), rng)
        n = len(keep)
        d1, d2 = merge_intervals(x[np.ix_(kept, kept)], jump[kept], d1, d2, ts[kept], keep)
        d1, d2 = np.asarray(d1)[:n, :n], np.asarray(d2)[:n, :n]
        kept = kept[keep]
        yield kept, d1, d2


def test_merge_intervals_keeps_the_fine_integrals():
    """Two rounds of merges: trapezoid on the kept times plus corrections equals the
    trapezoid on the finest grid exactly for a constant kernel (1e-13), and up to the kernel's
    variation over a merged interval for a smooth one (measured 3e-4 and 1e-3 after one and
    two rounds, on integrals of ~0.13; without the corrections 2.2e-2 and 4.5e-2). The
    corrections of `dmft_jax._volterra.Merged` are those of the NumPy loop here."""
    rng = np.random.default_rng(1)
    size = 48
    ts = _grid(size)
    x = _response(ts)
    jump = np.full(size, 1.7)
    zeros = np.zeros((size, size))
    fine = {name: _integrals(x, jump, ts, zeros, zeros, kernel)
            for name, kernel in (("flat", lambda t: np.ones_like(t)),
                                 ("smooth", lambda t: 1.0 + 0.5 * np.sin(t)))}
    for kept, d1, d2 in _merge_rounds(x, jump, ts, rng, 2):
        x_k = x[np.ix_(kept, kept)]
        wave = lambda t: 1.0 + 0.5 * np.sin(t)                               # noqa: E731
        plain = _integrals(x_k, jump[kept], ts[kept], 0 * d1, 0 * d2, wave)
        flat = _integrals(x_k, jump[kept], ts[kept], d1, d2, np.ones_like)
        smooth = _integrals(x_k, jump[kept], ts[kept], d1, d2, wave)
        for arg in (0, 1):
            ref_flat, ref_smooth = fine["flat"][arg][kept], fine["smooth"][arg][kept]
            np.testing.assert_allclose(flat[arg], ref_flat, rtol=0, atol=1e-13)
            err, err_plain = (np.max(np.abs(y[arg] - ref_smooth)) for y in (smooth, plain))
            assert err < err_plain / 20 and err_plain > 1e-2
        # the library's corrections: smooth minus plain is the correction part
        corr = Merged(jnp.asarray(d1), jnp.asarray(d2))
        k = jnp.asarray(wave(ts[kept]))
        np.testing.assert_allclose(np.asarray(corr.first(k, response=True)),
                                   smooth[0] - plain[0], rtol=0, atol=1e-14)
        np.testing.assert_allclose(np.asarray(corr.second(k, response=True)),
                                   smooth[1] - plain[1], rtol=0, atol=1e-14)


def test_a_response_merged_next_to_its_diagonal_is_weighed_at_the_diagonal():
    """A response that falls from its jump within ~1/60 of the diagonal, merged into intervals
    of up to 0.1 under a kernel that varies over them: the fall's mass is weighed by the
    kernel at the diagonal end. Measured after three rounds of merges: errors 5.4e-3 (first
    argument) and 5.8e-3 (second) against the finest grid (the rest is the kernel's variation
    against the slow background), where the interval mean of the kernel gives 2.6e-2 and
    2.4e-2 (integrals up to 0.27)."""
    rng = np.random.default_rng(6)
    size = 64
    ts = _grid(size, seed=7)
    x = _response(ts)
    jump = np.full(size, 1.7)
    zeros = np.zeros((size, size))
    kernel = lambda t: 1.0 + 2.0 * np.sin(8.0 * t)                          # noqa: E731
    fine = _integrals(x, jump, ts, zeros, zeros, kernel)
    *_, (kept, d1, d2) = _merge_rounds(x, jump, ts, rng, 3)
    x_k, j_k, t_k = x[np.ix_(kept, kept)], jump[kept], ts[kept]
    at_end = _integrals(x_k, j_k, t_k, d1, d2, kernel)
    at_mean = _integrals(x_k, j_k, t_k, d1, d2, kernel, diagonal_end=False)
    for arg in (0, 1):
        ref = fine[arg][kept]
        err_end, err_mean = (np.max(np.abs(y[arg] - ref)) for y in (at_end, at_mean))
        assert err_end < err_mean / 3, (arg, err_end, err_mean)


def test_merge_intervals_of_a_symmetric_function():
    """jump None (C, C_A): every interval counts, both directions agree (d2 = d1^T)."""
    rng = np.random.default_rng(2)
    size = 32
    ts = _grid(size, seed=3)
    x = np.exp(-np.abs(ts[:, None] - ts[None, :]) * 20.0)
    zeros = np.zeros((size, size))
    keep = _decimate(size, rng)
    d1, d2 = (np.asarray(d) for d in merge_intervals(x, None, zeros, zeros, ts, keep))
    n = len(keep)
    np.testing.assert_allclose(d1[:n, :n], d2[:n, :n].T, atol=1e-15)
    h, hk = np.diff(ts), np.diff(ts[keep])
    full = np.sum(0.5 * h[:, None] * (x[:-1] + x[1:]), axis=0)[keep]
    xk = x[np.ix_(keep, keep)]
    coarse = np.sum(0.5 * hk[:, None] * (xk[:-1] + xk[1:]), axis=0)
    np.testing.assert_allclose(coarse + d1[:n - 1, :n].sum(axis=0), full, atol=1e-14)


def test_move_masses_keeps_mass_and_first_moment():
    rng = np.random.default_rng(4)
    size = 40
    ts = _grid(size, seed=5)
    x = rng.normal(size=(3, size))
    keep = _decimate(size, rng)
    moved = np.asarray(move_masses(jnp.asarray(x), jnp.asarray(ts), jnp.asarray(keep)))[:, keep]
    np.testing.assert_allclose(moved.sum(axis=1), x.sum(axis=1), rtol=1e-13)
    np.testing.assert_allclose(moved @ ts[keep], x @ ts, rtol=1e-12)


def _lazy(m=64):
    h = [0.0, 0.9, 0.5]
    return dj.symmetric_dmft(h, dj.target("same", h), tau=0.3, alpha=0.3, m=m, gamma0=1.0)


def test_train_error_does_not_jump_where_the_step_changes():
    """Lazy Fig. 3, m = 64, trapezoid h = 0.05 to t = 10.5, with and without one step of 0.9 h
    at t = 10. The quadratic form gives e_tr = rho Sigma_C rho / 2 >= 0; one, two and five
    steps after the change it is 0.9%, 0.4% and 0.04% off the even grid's (interpolated). The
    recursion of spec section 6 (before the quadratic form) was 32% and 10% off."""
    h, t_max = 0.05, 10.5
    even = h * np.arange(round(t_max / h) + 1)
    k = round(10.0 / h)
    changed = np.concatenate([even[:k + 1], even[k] + 0.9 * h + h * np.arange(len(even) - k - 1)])
    model, trap = _lazy(), dj.Trapezoid()
    sols = [dj.solve(model, dj.TimeGrid(ts=ts), trap) for ts in (even, changed)]
    e_even, e_changed = (np.asarray(s.e_tr) for s in sols)
    assert np.all(e_even >= 0) and np.all(e_changed >= 0)
    off = [abs(e_changed[i] / np.interp(changed[i], even, e_even) - 1) for i in (k + 1, k + 5)]
    assert off[0] < 2e-2 and off[1] < 2e-3, off


@pytest.mark.gpu      # 12 s on the 2-core CPU: heavy tier (the mechanisms are checked above)
def test_decimated_solve_follows_the_full_history():
    """Lazy Fig. 3, m = 64, rtol 1e-3 to t = 8 (177 steps): a 128-point history (two
    decimations) against one that keeps every step. The steps are the same; e_tr agrees to 5%
    and e_ts to 1e-5 relative (measured 1.4% and 2e-6; with the recursion for C_A and no
    interval corrections, before this test, e_tr was off 66-fold and e_ts by 7e-3)."""
    model = _lazy()
    sols = [dj.solve(model, dj.Adaptive(8.0, rtol=1e-3, atol=1e-5, history=size,
                                        max_decimation_error=np.inf))
            for size in (128, 224)]
    assert int(sols[0].stats["decimations"]) == 2 and int(sols[1].stats["decimations"]) == 0
    n = int(sols[1].stats["accepted"])
    np.testing.assert_array_equal(np.asarray(sols[0].t[:n + 1]), np.asarray(sols[1].t[:n + 1]))
    e0, e1 = (np.asarray(s.e_tr[:n + 1]) for s in sols)
    assert np.max(np.abs(e0 / e1 - 1)) < 5e-2
    s0, s1 = (np.asarray(s.e_ts[:n + 1]) for s in sols)
    assert np.max(np.abs(s0 / s1 - 1)) < 1e-5


@pytest.mark.parametrize("row_norm", [False, True])
def test_decimation_scores_entry_or_row_wise(row_norm):
    """The interpolation score of a stored time, in units of atol + rtol |entry| (default) or
    atol + rtol max |row| (`Adaptive(decimation_norm="row")`, the step control's norm). A
    response row that is 1 next to its diagonal and ~1e-3 in its old tail, with a bump of
    5e-4 at one old time, scores 5e-4 / (atol + rtol 1.5e-3) = 43 there entry-wise (the time
    stays) and 5e-4 / (atol + rtol) = 0.495 row-wise (it may go)."""
    from dmft_jax._integrate import _interpolation_scores
    model = dj.h2_model("fig8", tau=1.0, alpha_bar=0.9, a=1.0)
    size, rtol, atol = 16, 1e-3, 1e-5
    ts = jnp.asarray(np.linspace(0.0, 3.0, size))
    row = np.full(size, 1e-3)
    row[5] += 5e-4
    row[-2:] = [1.0, 0.0]                      # R(t, t^-) next to the diagonal, R(t, t) = 0
    state = model.init(size)
    state["R_d"] = state["R_d"].at[size - 1].set(jnp.asarray(row))
    score = np.asarray(_interpolation_scores(model, state, ts, rtol, atol, row_norm=row_norm))
    scale = 1.0 if row_norm else 1.5e-3
    assert score[5] == pytest.approx(5e-4 / (atol + rtol * scale), rel=1e-12)
    assert np.all(score[1:4] == 0.0)


def test_decimation_norm_is_checked():
    with pytest.raises(ValueError, match="decimation_norm"):
        dj.Adaptive(1.0, decimation_norm="max")
