"""The training framework: state, steps, GR schedule, checkpoints, metrics and the loop."""
