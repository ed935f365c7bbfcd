"""Hessian eigenvalues and trace against quadratics with a spectrum chosen by the test (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from analysis_problems import masked_mlp_loss, mlp_params, quadratic, uneven_batches
from jax.flatten_util import ravel_pytree

from gnp import analysis

# Top eigenvalues well apart, a bulk around zero with negative curvature smaller in magnitude.
SPECTRUM = np.concatenate([[10.0, 8.0, 6.0, 5.0, 4.0], np.linspace(-1.5, 2.5, 55)])


def quadratic_operator(spectrum, seed=0):
    matrix, loss, params_from = quadratic(spectrum, seed)
    params = params_from(np.random.default_rng(seed + 1).normal(size=len(spectrum)))
    return matrix, analysis.hessian_operator(loss, params, [None], weights=[1.0])


def test_lanczos_top_eigenvalues_and_vectors_match_the_known_spectrum():
    with jax.enable_x64(True):
        matrix, operator = quadratic_operator(SPECTRUM)
        result = analysis.top_eigenvalues(operator, 5, key=jax.random.key(0))
        np.testing.assert_allclose(result.eigenvalues, SPECTRUM[:5], rtol=1e-6)
        vectors = np.asarray(result.eigenvectors)
        residual = vectors @ matrix - result.eigenvalues[:, None] * vectors
        assert np.max(np.linalg.norm(residual, axis=1)) < 1e-5
        np.testing.assert_allclose(vectors @ vectors.T, np.eye(5), atol=1e-8)
        again = analysis.top_eigenvalues(operator, 5, key=jax.random.key(0))
        np.testing.assert_array_equal(again.eigenvalues, result.eigenvalues)
        # Any symmetric product can be wrapped, e.g. a dense test matrix.
        dense = analysis.HessianOperator(lambda v: jnp.asarray(matrix) @ v, 60, jnp.float64)
        np.testing.assert_allclose(
            analysis.top_eigenvalues(dense, 2, key=jax.random.key(0)).eigenvalues,
            SPECTRUM[:2],
            rtol=1e-6,
        )


def test_lanczos_twenty_eigenvalues_with_the_default_iterations():
    with jax.enable_x64(True):
        spectrum = np.concatenate([np.geomspace(50.0, 5.0, 20), np.linspace(-2.0, 2.0, 100)])
        _, operator = quadratic_operator(spectrum, seed=3)
        result = analysis.top_eigenvalues(operator, 20, key=jax.random.key(1))
        assert result.num_iterations == 3 * 20 + 20
        np.testing.assert_allclose(result.eigenvalues, spectrum[:20], rtol=1e-6)


def test_lanczos_restarts_when_the_krylov_space_closes():
    with jax.enable_x64(True):
        # Repeated eigenvalues: one start vector sees one copy of each; the restarts find the rest.
        spectrum = np.array([4.0, 4.0, 2.0, 2.0, 1.0, 1.0, -0.5])
        _, operator = quadratic_operator(spectrum)
        result = analysis.top_eigenvalues(operator, 7, key=jax.random.key(0), num_iterations=50)
        assert result.num_iterations == 7
        np.testing.assert_allclose(result.eigenvalues, spectrum, rtol=1e-10)
        # A zero Hessian (a linear loss) closes the space at once.
        linear = analysis.hessian_operator(
            lambda p, batch: jnp.sum(p["w"]), {"w": jnp.ones(5)}, [None], weights=[1.0]
        )
        zeros = analysis.top_eigenvalues(linear, 3, key=jax.random.key(0))
        np.testing.assert_array_equal(zeros.eigenvalues, np.zeros(3))


def test_power_iteration_finds_the_top_eigenvalue():
    with jax.enable_x64(True):
        matrix, operator = quadratic_operator(SPECTRUM)
        result = analysis.power_iteration(
            operator, key=jax.random.key(2), num_iterations=500, tolerance=1e-13
        )
        np.testing.assert_allclose(result.eigenvalues, [10.0], rtol=1e-6)
        top = np.linalg.eigh(matrix)[1][:, -1]
        assert abs(abs(float(np.asarray(result.eigenvectors[0]) @ top)) - 1) < 1e-5
        assert result.num_iterations < 500


def hutchinson_standard_error(matrix, num_probes):
    """Rademacher probes: Var[zᵀAz] = 2 Σ_{i≠j} A_ij²."""
    variance = 2 * (np.sum(matrix**2) - np.sum(np.diag(matrix) ** 2))
    return np.sqrt(variance / num_probes)


def test_hutchinson_trace_is_within_three_standard_errors():
    with jax.enable_x64(True):
        matrix, operator = quadratic_operator(SPECTRUM)
        estimate = analysis.hessian_trace(operator, key=jax.random.key(4), num_probes=100)
        assert abs(estimate.mean - SPECTRUM.sum()) < 3 * estimate.standard_error
        # The sample standard error estimates the true one.
        np.testing.assert_allclose(
            estimate.standard_error, hutchinson_standard_error(matrix, 100), rtol=0.3
        )
        again = analysis.hessian_trace(operator, key=jax.random.key(4), num_probes=100)
        assert again.mean == estimate.mean


def test_hutchinson_trace_is_unbiased_on_average():
    with jax.enable_x64(True):
        matrix, operator = quadratic_operator(SPECTRUM)
        runs, probes = 30, 100
        means = [
            analysis.hessian_trace(operator, key=key, num_probes=probes).mean
            for key in jax.random.split(jax.random.key(5), runs)
        ]
        error_of_average = hutchinson_standard_error(matrix, runs * probes)
        assert abs(np.mean(means) - SPECTRUM.sum()) < 4 * error_of_average


def test_hvp_summed_over_batches_is_the_hvp_of_the_full_batch_loss():
    with jax.enable_x64(True):
        params = mlp_params(0)
        batches, full = uneven_batches(1)
        operator = analysis.hessian_operator(masked_mlp_loss, params, batches)
        flat, unravel = ravel_pytree(params)
        vector = jax.random.normal(jax.random.key(2), flat.shape, jnp.float64)
        # Independent truth: the dense Hessian of the concatenated data set's loss.
        hessian = jax.jit(jax.hessian(lambda f: masked_mlp_loss(unravel(f), full)))(flat)
        np.testing.assert_allclose(
            operator.matvec(vector), hessian @ vector, rtol=1e-10, atol=1e-12
        )
        top = analysis.top_eigenvalues(operator, 3, key=jax.random.key(3))
        as_params = operator.unravel(top.eigenvectors[0])
        assert jax.tree.map(jnp.shape, as_params) == jax.tree.map(jnp.shape, params)
        np.testing.assert_allclose(
            top.eigenvalues, np.linalg.eigvalsh(hessian)[::-1][:3], rtol=1e-6
        )


def test_the_hessian_tools_refuse_a_one_shot_iterator():
    with jax.enable_x64(True):
        params = mlp_params(0)
        batches, _ = uneven_batches(1)
        with pytest.raises(TypeError, match="re-iterable"):
            analysis.hessian_operator(masked_mlp_loss, params, iter(batches))


def test_ritz_residuals_shrink_with_iterations_and_bound_the_eigenvalue_error():
    with jax.enable_x64(True):
        matrix, operator = quadratic_operator(SPECTRUM)
        runs = {
            steps: analysis.top_eigenvalues(
                operator, 3, key=jax.random.key(0), num_iterations=steps
            )
            for steps in (9, 12, 15, 18, 21)
        }
        # Once the Ritz values have found 10, 8 and 6 (by 9 steps), every residual shrinks.
        residuals = np.stack([runs[steps].residual_norms for steps in sorted(runs)])
        assert np.all(np.diff(residuals, axis=0) < 0), residuals
        for result in runs.values():
            vectors = np.asarray(result.eigenvectors)
            # Independent truth: the residual with the dense matrix.
            direct = np.linalg.norm(
                vectors @ matrix - result.eigenvalues[:, None] * vectors, axis=1
            )
            np.testing.assert_allclose(result.residual_norms, direct, rtol=1e-6, atol=1e-12)
            # A symmetric matrix has an eigenvalue within the residual of each Ritz value.
            distance = np.min(np.abs(result.eigenvalues[:, None] - SPECTRUM[None, :]), axis=1)
            assert np.all(distance <= result.residual_norms + 1e-12)
        few, many = runs[9], runs[21]
        assert not few.converged.any()
        assert many.converged.all() and many.tolerance == 1e-3
        assert np.max(many.residual_norms) < 1e-3 * SPECTRUM.max()
        np.testing.assert_allclose(many.eigenvalues, SPECTRUM[:3], rtol=1e-8)


def test_power_iteration_reports_the_residual_of_the_vector_it_returns():
    with jax.enable_x64(True):
        matrix, operator = quadratic_operator(SPECTRUM)
        short = analysis.power_iteration(operator, key=jax.random.key(2), num_iterations=3)
        long = analysis.power_iteration(
            operator, key=jax.random.key(2), num_iterations=500, tolerance=1e-13
        )
        for result in (short, long):
            vector = np.asarray(result.eigenvectors[0])
            direct = np.linalg.norm(matrix @ vector - result.eigenvalues[0] * vector)
            np.testing.assert_allclose(result.residual_norms[0], direct, rtol=1e-6)
        assert not short.converged[0] and long.converged[0]
        assert long.residual_norms[0] < short.residual_norms[0]


def test_paired_trace_difference_cancels_what_two_hessians_share():
    with jax.enable_x64(True):
        matrix, _, _ = quadratic(SPECTRUM)
        shift = np.diag(np.linspace(0.0, 0.2, SPECTRUM.size))
        # H_a − H_b is diagonal: zᵀ(H_a − H_b)z = tr(H_a − H_b) for every ±1 probe, exactly.
        operators = [
            analysis.HessianOperator(lambda v, m=m: jnp.asarray(m) @ v, 60, jnp.float64)
            for m in (matrix + shift, matrix)
        ]
        a, b = (
            analysis.hessian_trace(op, key=jax.random.key(9), num_probes=20) for op in operators
        )
        difference = analysis.trace_difference(a, b)
        np.testing.assert_allclose(difference.mean, np.trace(shift), rtol=1e-12)
        assert difference.standard_error < 1e-12
        assert difference.unpaired_standard_error > 1.0  # each trace alone is unsure
        # A general difference D: the paired error estimates √(2 Σ_{i≠j} D_ij² / n).
        rng = np.random.default_rng(4)
        noise = rng.normal(size=(60, 60)) * 0.05
        other = matrix + shift + (noise + noise.T)
        c = analysis.hessian_trace(
            analysis.HessianOperator(lambda v: jnp.asarray(other) @ v, 60, jnp.float64),
            key=jax.random.key(9),
            num_probes=20,
        )
        paired = analysis.trace_difference(c, b)
        truth = hutchinson_standard_error(other - matrix, 20)
        np.testing.assert_allclose(paired.standard_error, truth, rtol=0.4)
        assert paired.standard_error < 0.5 * paired.unpaired_standard_error
        with pytest.raises(ValueError, match="same key"):
            analysis.trace_difference(
                a, analysis.hessian_trace(operators[1], key=jax.random.key(8), num_probes=20)
            )
