"""The torch side of featclf.linear: the losses, their gradients and the L-BFGS solver."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

# L-BFGS memory: scipy's default. More pairs cost memory (classes x features each) for little.
_HISTORY = 10

# A warm-started fit ends no nearer its start's gradient than this fraction of it (_lbfgs).
_WARM_PROGRESS = 0.3

# The losses take no exponential below exp(-_EXP_FLOOR): far from subnormal floats, and
# under 1e-32 of the largest term, which changes no float64 sum of a row (_loss_and_grad).
_EXP_FLOOR = 75.0

# Below this many multiply-adds per matrix product (rows x features x classes) one thread is
# faster: OpenMP's fork/join costs more than the product (4,000 x 84 x 10 features of MNIST:
# 9x slower with 2 threads than 1 on a busy 2-core machine).
_ONE_THREAD_BELOW = 1 << 24


def _n_threads(requested: int | None, device: torch.device, work: int) -> int | None:
    """The CPU threads for a fit: as asked, else 1 for small problems, else torch's default."""
    if requested is not None or device.type != "cpu":
        return requested
    return 1 if work < _ONE_THREAD_BELOW else torch.get_num_threads()


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op threads (None: unchanged), restored afterwards.

    torch's CPU kernels (MKL, OpenMP) ignore ``threadpoolctl``'s BLAS limits, which
    ``featclf.compare`` sets for scikit-learn's one-thread-per-fit parallelism.
    """
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _loss_and_grad(kind: str, S: torch.Tensor, target: torch.Tensor, smoothing: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Sum of the per-sample losses at scores ``S`` (n, k) and its gradient in ``S``.

    No exponential is taken of less than ``-_EXP_FLOOR`` (an entry that far below its row's
    largest score counts as ``exp(-_EXP_FLOOR)`` of it): ``exp`` of less than about -87 is a
    subnormal float32, and arithmetic on subnormals is up to 100x slower on x86 CPUs. At a
    large C, where scores lie tens apart, the gradients of the probe grid's upper half spent
    most of their time on them (measured: 0.3 s a step instead of 0.08 s, 20k x 512 x 10).
    """
    if kind == "logistic_binary":  # target: +-1 of shape (n, 1)
        margin = (target * S).clamp_(max=_EXP_FLOOR)
        return torch.nn.functional.softplus(-margin).sum(), -target * torch.sigmoid(-margin)
    if kind == "squared_hinge":  # target: +-1 of shape (n, k), k one-vs-rest problems
        slack = torch.clamp(1.0 - target * S, min=0.0)
        return (slack * slack).sum(), -2.0 * target * slack
    onehot = torch.zeros_like(S).scatter_(1, target[:, None], 1.0)
    if kind == "logistic":  # target: class index
        Z = S
        scale = 1.0
    else:  # "crammer_singer": tau * logsumexp_r((1[r != y] + s_r - s_y) / tau), smooth max
        Z = (1.0 - onehot + S - S.gather(1, target[:, None])) / smoothing
        scale = smoothing
    top = Z.max(dim=1, keepdim=True).values
    E = torch.exp((Z - top).clamp_(min=-_EXP_FLOOR))
    total = E.sum(1)
    loss = scale * (top[:, 0] + torch.log(total) - (Z * onehot).sum(1)).sum()
    P = E / total[:, None]
    return loss, P - onehot  # for Crammer-Singer the r = y term sums the others' weights


