"""Matrix-free spectra of a symmetric operator A (n x n) known only by v -> Av.

  power_iteration     top-k eigenpairs by power iteration with deflation
  lanczos_top         top-k eigenpairs by Lanczos (full reorthogonalisation)
  hutchinson_trace    tr(A) ~ mean of v^T A v, Rademacher v, with its error
  spectral_density    stochastic Lanczos quadrature (SLQ), Gaussian-broadened

The operator is a pure function `apply(operand, v)` with an explicit operand
pytree (the Hessian's weights and data), so every algorithm is one `jax.jit`
call with the loops in `lax.fori_loop` / `lax.while_loop` / `lax.map`, and
the matvec is compiled once per algorithm and operator. Random keys are
explicit; vectors have A's dtype (float32, or float64 under `jax.enable_x64`);
inner products use `Precision.HIGHEST`.

Power iteration finds the eigenvalues of LARGEST MAGNITUDE (a negative one
if it dominates), deflating by projecting out the eigenvectors found before.
Lanczos returns the ALGEBRAICALLY largest Ritz values. Both report the true
residual ||A u - lambda u|| of every returned pair (k extra matvecs).

Lanczos (m steps, start v_1): alpha_j = v_j^T A v_j, w = A v_j
orthogonalised against all of v_1..v_j twice (classical Gram-Schmidt twice,
which also performs the three-term recurrence), beta_j = ||w||,
v_{j+1} = w / beta_j. If beta_j vanishes (an invariant subspace), v_{j+1}
is a fresh random vector orthogonal to v_1..v_j and beta_j = 0, so T stays
exact. T = tridiag(beta, alpha, beta) (m x m); its eigenvalues are the Ritz
values. Memory: the m + 1 Lanczos vectors (m + 1) n numbers.

SLQ: for R runs with start v = z / ||z||, z Rademacher, Lanczos gives T with
eigenpairs (theta_i, y_i); the nodes theta_i carry weights tau_i = y_i[0]^2
(the FIRST component; sum_i tau_i = 1), and

  phi(t) = (1/R) sum_r sum_i tau_ri N(t; theta_ri, sigma^2)

integrates to 1; its mean (1/R) sum_r alpha_1^(r) = (1/R) sum_r v_r^T A v_r
estimates tr(A) / n without bias.

Synopsis:
  op = SymmetricOperator(lambda m, v: m @ v, matrix, n, matrix.dtype)
  top = lanczos_top(op, k=3, num_steps=30, key=jax.random.key(0))
  tr = hutchinson_trace(op, num_probes=100, key=jax.random.key(1))
  dens = spectral_density(op, num_runs=4, num_steps=30, key=key)
"""

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from gcp_jax import backend
from gcp_jax.ops.linalg import HIGHEST

