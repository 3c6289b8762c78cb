"""The Newton-Schulz square root evaluated through an eigendecomposition.

N coupled Newton-Schulz steps (`newton_schulz.py`, docs/method.md §3.1) compute
a fixed matrix polynomial of A. With Y_0 = A and Z_0 = I, induction on k gives
Y_k = A Z_k, hence T_k = (3I - A Z_{k-1}^2) / 2 and

    Y_N = p_N(A),   p_N(a) = a z_N(a),
    z_0 = 1,   z_k = z_{k-1} (3 - a z_{k-1}^2) / 2,                        (1)

the scalar Newton iteration for a^(-1/2) (degree 3 deg z_{k-1} + 1: 121 for
N = 5). So Y_N = U diag(p_N(lam)) U^T for A = U diag(lam) U^T: the same
function as the matrix iteration, not the exact root, at the cost of one
symmetric eigendecomposition and one product instead of 3N - 3 products. On
CPUs that is the faster way (benchmarks/RESULTS.md, "isqrt
`method="eigh"`"); on a GPU the two heads took about the same time in the
one measurement so far (benchmarks/RESULTS.md, "GPU check on one NVIDIA
H200"), and the matrix iteration, which compiles faster, stays the default.

Its derivative is the Daleckii-Krein formula, dY = U (P o (U^T dA U)) U^T,
with the divided differences
P_ij = [p_N](lam_i, lam_j). They are computed by running (1) on pairs with
the product rule of divided differences, [fg](a, b) = f(a) [g](a, b) +
[f](a, b) g(b), so there is no (p(a) - p(b)) / (a - b) cancellation and
repeated or zero eigenvalues need no special case.

When A = X^T X with X of shape (m, n) and m < n (a covariance from fewer
positions than channels, e.g. 196 positions and 256 channels), the
push-through identity X^T f(X X^T) = f(X^T X) X^T gives

    p_N(X^T X) = X^T z_N(X X^T) X = P^T diag(z_N(g)) P,   P = V^T X,     (2)

with X X^T = V diag(g) V^T, an m x m eigendecomposition.

Both functions are `custom_jvp`s, so reverse mode, forward mode and
forward-over-reverse work. First derivatives are exact everywhere (the
divided differences are). Second derivatives differentiate the JVP rule, and
with it `eigh`'s eigenvector derivative, which is singular at repeated
eigenvalues: they are exact where the eigenvalues are distinct (generic
features; the Gram path's one zero eigenvalue from centring is simple) and
unreliable at repeated ones (duplicated channels or positions). Hessian
analyses of such inputs should use the matrix iteration.

Synopsis:
  y = newton_schulz_eigh(a, 5)        # == newton_schulz(a, 5), (..., n, n)
  y = newton_schulz_gram(x, 5)        # == newton_schulz(x^T x, 5); x (.., m, n)
"""

import functools

import jax
import jax.numpy as jnp

from gcp_jax.ops.linalg import matmul


def _t(mat: jax.Array) -> jax.Array:
  return jnp.swapaxes(mat, -1, -2)


def inverse_root_iterate(lam: jax.Array, num_iters: int) -> jax.Array:
  """z_N(lam) of eq. (1), element-wise: p_N(lam) = lam z_N(lam)."""
  z = jnp.ones_like(lam)
  for _ in range(num_iters):
    z = 0.5 * z * (3.0 - lam * z * z)
  return z


def inverse_root_divided_differences(lam: jax.Array,
                                     num_iters: int) -> jax.Array:
  """[z_N](lam_i, lam_j) for eq. (1): (..., n) -> (..., n, n).

  The diagonal is the derivative z_N'(lam_i). Each step of (1) applies the
  product rule of divided differences to s = (3 - a z^2) / 2 and z s:

      [s] = -(z_b^2 + a (z_a + z_b) [z]) / 2,   [z s] = z_a [s] + [z] s_b.
  """
  a, b = lam[..., :, None], lam[..., None, :]
  z_a, z_b = jnp.ones_like(a), jnp.ones_like(b)
  dz = jnp.zeros(jnp.broadcast_shapes(a.shape, b.shape), lam.dtype)
  for _ in range(num_iters):
    s_a = 0.5 * (3.0 - a * z_a * z_a)
    s_b = 0.5 * (3.0 - b * z_b * z_b)
    ds = -0.5 * (z_b * z_b + a * (z_a + z_b) * dz)
    dz = z_a * ds + dz * s_b
    z_a, z_b = z_a * s_a, z_b * s_b
  return dz


