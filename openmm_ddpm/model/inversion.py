"""Inverting one step of the flow map: the encoding half of ``EDMDiffusion.encode``.

G_i(x) = y is solved for x from the reverse Heun step, by chord iterations
preconditioned with the previous step's exact Jacobian, then Newton steps;
the exact Jacobian at the accepted iterate gives log|det dG_i/dx|. The
solver only locates the point: the density is the Jacobian at it
(docs/exactness.md, "What makes log q exact").
"""
import math

import torch


def invert_step(diffusion, y, sigma_from, sigma_to, t, chord=None):
    """Solve G_i(x) = y for x, with the exact log-det at the solution.

    Starts from the reverse Heun step (error O(h^3)) and iterates
    x <- x - M^{-1} (G_i(x) - y) while it contracts, with M the exact
    Jacobian of the step solved just before (``chord``: LU factors of
    dG_{i+1}/dx at its solution, which differs from dG_i/dx by O(h)),
    or M = I for the first step solved; then finishes with Newton steps
    x <- x - J^{-1} (G_i(x) - y), whose exact Jacobian J at the accepted
    iterate also gives log|det dG_i/dx|. The chord makes the cheap
    iterations converge, so Newton usually needs that one Jacobian only.
    The solver only finds the point; the density is the Jacobian at it.

    Returns
    -------
    x : torch.Tensor, (n, D)
    logdet : torch.Tensor, (n,)
    converged : torch.BoolTensor, (n,)
        Residual below tolerance and det > 0.
    jacobian : torch.Tensor, (n, D, D)
        dG_i/dx at x (meaningful where converged).
    """
    tolerance = diffusion.settings.inversion_tolerance * (1.0 + y.abs().amax(dim=-1))
    x = _fixed_point(diffusion, diffusion.heun_step(y, sigma_to, sigma_from, t), y, sigma_from, sigma_to, t, tolerance, chord)
    return _newton(diffusion, x, y, sigma_from, sigma_to, t, tolerance)


def _fixed_point(diffusion, x, y, sigma_from, sigma_to, t, tolerance, chord=None):
    """Iterations x <- x - M^{-1} (G(x) - y), per sample, until converged or no longer contracting."""
    error = torch.full_like(tolerance, math.inf)
    active = torch.ones_like(tolerance, dtype=torch.bool)
    n_iterations = diffusion.settings.max_fixed_point_iterations
    if n_iterations is None:
        n_iterations = 0 if y.shape[1] <= 16 and chord is None else 10
    for _ in range(n_iterations):
        residual = diffusion.heun_step(x, sigma_from, sigma_to, t) - y
        new_error = torch.nan_to_num(residual.abs().amax(dim=-1), nan=math.inf)
        active = active & (new_error < error) & (new_error > tolerance)
        if not bool(active.any()):
            break
        step = residual if chord is None else torch.linalg.lu_solve(*chord, residual.unsqueeze(-1)).squeeze(-1)
        x = torch.where(active[:, None], x - step, x)
        error = torch.where(active, new_error, error)
    return x


def _newton(diffusion, x, y, sigma_from, sigma_to, t, tolerance):
    """Newton iterations; the Jacobian at the converged iterate gives the log-det (and is returned)."""
    n, d = y.shape
    logdet = torch.zeros(n, dtype=y.dtype, device=y.device)
    converged = torch.zeros(n, dtype=torch.bool, device=y.device)
    failed = torch.zeros(n, dtype=torch.bool, device=y.device)
    at_solution = torch.eye(d, dtype=y.dtype, device=y.device).expand(n, d, d)
    for _ in range(diffusion.settings.max_newton_iterations):
        value, jacobian = diffusion.step_with_jacobian(x, sigma_from, sigma_to, t)
        residual = value - y
        finite = torch.isfinite(residual).all(dim=-1) & torch.isfinite(jacobian).all(dim=(-2, -1))
        sign, logabsdet = torch.linalg.slogdet(torch.where(finite[:, None, None], jacobian, torch.eye(d, dtype=y.dtype, device=y.device)))
        newly = ~converged & ~failed & finite & (residual.abs().amax(dim=-1) <= tolerance)
        logdet = torch.where(newly, logabsdet, logdet)
        at_solution = torch.where(newly[:, None, None], jacobian, at_solution)
        converged = converged | (newly & (sign > 0))
        failed = failed | ~finite | (newly & (sign <= 0))
        active = ~converged & ~failed
        if not bool(active.any()):
            break
        safe = torch.where(active[:, None, None] & (sign != 0)[:, None, None], jacobian, torch.eye(d, dtype=y.dtype, device=y.device))
        step = torch.linalg.solve(safe, torch.where(active[:, None], residual, 0.0))
        x = torch.where(active[:, None], x - step, x)
    return x, logdet, converged, at_solution
