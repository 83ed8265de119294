"""Rollout: sampling G responses per prompt.

A backend implements :class:`RolloutBackend`: given rendered prompt strings it returns a
:class:`RolloutBatch` with every prompt's G responses next to each other (rows
``g*G ... g*G+G-1`` belong to prompt ``g``), so each group lives on the process that generated it.
:class:`HFGenerateBackend` uses ``transformers``' ``generate`` with left padding (``rollout.backend=hf``);
:class:`~spro.rollout.decode.DecodeBackend` is spro's own decode loop over the model's forward
(``rollout.backend=decode``: the same distribution, faster on CPUs); a vLLM backend can implement the same
protocol (and ``sync_weights`` to receive the trained weights).
:func:`generate_completions` is plain batched generation (greedy or sampled) for evaluation.
"""

from spro.rollout.batch import RolloutBatch, completion_mask_from_ids
from spro.rollout.decode import DecodeBackend
from spro.rollout.generate import generate_completions
from spro.rollout.hf import HFGenerateBackend, RolloutBackend, make_backend

__all__ = ["RolloutBatch", "RolloutBackend", "HFGenerateBackend", "DecodeBackend", "completion_mask_from_ids",
           "generate_completions", "make_backend"]
