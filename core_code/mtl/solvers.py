"""Small solvers on the tasks' gradient Gram matrix ``M = G G^T`` (T x T, float64).

Every gradient method needs only inner products of the task gradients to find its task
weights, so the solvers work on ``M`` (a T x T matrix in Python floats), never on the
P-dimensional gradients: their cost does not grow with the model.

- ``min_norm_2`` / ``min_norm_weights``: MGDA's min-norm point of the convex hull
  (Sener & Koltun 2018: closed form for two vectors, Frank-Wolfe with that exact line
  search for more);
- ``cagrad_weights``: CAGrad's inner problem (Liu et al. 2021);
- ``imtl_g_weights``: IMTL-G's closed form (Liu et al. 2021, ICLR).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

Matrix = list[list[float]]

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def min_norm_2(v1v1: float, v1v2: float, v2v2: float) -> float:
    """gamma in [0, 1] minimising ||gamma v1 + (1 - gamma) v2||^2, from the three inner products."""
    denom = v1v1 - 2.0 * v1v2 + v2v2
    if denom <= 0.0:  # v1 == v2: every gamma is optimal
        return 0.5
    return min(1.0, max(0.0, (v2v2 - v1v2) / denom))


def _matvec(m: Matrix, a: Sequence[float]) -> list[float]:
    return [sum(row[j] * a[j] for j in range(len(a))) for row in m]


def _quad(m: Matrix, a: Sequence[float]) -> float:
    return sum(ai * mi for ai, mi in zip(a, _matvec(m, a)))


def min_norm_weights(m: Matrix, max_iter: int = 250, tol: float = 1e-10) -> list[float]:
    """alpha on the simplex minimising ||sum_t alpha_t g_t||^2 given ``m[i][j] = g_i . g_j``.

    Two tasks: the closed form. More: Frank-Wolfe (Sener & Koltun 2018, Algorithm 2)
    from the uniform point, each step's line search solved exactly by ``min_norm_2``.
    """
    n = len(m)
    if n == 1:
        return [1.0]
    if n == 2:
        gamma = min_norm_2(m[0][0], m[0][1], m[1][1])
        return [gamma, 1.0 - gamma]
    alpha = [1.0 / n] * n
    for _ in range(max_iter):
        ma = _matvec(m, alpha)
        t = min(range(n), key=lambda i: ma[i])
        # line search between theta = sum alpha g (v1) and g_t (v2)
        gamma = min_norm_2(_quad(m, alpha), ma[t], m[t][t])
        new = [gamma * a for a in alpha]
        new[t] += 1.0 - gamma
        if sum(abs(x - y) for x, y in zip(new, alpha)) < tol:
            alpha = new
            break
        alpha = new
    return alpha


def golden_section(f: Callable[[float], float], lo: float = 0.0, hi: float = 1.0, iters: int = 80) -> float:
    """The minimiser of a convex ``f`` on [lo, hi] (golden-section search, ~0.618^iters of the interval)."""
    a, b = lo, hi
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    best = min((f(x), x) for x in (lo, hi, (a + b) / 2.0))
    return best[1]


def cagrad_weights(m: Matrix, c: float, max_iter: int = 100) -> tuple[list[float], float]:
    """CAGrad's w on the simplex and the factor ``lam``: the update is ``g0 + lam * g_w``.

    With g0 the average gradient, phi = c^2 ||g0||^2 and g_w = sum_i w_i g_i, w minimises
    F(w) = g_w . g0 + sqrt(phi) ||g_w|| (Liu et al. 2021, eq. 7's dual); then
    d = g0 + sqrt(phi) / ||g_w|| * g_w, i.e. ``lam = sqrt(phi) / ||g_w||`` (0 if g_w is 0).
    Two tasks: a golden-section search on w_0; more: Frank-Wolfe with that line search.
    """
    n = len(m)
    b = [sum(row) / n for row in m]  # g_i . g0
    g0_sq = sum(b) / n
    s = c * math.sqrt(max(g0_sq, 0.0))

    def F(w: Sequence[float]) -> float:
        return sum(wi * bi for wi, bi in zip(w, b)) + s * math.sqrt(max(_quad(m, w), 0.0))

    if n == 1:
        w = [1.0]
    elif n == 2:
        a = golden_section(lambda x: F((x, 1.0 - x)))
        w = [a, 1.0 - a]
    else:
        w = [1.0 / n] * n
        for _ in range(max_iter):
            mw = _matvec(m, w)
            norm = math.sqrt(max(_quad(m, w), 0.0))
            grad = [bi + (s * mwi / norm if norm > 0 else 0.0) for bi, mwi in zip(b, mw)]
            t = min(range(n), key=lambda i: grad[i])

            def along(gamma: float, w: Sequence[float] = tuple(w), t: int = t) -> list[float]:
                out = [(1.0 - gamma) * wi for wi in w]
                out[t] += gamma
                return out

            gamma = golden_section(lambda x, along=along: F(along(x)))
            new = along(gamma)
            done = sum(abs(x - y) for x, y in zip(new, w)) < 1e-12
            w = new
            if done:
                break
    gw_norm = math.sqrt(max(_quad(m, w), 0.0))
    lam = s / gw_norm if gw_norm > 0 else 0.0
    return w, lam


def imtl_g_weights(m: Matrix) -> list[float]:
    """IMTL-G's alpha (summing to 1): ``sum_t alpha_t g_t`` has equal projections on every unit g_t.

    With u_t = g_t / ||g_t||, D rows g_1 - g_t and U rows u_1 - u_t (t >= 2):
    alpha_{2..T} = g_1 U^T (D U^T)^-1, alpha_1 = 1 - sum alpha_{2..T} (Liu et al. 2021,
    ICLR, eq. 6). Computed from ``m`` (g_i . u_j = m[i][j] / ||g_j||). A zero gradient or a
    singular system (parallel gradients) gives equal weights.
    """
    n = len(m)
    if n == 1:
        return [1.0]
    norms = [math.sqrt(max(m[i][i], 0.0)) for i in range(n)]
    if min(norms) == 0.0:
        return [1.0 / n] * n
    a = [[m[i][j] / norms[j] for j in range(n)] for i in range(n)]  # g_i . u_j
    k = n - 1
    # system: x (D U^T) = g_1 U^T, x a row of k; (D U^T)[r][c] = (g_1 - g_{r+1}) . (u_1 - u_{c+1})
    dut = [[a[0][0] - a[0][c + 1] - a[r + 1][0] + a[r + 1][c + 1] for c in range(k)] for r in range(k)]
    rhs = [a[0][0] - a[0][c + 1] for c in range(k)]
    # solve (D U^T)^T x^T = rhs^T by Gaussian elimination with partial pivoting
    sys_m = [[dut[r][c] for r in range(k)] + [rhs[c]] for c in range(k)]
    for col in range(k):
        piv = max(range(col, k), key=lambda r: abs(sys_m[r][col]))
        scale = max(abs(v) for row in dut for v in row) or 1.0
        if abs(sys_m[piv][col]) <= 1e-12 * scale:
            return [1.0 / n] * n
        sys_m[col], sys_m[piv] = sys_m[piv], sys_m[col]
        for r in range(k):
            if r != col:
                f = sys_m[r][col] / sys_m[col][col]
                sys_m[r] = [x - f * y for x, y in zip(sys_m[r], sys_m[col])]
    x = [sys_m[r][k] / sys_m[r][r] for r in range(k)]
    return [1.0 - sum(x)] + x