def _eigh(mat: jax.Array) -> tuple[jax.Array, jax.Array]:
  return jnp.linalg.eigh(mat, symmetrize_input=True)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def newton_schulz_eigh(a: jax.Array, num_iters: int) -> jax.Array:
  """Y_N(A) of the coupled Newton-Schulz iteration, as U diag(p_N(lam)) U^T.

  Same function as `newton_schulz(a, num_iters)` (eq. (1) of the module
  docstring) on symmetric matrices, evaluated on the eigenvalues. Only the
  symmetric part (A + A^T) / 2 is read, so the derivative is that of
  A -> Y_N((A + A^T) / 2): the Daleckii-Krein formula applied to the
  symmetric part of dA, with exact divided differences (forward and reverse
  mode, any order of nesting). For a symmetric cotangent, and for gradients
  w.r.t. the features of a covariance, it equals the matrix iteration's.

  Args:
    a: (..., n, n) symmetric matrices with eigenvalues in [0, 1] (trace <= 1
      after `trace_normalize`).
    num_iters: N >= 1, a Python int.

  Returns:
    (..., n, n) symmetric matrices.
  """
  lam, u = _eigh(a)
  p = lam * inverse_root_iterate(lam, num_iters)
  return matmul(u * p[..., None, :], _t(u))


@newton_schulz_eigh.defjvp
def _newton_schulz_eigh_jvp(num_iters, primals, tangents):
  (a,), (da,) = primals, tangents
  lam, u = _eigh(a)
  z = inverse_root_iterate(lam, num_iters)
  out = matmul(u * (lam * z)[..., None, :], _t(u))
  # [p](a, b) = [a z](a, b) = a [z](a, b) + z(b).
  dd = (lam[..., :, None] * inverse_root_divided_differences(lam, num_iters)
        + z[..., None, :])
  inner = dd * matmul(matmul(_t(u), 0.5 * (da + _t(da))), u)
  return out, matmul(matmul(u, inner), _t(u))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def newton_schulz_gram(x: jax.Array, num_iters: int) -> jax.Array:
  """Y_N(X^T X) through the (m, m) eigendecomposition of X X^T (eq. (2)).

  Equal to `newton_schulz(x^T x, num_iters)`; cheaper than
  `newton_schulz_eigh` when m < n, since X X^T is the smaller matrix.

      X X^T = V diag(g) V^T,   P = V^T X,   Y_N = P^T diag(z_N(g)) P.

  The JVP, with Q = V^T dX and E = Q P^T (so V^T d(X X^T) V = E + E^T),
  K = [z_N](g_i, g_j) o (E + E^T) and W = P^T (K P / 2 + diag(z_N(g)) Q):

      dY_N = W + W^T,

  i.e. 3 products of m x m x n and 1 of n x m x n, against 4 of n^3 for the
  JVP of `newton_schulz_eigh`.

  Args:
    x: (..., m, n) with ||x||_F <= 1 (so the eigenvalues of X^T X lie in
      [0, 1]), e.g. centred features divided by sqrt(M tr(Sigma)).
    num_iters: N >= 1, a Python int.

  Returns:
    (..., n, n) symmetric matrices.
  """
  g, v = _eigh(matmul(x, _t(x)))
  p = matmul(_t(v), x)
  z = inverse_root_iterate(g, num_iters)
  return matmul(_t(p), z[..., :, None] * p)


@newton_schulz_gram.defjvp
def _newton_schulz_gram_jvp(num_iters, primals, tangents):
  (x,), (dx,) = primals, tangents
  g, v = _eigh(matmul(x, _t(x)))
  p = matmul(_t(v), x)
  z = inverse_root_iterate(g, num_iters)
  out = matmul(_t(p), z[..., :, None] * p)
  q = matmul(_t(v), dx)
  e = matmul(q, _t(p))
  k = inverse_root_divided_differences(g, num_iters) * (e + _t(e))
  w = matmul(_t(p), 0.5 * matmul(k, p) + z[..., :, None] * q)
  return out, w + _t(w)
