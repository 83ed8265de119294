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
import warnings
from pathlib import Path

# The greedy validation accuracy (the SFT's final evaluation in sft_log.jsonl, 200 problems) each preset is meant to
# land in, and what it gives on an Intel Xeon with AVX-512 (the machines of docs/results.md's runs). The SFT runs in
# float32 and its result depends on the CPU's matrix kernels: the same code and seed built "long-mid", which stops
# inside a sharp rise in accuracy, at 0.44 on Intel Xeons with AVX-512, 0.33 on an AMD EPYC and 0.095 on a Xeon with
# MKL limited to AVX2 (docs/results.md, section 1). A build outside its band is another test bed, so warm_start says
# so. Presets not listed are not checked.
PRESET_BANDS: dict[str, tuple[float, float, float]] = {  # preset: (low, high, accuracy on a Xeon)
    "weak": (0.30, 0.65, 0.49),
    "long-weak": (0.0, 0.15, 0.04),
    "long-mid": (0.20, 0.50, 0.44),
    "mult-weak": (0.15, 0.45, 0.325),
}


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
    if not (target / "config.json").is_file():
        with open(root / f".{target.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not (target / "config.json").is_file():  # another process may have built it while we waited
                    sft(cfg, target, progress=progress)  # saved atomically (temp folder + rename)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    check_band(preset, target)
    return target


def built_accuracy(folder: Path) -> float | None:
    """The final greedy validation accuracy of an SFT build (the last ``val/accuracy`` of its sft_log.jsonl)."""
    log = Path(folder) / "sft_log.jsonl"
    if not log.is_file():
        return None
    accs = [r["val/accuracy"] for r in map(json.loads, log.read_text().splitlines()) if "val/accuracy" in r]
    return accs[-1] if accs else None


def check_band(preset: str, folder: Path) -> None:
    """Warn when the warm start in ``folder`` landed outside the accuracy band its preset is meant for."""
    if preset not in PRESET_BANDS or (acc := built_accuracy(folder)) is None:
        return
    low, high, xeon = PRESET_BANDS[preset]
    if not low <= acc <= high:
        warnings.warn(
            f"warmstart:{preset} ({folder}) has greedy validation accuracy {acc:.3f}, outside the {low:.2f}-{high:.2f} "
            f"this preset is meant for ({xeon:.2f} on an Intel Xeon with AVX-512). The SFT's result depends on the CPU's "
            f"float32 matrix kernels (docs/results.md, section 1), so runs from it are another test bed than the documented "
            f"ones. For a warm start in the band, build one with another step count (spro sft --preset {preset} "
            f"steps=N --output DIR) and train from it (model.name_or_path=DIR).", UserWarning, stacklevel=3)


def resolve_model(name: str, *, progress: bool = True) -> str:
    """A ``model.name_or_path``: ``warmstart:PRESET`` becomes the folder of that cached warm start
    (built if needed); any other name is returned as it is."""
    if isinstance(name, str) and name.startswith("warmstart:"):
        return str(warm_start(preset=name.split(":", 1)[1], progress=progress))
    return name
