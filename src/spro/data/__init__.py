"""Data: prompt datasets from files or the hub, prompt rendering, and the built-in procedural tasks."""

from spro.data.datasets import SCHEMAS, LoadReport, get_load_report, load_prompt_dataset
from spro.data.loader import default_reward

__all__ = ["SCHEMAS", "LoadReport", "default_reward", "get_load_report", "load_prompt_dataset"]
