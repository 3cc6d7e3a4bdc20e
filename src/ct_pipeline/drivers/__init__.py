"""Command-line drivers around the Kedro project: the study (``python -m
ct_pipeline.drivers.study``) and the torchrun entry point for several nodes
(``python -m ct_pipeline.drivers.torchrun``). Not named ``cli``: Kedro loads
``<package>.cli`` as the project's own ``kedro`` commands."""
