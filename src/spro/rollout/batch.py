"""A batch of sampled responses: every prompt's G responses next to each other."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["RolloutBatch", "completion_mask_from_ids"]


@dataclass
class RolloutBatch:
    """B = n_prompts * G responses, P = padded prompt length, T = padded response length.

    prompt_ids       [B, P] long, left padded with pad_token_id
    prompt_mask      [B, P] long, 1 on prompt tokens
    completion_ids   [B, T] long, right padded with pad_token_id after the first eos
    completion_mask  [B, T] long, 1 on generated tokens up to and including the first eos
    truncated        [B] bool, True when the response hit max_new_tokens without eos
    group_ids        [B] long, index of the prompt (within this batch) the response answers
    prompts          B rendered prompt strings (each repeated G times)
    completions      B decoded responses (special tokens removed)
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    truncated: torch.Tensor
    group_ids: torch.Tensor
    prompts: list[str]
    completions: list[str]

    def __post_init__(self) -> None:
        B, T = self.completion_ids.shape if self.completion_ids.dim() == 2 else (-1, -1)
        shapes = {"prompt_ids": (B, self.prompt_ids.shape[-1]), "prompt_mask": (B, self.prompt_ids.shape[-1]),
                  "completion_ids": (B, T), "completion_mask": (B, T), "truncated": (B,), "group_ids": (B,)}
        for name, shape in shapes.items():
            if B < 0 or tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"RolloutBatch.{name} has shape {tuple(getattr(self, name).shape)}, expected {shape} "
                                 f"(B = {B} responses, T = {T} tokens)")
        if len(self.prompts) != B or len(self.completions) != B:
            raise ValueError(f"RolloutBatch: {len(self.prompts)} prompts and {len(self.completions)} completions for "
                             f"B = {B} responses")

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def lengths(self) -> torch.Tensor:
        """[B] number of response tokens (eos included)."""
        return self.completion_mask.sum(-1)

    @staticmethod
    def cat(batches: list["RolloutBatch"], pad_id: int) -> "RolloutBatch":
        """Several batches as one: prompts left padded and responses right padded to the longest,
        group ids renumbered so that each batch's groups stay apart."""
        if len(batches) == 1:
            return batches[0]
        P = max(b.prompt_ids.shape[1] for b in batches)
        T = max(b.completion_ids.shape[1] for b in batches)
        pad = torch.nn.functional.pad
        offsets = [0]
        for b in batches[:-1]:
            offsets.append(offsets[-1] + int(b.group_ids.max()) + 1 if len(b) else offsets[-1])
        return RolloutBatch(
            torch.cat([pad(b.prompt_ids, (P - b.prompt_ids.shape[1], 0), value=pad_id) for b in batches]),
            torch.cat([pad(b.prompt_mask, (P - b.prompt_mask.shape[1], 0)) for b in batches]),
            torch.cat([pad(b.completion_ids, (0, T - b.completion_ids.shape[1]), value=pad_id) for b in batches]),
            torch.cat([pad(b.completion_mask, (0, T - b.completion_mask.shape[1])) for b in batches]),
            torch.cat([b.truncated for b in batches]),
            torch.cat([b.group_ids + o for b, o in zip(batches, offsets)]),
            [p for b in batches for p in b.prompts], [c for b in batches for c in b.completions],
        )

    def select(self, idx: torch.Tensor) -> "RolloutBatch":
        """The responses at positions ``idx`` (a 1-D long tensor)."""
        il = idx.tolist()
        return RolloutBatch(
            self.prompt_ids[idx], self.prompt_mask[idx], self.completion_ids[idx],
            self.completion_mask[idx], self.truncated[idx], self.group_ids[idx],
            [self.prompts[i] for i in il], [self.completions[i] for i in il],
        )


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_token_id: int | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask up to and including the first eos, and the truncated flag.

    completion_ids [B, T] -> (mask [B, T] long, truncated [B] bool)
    """
    eos_ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    is_eos = torch.zeros_like(completion_ids, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= completion_ids == e
    B, T = completion_ids.shape
    has_eos = is_eos.any(-1)
    none = torch.full((B,), T, dtype=torch.long, device=completion_ids.device)
    first = torch.where(has_eos, is_eos.int().argmax(-1), none)
    positions = torch.arange(T, device=completion_ids.device).unsqueeze(0)
    mask = (positions <= first.unsqueeze(1)).long()
    return mask, ~has_eos