def _lbfgs(kind: str, X: torch.Tensor, target: torch.Tensor, W: torch.Tensor, b: torch.Tensor,
           *, C: float, fit_intercept: bool, penalize_intercept: bool, tol: float,
           max_iter: int, smoothing: float, warm: bool = False,
           memory: dict | None = None) -> tuple[int, bool]:  # fmt: skip
    """Minimise mean loss + ||W||^2 / (2 C n) in place over ``W`` (k, d) and ``b`` (k,).

    Dividing scikit-learn's objective by ``C * n`` leaves its minimiser unchanged and makes
    the gradient tolerance mean the same at every C (``LogisticRegression`` does the same).
    Returns the number of iterations and whether it converged: the largest gradient entry
    below ``tol``, or the objective flat at the dtype's precision.

    ``warm``: ``W`` and ``b`` are the solution at a neighbouring C (a regularisation path),
    and the largest gradient entry must also fall to :data:`_WARM_PROGRESS` of its value at
    that start. At a large C the objective is nearly flat in many directions, so a
    neighbour's solution already has every gradient entry below ``tol`` while its own
    optimum lies far away (measured at 20k x 512 x 100 classes: from C = 1 on, every fit of
    the path stopped at its start, one model for C = 1 to 1e5, 0.5-4 test-accuracy points
    from each C's optimum; a fit from zero stops far above the optimum too, as
    scikit-learn's does: 9x its objective at C = 1000).

    ``memory``: a dict shared by the fits of a path, where each leaves its curvature pairs
    and the next starts from them. Only the L2 term's weight changes between two values of C,
    so a pair ``(s, y)`` of one stays exact for the next with ``y`` moved by the change of
    weight times ``s`` (the penalised entries only); the unit step then holds from the start.

    L-BFGS (two-loop recursion, scipy's 10 pairs) with a backtracking Armijo line search: the
    objectives are strongly convex (the L2 term), so every step keeps ``s . y > 0`` and Wolfe's
    curvature condition is not needed; the unit step is accepted almost always, one
    evaluation (two matrix products) per iteration. Written here rather than
    ``torch.optim.LBFGS``, whose constructor imports ``torch._dynamo`` (5-9 s, once per process).
    """
    n, k, d = X.shape[0], W.shape[0], W.shape[1]
    alpha = 1.0 / (C * n)
    theta = torch.cat([W.reshape(-1), b])

    def evaluate(theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        Wt, bt = theta[: k * d].view(k, d), theta[k * d:]
        S = torch.addmm(bt, X, Wt.T) if fit_intercept else X @ Wt.T
        loss, G = _loss_and_grad(kind, S, target, smoothing)
        G = G / n
        grad = torch.empty_like(theta)
        grad[: k * d].view(k, d).copy_(torch.addmm(Wt, G.T, X, beta=alpha))  # G^T X + alpha W
        objective = loss / n + 0.5 * alpha * (Wt * Wt).sum()
        if not fit_intercept:
            grad[k * d:] = 0.0
        elif penalize_intercept:  # liblinear's bias: one more weight, of a constant feature
            grad[k * d:] = G.sum(0) + alpha * bt
            objective = objective + 0.5 * alpha * (bt * bt).sum()
        else:
            grad[k * d:] = G.sum(0)
        return float(objective), grad

    f, g = evaluate(theta)
    if warm:
        tol = min(tol, _WARM_PROGRESS * float(g.abs().max()))
    pairs: list[tuple[torch.Tensor, torch.Tensor, float]] = []
    key = (kind, tuple(theta.shape), theta.dtype, theta.device)
    if memory is not None and memory.get("key") == key:
        shift = alpha - memory["alpha"]
        penalised = torch.ones_like(theta)
        if not penalize_intercept:
            penalised[k * d:] = 0.0
        for s, y, _ in memory["pairs"]:
            y = y + shift * penalised * s
            sy = float(s @ y)
            if sy > 1e-10 * float(y @ y):
                pairs.append((s, y, 1.0 / sy))
    n_iter, converged = 0, float(g.abs().max()) <= tol
    # float32 sums over many rows stop decreasing at about this relative size: three such
    # iterations in a row are the dtype's precision floor, as converged as it can be.
    flat, flat_steps = 4 * torch.finfo(theta.dtype).eps, 0
    while not converged and n_iter < max_iter:
        n_iter += 1
        q = -g
        history = []
        for s, y, rho in reversed(pairs):
            a = rho * float(s @ q)
            history.append(a)
            q = q - a * y
        if pairs:
            s, y, _ = pairs[-1]
            q = q * (float(s @ y) / float(y @ y))
        else:
            q = q * min(1.0, 1.0 / float(g.abs().sum()))
        for (s, y, rho), a in zip(pairs, reversed(history)):
            q = q + (a - rho * float(y @ q)) * s
        slope = float(g @ q)
        if slope >= 0:  # not a descent direction (rounding): restart from steepest descent
            pairs.clear()
            q = -g * min(1.0, 1.0 / float(g.abs().sum()))
            slope = float(g @ q)
        step = 1.0
        while True:
            candidate = theta + step * q
            f_new, g_new = evaluate(candidate)
            if f_new <= f + 1e-4 * step * slope or step < 1e-10:
                break
            # Minimum of the quadratic through f, the slope and f_new, kept in [0.1, 0.5] x.
            shrink = -slope * step / (2.0 * (f_new - f - slope * step))
            step *= min(0.5, max(0.1, shrink))
        s, y = candidate - theta, g_new - g
        sy = float(s @ y)
        if sy > 1e-10 * float(y @ y):
            pairs.append((s, y, 1.0 / sy))
            del pairs[:-_HISTORY]
        flat_steps = flat_steps + 1 if abs(f - f_new) <= flat * max(1.0, abs(f)) else 0
        theta, f, g = candidate, f_new, g_new
        converged = float(g.abs().max()) <= tol or flat_steps >= 3
    if memory is not None:
        memory.update(key=key, alpha=alpha, pairs=pairs)
    W.copy_(theta[: k * d].view(k, d))
    b.copy_(theta[k * d:])
    return max(n_iter, 1), converged