Apply = Callable[[Any, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class SymmetricOperator:
  """v -> A v for a symmetric n x n A.

  Attributes:
    apply: pure function (operand, v (n,)) -> A v (n,); reused (by
      identity) as a static argument of the compiled algorithms.
    operand: pytree of arrays A depends on.
    dim: n.
    dtype: dtype of the vectors.
  """
  apply: Apply
  operand: Any
  dim: int
  dtype: Any

  def matvec(self, v: jax.Array) -> jax.Array:
    return self.apply(self.operand, v)


@dataclasses.dataclass(frozen=True)
class EigenResult:
  """Eigenpair estimates.

  Attributes:
    eigenvalues: (k,) Rayleigh quotients u^T A u of the returned vectors.
    eigenvectors: (k, n) unit vectors.
    residual_norms: (k,) ||A u - lambda u||.
    iterations: (k,) matvecs spent per eigenpair (power iteration) or the
      number of Lanczos steps.
    method: 'power' or 'lanczos'.
  """
  eigenvalues: np.ndarray
  eigenvectors: np.ndarray
  residual_norms: np.ndarray
  iterations: np.ndarray
  method: str


@dataclasses.dataclass(frozen=True)
class TraceEstimate:
  """Hutchinson estimate of tr(A): mean of the probes' v^T A v, with the
  standard error std(samples, ddof=1) / sqrt(num_probes)."""
  mean: float
  stderr: float
  samples: np.ndarray
  num_probes: int


@dataclasses.dataclass(frozen=True)
class SpectralDensity:
  """SLQ density of the eigenvalues of A.

  Attributes:
    grid: (G,) points t.
    density: (G,) phi(t) (integrates to 1 over the real line).
    nodes: (R, m) Ritz values theta per run.
    weights: (R, m) tau = squared first components (rows sum to 1).
    sigma: width of the Gaussian broadening.
    dim: n (multiply the density by n for an eigenvalue count density).
  """
  grid: np.ndarray
  density: np.ndarray
  nodes: np.ndarray
  weights: np.ndarray
  sigma: float
  dim: int

  @property
  def mean(self) -> float:
    """sum tau theta averaged over runs: the estimate of tr(A) / n."""
    return float(np.mean(np.sum(self.weights * self.nodes, axis=1)))


def _dot(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.dot(a, b, precision=HIGHEST)


def _project_out(basis: jax.Array, v: jax.Array) -> jax.Array:
  """v minus its projection on the rows of `basis` (orthonormal or zero
  rows), twice (classical Gram-Schmidt with reorthogonalisation)."""
  for _ in range(2):
    v = v - _dot(basis.T, _dot(basis, v))
  return v


def _normalize(v: jax.Array) -> jax.Array:
  return v / jnp.maximum(jnp.linalg.norm(v), jnp.finfo(v.dtype).tiny)


def _rayleigh_and_residual(apply, operand, vectors):
  """(k, n) unit vectors -> (u^T A u, ||A u - (u^T A u) u||) per row."""
  def one(u):
    au = apply(operand, u)
    lam = _dot(u, au)
    return lam, jnp.linalg.norm(au - lam * u)
  return lax.map(one, vectors)


@functools.partial(
    backend.jit,
    static_argnames=("apply", "k", "dim", "dtype", "max_iters"))
def _power(apply, operand, key, tol, *, k, dim, dtype, max_iters):
  def find(i, carry):
    basis, iters = carry
    v = _normalize(_project_out(
        basis, jax.random.normal(jax.random.fold_in(key, i), (dim,), dtype)))

    def not_done(state):
      _, lam, lam_prev, it = state
      moving = jnp.abs(lam - lam_prev) > tol * jnp.abs(lam)
      return (it < max_iters) & ((it < 2) | moving)

    def step(state):
      v, lam, _, it = state
      w = _project_out(basis, apply(operand, v))
      return _normalize(w), _dot(v, w), lam, it + 1

    v, _, _, it = lax.while_loop(
        not_done, step, (v, jnp.zeros((), dtype), jnp.full((), jnp.inf, dtype),
                         0))
    return basis.at[i].set(v), iters.at[i].set(it)

  basis, iters = lax.fori_loop(
      0, k, find, (jnp.zeros((k, dim), dtype), jnp.zeros((k,), jnp.int32)))
  lams, res = _rayleigh_and_residual(apply, operand, basis)
  return lams, basis, res, iters


def power_iteration(op: SymmetricOperator, k: int, key: jax.Array, *,
                    max_iters: int = 100, tol: float = 1e-4) -> EigenResult:
  """Top-k eigenpairs (largest |lambda|) by power iteration with deflation.

  Eigenpair i iterates v <- P A v / ||P A v|| with P the projector onto the
  complement of the i eigenvectors already found, from a Gaussian start
  drawn from fold_in(key, i), until the Rayleigh quotient changes by less
  than `tol` relative (or `max_iters` matvecs).

  Returns:
    `EigenResult` in the order found (decreasing magnitude when converged).
  """
  lams, vecs, res, iters = jax.device_get(_power(
      op.apply, op.operand, key, tol, k=k, dim=op.dim, dtype=op.dtype,
      max_iters=max_iters))
  return EigenResult(np.asarray(lams), np.asarray(vecs), np.asarray(res),
                     np.asarray(iters), "power")


def _lanczos(apply, operand, v0, key, num_steps, dim, dtype):
  """m Lanczos steps with full reorthogonalisation (traced helper).

  Returns:
    alphas (m,), betas (m,) (beta_m couples to the unused v_{m+1}), and the
    Lanczos vectors V (m + 1, n).
  """
  basis = jnp.zeros((num_steps + 1, dim), dtype).at[0].set(_normalize(v0))
  eps = jnp.finfo(dtype).eps

  def step(j, carry):
    basis, alphas, betas, scale = carry
    v = basis[j]
    w = apply(operand, v)
    alpha = _dot(v, w)
    w = _project_out(basis, w)
    beta = jnp.linalg.norm(w)
    scale = jnp.maximum(scale, jnp.abs(alpha) + beta)
    ok = beta > 100 * eps * scale
    next_v = lax.cond(
        ok, lambda: w / beta,
        lambda: _normalize(_project_out(basis, jax.random.normal(
            jax.random.fold_in(key, j), (dim,), dtype))))
    basis = basis.at[j + 1].set(next_v)
    return (basis, alphas.at[j].set(alpha),
            betas.at[j].set(jnp.where(ok, beta, 0)), scale)

  zeros = jnp.zeros((num_steps,), dtype)
  basis, alphas, betas, _ = lax.fori_loop(
      0, num_steps, step, (basis, zeros, zeros, jnp.zeros((), dtype)))
  return alphas, betas, basis


def _tridiagonal(alphas: jax.Array, betas: jax.Array) -> jax.Array:
  """T (m, m) from the diagonal alphas and the off-diagonal betas[:m-1]."""
  off = betas[:-1]
  return jnp.diag(alphas) + jnp.diag(off, 1) + jnp.diag(off, -1)


def _check_steps(num_steps: int, dim: int) -> None:
  if not 1 <= num_steps <= dim:
    raise ValueError(f"num_steps must be in [1, n={dim}], got {num_steps}.")


@functools.partial(
    backend.jit,
    static_argnames=("apply", "k", "dim", "dtype", "num_steps"))
def _lanczos_top(apply, operand, key, *, k, dim, dtype, num_steps):
  key_v0, key_restart = jax.random.split(key)
  v0 = jax.random.normal(key_v0, (dim,), dtype)
  alphas, betas, basis = _lanczos(apply, operand, v0, key_restart, num_steps,
                                  dim, dtype)
  _, ritz = jnp.linalg.eigh(_tridiagonal(alphas, betas))
  vectors = _dot(ritz[:, ::-1][:, :k].T, basis[:num_steps])
  vectors = vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True)
  lams, res = _rayleigh_and_residual(apply, operand, vectors)
  return lams, vectors, res


def lanczos_top(op: SymmetricOperator, k: int, num_steps: int,
                key: jax.Array) -> EigenResult:
  """Top-k (algebraically largest) eigenpairs from `num_steps` Lanczos
  steps (1 <= k <= num_steps <= n) from a Gaussian start.

  Returns:
    `EigenResult`, eigenvalues in decreasing order (the Rayleigh quotients
    of the normalised Ritz vectors).
  """
  _check_steps(num_steps, op.dim)
  if not 1 <= k <= num_steps:
    raise ValueError(f"k must be in [1, num_steps={num_steps}], got {k}.")
  lams, vecs, res = jax.device_get(_lanczos_top(
      op.apply, op.operand, key, k=k, dim=op.dim, dtype=op.dtype,
      num_steps=num_steps))
  return EigenResult(np.asarray(lams), np.asarray(vecs), np.asarray(res),
                     np.full(k, num_steps), "lanczos")


def _rademacher(key: jax.Array, dim: int, dtype: Any) -> jax.Array:
  return jax.random.rademacher(key, (dim,), dtype)


@functools.partial(
    backend.jit,
    static_argnames=("apply", "num_probes", "dim", "dtype"))
def _hutchinson(apply, operand, key, *, num_probes, dim, dtype):
  def sample(k):
    v = _rademacher(k, dim, dtype)
    return _dot(v, apply(operand, v))
  return lax.map(sample, jax.random.split(key, num_probes))


def hutchinson_trace(op: SymmetricOperator, num_probes: int,
                     key: jax.Array) -> TraceEstimate:
  """tr(A) ~ (1/P) sum_p v_p^T A v_p, v_p Rademacher (+-1) vectors.

  Returns:
    `TraceEstimate` with the per-probe samples and the standard error of
    their mean (num_probes >= 2).
  """
  if num_probes < 2:
    raise ValueError("A standard error needs num_probes >= 2.")
  samples = np.asarray(jax.device_get(_hutchinson(
      op.apply, op.operand, key, num_probes=num_probes, dim=op.dim,
      dtype=op.dtype)), np.float64)
  return TraceEstimate(float(samples.mean()),
                       float(samples.std(ddof=1) / np.sqrt(num_probes)),
                       samples, num_probes)


@functools.partial(
    backend.jit,
    static_argnames=("apply", "num_runs", "dim", "dtype", "num_steps"))
def _slq(apply, operand, key, *, num_runs, dim, dtype, num_steps):
  def run(k):
    key_v0, key_restart = jax.random.split(k)
    alphas, betas, _ = _lanczos(apply, operand,
                                _rademacher(key_v0, dim, dtype), key_restart,
                                num_steps, dim, dtype)
    nodes, vecs = jnp.linalg.eigh(_tridiagonal(alphas, betas))
    return nodes, jnp.square(vecs[0])
  return lax.map(run, jax.random.split(key, num_runs))


def spectral_density(op: SymmetricOperator, num_runs: int, num_steps: int,
                     key: jax.Array, *, sigma: float | None = None,
                     grid_size: int = 1001,
                     relative_sigma: float = 0.01) -> SpectralDensity:
  """Stochastic Lanczos quadrature density (see the module docstring).

  Args:
    op: the operator.
    num_runs: R independent Rademacher starts.
    num_steps: Lanczos steps per run (nodes per run).
    key: PRNG key.
    sigma: Gaussian width; default `relative_sigma` times the range of the
      nodes (or of their magnitude if all nodes coincide).
    grid_size: G points from min(node) - 5 sigma to max(node) + 5 sigma.
    relative_sigma: see `sigma`.

  Returns:
    `SpectralDensity` on the grid, with the raw nodes and weights.
  """
  _check_steps(num_steps, op.dim)
  nodes, weights = jax.device_get(_slq(
      op.apply, op.operand, key, num_runs=num_runs, dim=op.dim,
      dtype=op.dtype, num_steps=num_steps))
  nodes, weights = np.asarray(nodes, np.float64), np.asarray(weights,
                                                             np.float64)
  lo, hi = float(nodes.min()), float(nodes.max())
  if sigma is None:
    spread = hi - lo if hi > lo else max(abs(hi), 1.0)
    sigma = relative_sigma * spread
  grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, grid_size)
  gauss = np.exp(-0.5 * np.square((grid[:, None] - nodes.ravel()[None]) /
                                  sigma)) / (sigma * np.sqrt(2 * np.pi))
  density = gauss @ weights.ravel() / num_runs
  return SpectralDensity(grid, density, nodes, weights, float(sigma), op.dim)
