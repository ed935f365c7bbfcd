"""The README's library example runs as written."""

import pathlib
import re


def test_readme_library_example_runs():
    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "README.md has no python example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["loss"] < 2.31  # trained a few steps from ln(10) ≈ 2.30 at init
