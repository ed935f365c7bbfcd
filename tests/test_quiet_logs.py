"""orbax's warnings about what gnp does on purpose do not reach a run's log; others do."""

import logging

from gnp.train.checkpoint import Checkpoints


def test_routine_orbax_notices_are_dropped_and_other_warnings_kept(tmp_path, caplog):
    Checkpoints(str(tmp_path / "checkpoints")).close()
    absl = logging.getLogger("absl")
    with caplog.at_level(logging.WARNING):
        absl.warning("Waiting for previous save to complete took 1.330000 seconds. If this ...")
        absl.warning("Given directory is read only=%s", tmp_path)
        absl.warning("a real problem")
    assert [r.getMessage() for r in caplog.records] == ["a real problem"]
