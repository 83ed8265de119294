"""Data: prompt datasets from files or the hub, prompt rendering, and the built-in procedural tasks."""

from spro.data.datasets import SCHEMAS, LoadReport, default_reward, get_load_report, load_prompt_dataset

__all__ = ["SCHEMAS", "LoadReport", "default_reward", "get_load_report", "load_prompt_dataset"]
