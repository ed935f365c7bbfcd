"""Every plot writes a PNG and a JSON beside it holding exactly the numbers drawn."""

import json

import jax.numpy as jnp
import numpy as np

from gnp import analysis

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_outputs(png):
    assert png.suffix == ".png"
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    return json.loads(png.with_suffix(".json").read_text())


def test_loss_curve_and_contour(tmp_path):
    ts = np.linspace(-1, 1, 5)
    curves = {"sgd": ts**2, "gnp α=0.8": 0.5 * ts**2}
    numbers = read_outputs(analysis.plot_loss_curve(ts, curves, tmp_path / "slice.png"))
    assert numbers["coordinates"] == ts.tolist()
    assert numbers["losses"] == {k: v.tolist() for k, v in curves.items()}

    xs, ys = np.linspace(-1, 1, 4), np.linspace(0, 2, 3)
    values = xs[:, None] ** 2 + ys[None, :] + 0.25
    values[0, 0] = np.nan  # A diverged point is written as null, not as invalid JSON.
    numbers = read_outputs(analysis.plot_loss_contour(xs, ys, values, tmp_path / "plane.png"))
    assert numbers["coordinates_x"] == xs.tolist()
    assert numbers["coordinates_y"] == ys.tolist()
    assert numbers["values"][0][0] is None
    np.testing.assert_array_equal(np.array(numbers["values"], dtype=float)[1:], values[1:])
    # A positive loss gets log-spaced levels from its finite minimum (1/9 + 0.25; the NaN left
    # out) to its maximum (1 + 2 + 0.25): a constant ratio between neighbours.
    levels = np.array(numbers["levels"])
    low, high = 1 / 9 + 0.25, 3.25
    assert levels.size == 30
    np.testing.assert_allclose(levels[[0, -1]], [low, high])
    np.testing.assert_allclose(levels[1:] / levels[:-1], (high / low) ** (1 / 29))


def test_contour_levels_are_even_when_a_value_is_not_positive():
    levels, logarithmic = analysis.plots.contour_levels(np.array([[-1.0, 0.0], [2.0, np.inf]]), 4)
    assert not logarithmic
    np.testing.assert_allclose(levels, [-1.0, 0.0, 1.0, 2.0])


def test_batch_gradient_norms_are_drawn_with_the_whole_split_norm(tmp_path):
    for count in (6, 40):  # points, then a histogram
        norms = np.linspace(0.4, 0.65, count)
        png = analysis.plot_batch_gradient_norms(norms, 0.38, tmp_path / f"g{count}.png")
        numbers = read_outputs(png)
        assert numbers == {"batch_gradient_norms": norms.tolist(), "norm": 0.38}


def test_eigenvalues(tmp_path):
    eigenvalues = np.array([12.5, 7.25, 3.0])
    numbers = read_outputs(analysis.plot_eigenvalues(eigenvalues, tmp_path / "sub" / "eig.png"))
    assert numbers["eigenvalues"] == {"eigenvalues": eigenvalues.tolist()}


def test_eigenpairs_carry_their_residuals_into_the_json(tmp_path):
    pairs = analysis.Eigenpairs(
        eigenvalues=np.array([12.5, 7.25, 3.0]),
        eigenvectors=jnp.eye(3),
        num_iterations=10,
        residual_norms=np.array([1e-6, 2e-3, 0.5]),
        converged=np.array([True, True, False]),
        tolerance=1e-3,
    )
    png = analysis.plot_eigenvalues({"α=0": pairs, "α=1": [10.0, 6.0, 2.0]}, tmp_path / "eig.png")
    numbers = read_outputs(png)
    assert numbers["eigenvalues"] == {"α=0": [12.5, 7.25, 3.0], "α=1": [10.0, 6.0, 2.0]}
    assert numbers["residual_norms"] == {"α=0": [1e-6, 2e-3, 0.5]}
    assert numbers["converged"] == {"α=0": [True, True, False]}
    assert numbers["tolerance"] == 1e-3


def test_alpha_sweep(tmp_path):
    curves = {
        f"α={alpha}": [
            {
                "epoch": epoch,
                "gradient_norm": 1.0 / (epoch + alpha),
                "test_error_rate": 0.1 - alpha / 100,
            }
            if epoch % 2
            else {"epoch": epoch, "gradient_norm": 2.0 + alpha}
            for epoch in range(1, 7)
        ]
        for alpha in (0.0, 0.8)
    }
    # A run written after the trainer split the metric: the clean norm is its own key.
    curves["α=1"] = [
        {"epoch": e, "gradient_norm": 9.0, "clean_gradient_norm": 1.0 / e, "test_error_rate": 0.05}
        for e in range(1, 7)
    ]
    numbers = read_outputs(analysis.plot_alpha_sweep(curves, tmp_path / "sweep.png"))
    assert numbers["curves"] == curves
    assert numbers["gradient_norm_keys"] == {
        "α=0.0": "gradient_norm",
        "α=0.8": "gradient_norm",
        "α=1": "clean_gradient_norm",
    }
