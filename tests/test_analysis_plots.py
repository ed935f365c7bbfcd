"""Every plot writes a PNG and a JSON beside it holding exactly the numbers drawn."""

import json

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
    values = xs[:, None] ** 2 + ys[None, :]
    values[0, 0] = np.nan  # A diverged point is written as null, not as invalid JSON.
    numbers = read_outputs(analysis.plot_loss_contour(xs, ys, values, tmp_path / "plane.png"))
    assert numbers["coordinates_x"] == xs.tolist()
    assert numbers["coordinates_y"] == ys.tolist()
    assert numbers["values"][0][0] is None
    np.testing.assert_array_equal(np.array(numbers["values"], dtype=float)[1:], values[1:])


def test_eigenvalues(tmp_path):
    eigenvalues = np.array([12.5, 7.25, 3.0])
    numbers = read_outputs(analysis.plot_eigenvalues(eigenvalues, tmp_path / "sub" / "eig.png"))
    assert numbers["eigenvalues"] == {"eigenvalues": eigenvalues.tolist()}


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
    numbers = read_outputs(analysis.plot_alpha_sweep(curves, tmp_path / "sweep.png"))
    assert numbers["curves"] == curves
