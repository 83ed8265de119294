"""The cached supervised warm start (built once per configuration, reused by demo, tests, trainer).

``warm_start("weak")`` returns the folder of a tiny Llama fine-tuned with the ``weak`` SFT preset
(:data:`spro.trainer.sft.PRESETS`) on the default arithmetic task. The folder lives under
``cache_dir / f"{preset}-{key}"`` where ``key`` is a hash of the preset's full config, the
resolved task knobs and the spro / torch / transformers versions, so changing any of them builds
a new one. Concurrent callers are safe: an exclusive file lock (``fcntl.flock``) serialises
builders of the same key, and the folder appears by an atomic rename only when complete.

Default cache dir: ``$SPRO_CACHE/warmstart`` if ``SPRO_CACHE`` is set, else
``~/.cache/spro/warmstart``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def default_cache_dir() -> Path:
    base = os.environ.get("SPRO_CACHE")
    return Path(base) / "warmstart" if base else Path.home() / ".cache" / "spro" / "warmstart"


def cache_key(preset: str) -> str:
    """Hash of everything that determines the warm-start model of ``preset``."""
    import torch
    import transformers

    import spro
    from spro.data.tasks import get_task
    from spro.trainer.sft import DATASET_FIELDS, SFTConfig, get_preset

    cfg = get_preset(preset)
    task = get_task(cfg.task, **cfg.task_kwargs)
    # the fields of dataset SFT (and chat_template) count only when set, so that the warm starts built before they
    # existed keep their key
    defaults = SFTConfig().to_dict()
    config = {k: v for k, v in cfg.to_dict().items()
              if k not in (*DATASET_FIELDS, "chat_template") or v != defaults[k]}
    config["task_knobs"] = config.pop("task_kwargs")  # its name before 0.2: the warm starts built since keep their key
    blob = json.dumps(
        {"preset": preset, "config": config, "task": getattr(task, "knobs", lambda: None)(),
         "spro": spro.__version__, "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
         "format": 1},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def warm_start(preset: str = "weak", cache_dir: str | os.PathLike | None = None, *, progress: bool = True) -> Path:
    """Path of the cached warm-start model for ``preset`` ("weak" or "strong"), building it if needed."""
    import fcntl

    from spro.trainer.sft import get_preset, sft

    cfg = get_preset(preset)  # ValueError on an unknown preset
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{preset}-{cache_key(preset)}"
    if (target / "config.json").is_file():
        return target
    with open(root / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if (target / "config.json").is_file():  # another process built it while we waited
                return target
            sft(cfg, target, progress=progress)  # saved atomically (temp folder + rename)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def resolve_model(name: str, *, progress: bool = True) -> str:
    """A ``model.name_or_path``: ``warmstart:PRESET`` becomes the folder of that cached warm start
    (built if needed); any other name is returned as it is."""
    if isinstance(name, str) and name.startswith("warmstart:"):
        return str(warm_start(preset=name.split(":", 1)[1], progress=progress))
    return name
