"""Input pipelines: a data source by name, augmentations, and a grain loader.

The trainer relies on ``build_input_pipeline`` and the batch formats below only.
"""

from gnp.data.pipeline import DatasetInfo, InputPipeline, build_input_pipeline, dataset_names

__all__ = ["DatasetInfo", "InputPipeline", "build_input_pipeline", "dataset_names"]
