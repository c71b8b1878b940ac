"""YAML pipelines: ``load_pipeline(path)`` validates, ``run_pipeline(pipeline)`` runs."""
from kgprobe.pipeline.config import Pipeline, PipelineConfig, load_pipeline
from kgprobe.pipeline.registry import StepConfig
from kgprobe.pipeline.runner import run_pipeline

__all__ = ["Pipeline", "PipelineConfig", "StepConfig", "load_pipeline", "run_pipeline"]
