"""SPRO inside TRL: ``SPROConfig`` and ``SPROTrainer``, subclasses of TRL's GRPO classes.

``SPROTrainer`` keeps everything of ``GRPOTrainer`` (generation, reward functions, vLLM,
accelerate / DeepSpeed / FSDP, PEFT, logging, the clipped policy loss) and changes one thing:
the advantage. GRPO gives every token of a completion the same group-normalised outcome
advantage; SPRO gives token ``t`` of completion ``i``

    A[i,t] = (A_out[i] + MSA[i,t]) * mask[i,t]

computed by :func:`spro.algorithms.core.spro_advantage` from the rewards, the per-token log-probs of
the sampling policy (``pi_old``) and of a frozen reference (``pi_ref``). TRL's loss accepts a
``[B, T]`` advantage as it is, so the loss is not overridden.

How it hooks into TRL (supported: ``trl>=1.16,<1.17``):

- ``_calculate_rewards`` is wrapped to keep the rewards TRL gathered across processes.
- ``_generate_and_score_completions`` runs TRL's version, then replaces ``output["advantages"]``
  (``[B_local]``) with SPRO's ``[B_local, T]``. TRL computes ``old_per_token_logps`` only when the
  batch is reused off-policy (or with vLLM importance sampling) and ``ref_per_token_logps`` only
  when its KL ``beta`` is non-zero; whichever is missing is computed here, with the same
  ``_get_per_token_logps_and_entropies`` TRL uses (same temperature, same fused LM head). What
  TRL puts in the batch for its own loss is left unchanged.
- With ``beta == 0`` (TRL's default) TRL builds no reference model, so ``SPROTrainer`` makes a
  frozen copy of the starting policy (a deep copy of a model instance, or a second load of a
  model path; under DeepSpeed ZeRO-3 pass a path) and prepares it like TRL prepares its own
  reference. With PEFT the reference is the base model with the adapter disabled, as in TRL.
- Completions no reward function could score (all rewards ``None``) get advantage 0 and are left
  out of their group's statistics, as TRL does.
- The completions of a prompt may sit on several processes, so log-probs and masks are padded
  to a common length and gathered (in the process order TRL uses for the rewards) before the
  group statistics; each process then keeps its own rows and columns.
- SPRO metrics go to TRL's ``self._metrics`` (``process/cpr_final_mean``, ``process/cpr_final_std``:
  the cumulative process reward at each completion's last token; ``process/msa_abs_mean``: mean
  ``|process term|`` over valid tokens, the MSA by default; ``process/reward_abs_mean``: mean
  ``|p[i,t]|``; ``process/advantage_abs_mean``), so they reach every logger TRL reports to.

- A GGUF model (a ``.gguf`` path, or a folder with ``model_init_kwargs={"gguf_file": ...}``), which TRL
  cannot load, is loaded and dequantised by :func:`spro.models.loading.load_model` (as spro's own trainer
  does) with the file's tokenizer as ``processing_class`` when none is given; no ``spro export`` first.
- ``SPROConfig`` refuses the ``GRPOConfig`` options SPROTrainer would not honour (see :data:`SPROConfig`).

The extra cost over GRPO is one no-grad forward of the policy when TRL skips ``pi_old`` (the
on-policy default) and one of the reference when TRL's ``beta`` is 0, plus ``O(B*T)`` arithmetic.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any

import torch

try:
    from accelerate.utils import is_peft_model
    from transformers.integrations import is_deepspeed_zero3_enabled
    from trl import GRPOConfig, GRPOTrainer
    from trl.models import prepare_deepspeed, prepare_fsdp
    from trl.models.utils import disable_gradient_checkpointing
    from trl.trainer.utils import (
        add_fused_lm_head,
        create_model_from_path,
        disable_dropout_in_model,
        get_config_model_id,
        use_adapter,
    )
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "spro.integrations.trl needs TRL 1.16.x: install it with `pip install 'spro[trl]'` "
        f"(import failed: {exc})"
    ) from exc

from spro.algorithms.core import spro_advantage
from spro.algorithms.spro import SPROOptions, process_metrics, process_stats
from spro.options import ConfigError

__all__ = ["SPROConfig", "SPROTrainer", "SUPPORTED_TRL"]

SUPPORTED_TRL = ">=1.16,<1.17"

# Keys of the batch dict that `_get_per_token_logps_and_entropies` takes as multimodal inputs.
_FORWARD_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)


@dataclass
class _SPROConfigBase(GRPOConfig):
    """``GRPOConfig`` with SPRO's defaults and checks; :data:`SPROConfig` adds the ``spro_*`` fields."""

    loss_type: str = field(
        default="grpo",
        metadata={
            "help": "TRL loss aggregation (see GRPOConfig). SPRO default 'grpo': mean over each completion's "
            "tokens, then mean over completions ('seq-mean-token-mean')."
        },
    )
    disable_dropout: bool = field(
        default=True,
        metadata={
            "help": "Disable dropout in the policy and the reference, so that log pi_old and log pi_ref are "
            "deterministic (SPRO default True)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        self.spro_options()  # checks the spro_* values
        self._refuse_unhonoured()

    def _refuse_unhonoured(self) -> None:
        """An error naming each GRPOConfig option SPROTrainer would not honour as TRL documents it. SPRO
        replaces TRL's advantage (``[B]``, from the rewards) by its own per-token one (``[B, T]``): TRL's
        options that shape the advantage are not used, and those that decide per completion from the
        sign of its advantage would decide per token. Everything else reaches TRL's loss unchanged."""
        outcome = getattr(self, "spro_outcome_scale", "group")
        if self.scale_rewards not in ("group", outcome):  # (TRL maps True / False to 'group' / 'none')
            raise ValueError(
                f"scale_rewards={self.scale_rewards!r}: SPROTrainer does not use TRL's reward scaling; the outcome "
                f"part of SPRO's advantage is scaled by spro_outcome_scale (now {outcome!r}). Set "
                f"spro_outcome_scale={self.scale_rewards!r} (scale_rewards may stay at its default or equal it)"
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "multi_objective_aggregation: SPROTrainer normalises the weighted sum of the rewards itself; "
                f"expected 'sum_then_normalize', got {self.multi_objective_aggregation!r}"
            )
        if self.off_policy_mask_threshold is not None:
            raise ValueError(
                f"off_policy_mask_threshold={self.off_policy_mask_threshold}: TRL drops a completion when its "
                "advantage is negative and its KL is high; SPRO's advantage is per token, so TRL would drop tokens, "
                "not completions. SPROTrainer does not support it: leave off_policy_mask_threshold=None"
            )
        if self.loss_type == "vespo":
            raise ValueError(
                "loss_type='vespo': VESPO weighs each completion by the sign of its advantage; SPRO's advantage is "
                "per token, so the weights would be per token. Use loss_type 'grpo' (SPRO's default), 'dapo', "
                "'dr_grpo', 'bnpo', 'cispo', 'sapo' or 'luspo'"
            )

    def spro_options(self) -> dict[str, Any]:
        """Keyword options for :func:`spro.algorithms.core.spro_advantage` (everything but the tensors),
        checked by :class:`spro.algorithms.spro.SPROOptions`."""
        try:
            options = SPROOptions(**{f.name: getattr(self, f"spro_{f.name}", f.default)
                                     for f in dataclasses.fields(SPROOptions)})
        except ConfigError as e:
            raise ValueError(f"spro_{e}") from None
        return options.core_kwargs()


# Options of SPROOptions that TRL does not take (the reference is TRL's).
_NOT_IN_TRL = ("ref_refresh_every",)


def _spro_fields() -> list[tuple[str, Any, Any]]:
    """``spro_<name>`` for each option of SPROOptions: its type, default and help, generated (no hand copy)."""
    hints = typing.get_type_hints(SPROOptions)
    return [(f"spro_{f.name}", hints[f.name], field(default=f.default, metadata={"help": f.metadata["help"]}))
            for f in dataclasses.fields(SPROOptions) if f.name not in _NOT_IN_TRL]


SPROConfig = dataclasses.make_dataclass("SPROConfig", _spro_fields(), bases=(_SPROConfigBase,))
SPROConfig.__module__ = __name__
SPROConfig.__doc__ = """``GRPOConfig`` plus SPRO's options: ``spro_<name>`` for each option of
    :class:`spro.algorithms.spro.SPROOptions` (generated from it: same types, defaults, help and checks as
    spro's trainer), but for ``ref_refresh_every`` (the reference is TRL's).

    Two GRPO defaults differ: ``loss_type="grpo"`` (per-sequence token mean, then mean over
    sequences: the aggregation of the SPRO paper) and ``disable_dropout=True`` (the process reward
    compares two forwards of the same tokens, which dropout would make noisy). TRL's
    ``scale_rewards`` does not apply: the outcome part of the advantage is scaled by
    ``spro_outcome_scale`` (``"group"``, ``"batch"`` or ``"none"``), and a ``scale_rewards`` other than
    TRL's default that differs from it is an error. ``multi_objective_aggregation`` must be
    ``"sum_then_normalize"``: the outcome reward SPRO normalises is the weighted sum of the reward
    functions. ``off_policy_mask_threshold`` and ``loss_type="vespo"``, which decide per completion from
    the sign of its advantage, are errors (SPRO's advantage is per token). TRL's ``beta`` is the KL
    coefficient of TRL's loss, as in GRPO; SPRO's process-reward weight is ``spro_beta``.
    """


class SPROTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with SPRO's per-token advantage (see the module docstring).

    Same constructor as ``GRPOTrainer``; ``args`` must be an :class:`SPROConfig` (``None`` gives the
    defaults). Example::

        trainer = SPROTrainer(model=model, reward_funcs=reward_fn, args=SPROConfig(output_dir="out"),
                              train_dataset=dataset, processing_class=tokenizer)
        trainer.train()
    """

    _tag_names = ["trl", "grpo", "spro"]
    _name = "SPRO"

    def __init__(self, model, reward_funcs=None, args: SPROConfig | None = None, *rest, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = SPROConfig(f"{(name or 'model').split('/')[-1]}-SPRO")
        if not isinstance(args, SPROConfig):
            raise TypeError(
                f"SPROTrainer: args must be an SPROConfig (it adds the spro_* options), got {type(args).__name__}"
            )
        bound = inspect.signature(GRPOTrainer.__init__).bind(self, model, reward_funcs, args, *rest, **kwargs)
        peft_config = bound.arguments.get("peft_config")
        if _gguf_source(model, args) is not None:  # TRL cannot load a GGUF file: spro's loader does (no `spro export`)
            model, args = self._spro_load_gguf(model, args, bound)
            bound.arguments["model"], bound.arguments["args"] = model, args

        # A frozen copy of the starting policy, taken before TRL patches the model's forward (its fused LM
        # head) and before accelerate wraps it. Only needed when TRL builds no reference itself.
        ref_copy = None
        # (a model path is never a peft model; accelerate's is_peft_model fails on a string once peft is installed)
        needs_own_ref = args.beta == 0.0 and peft_config is None and (isinstance(model, str) or not is_peft_model(model))
        if needs_own_ref and not isinstance(model, str):
            if is_deepspeed_zero3_enabled():
                raise ValueError(
                    "SPROTrainer: with DeepSpeed ZeRO-3 and beta=0, pass the model as a path (the frozen reference "
                    "is then loaded from it); a model instance's partitioned weights cannot be copied"
                )
            ref_copy = copy.deepcopy(model)

        super().__init__(*bound.args[1:], **bound.kwargs)  # (the arguments as given, but a GGUF model loaded)

        self._spro_rewards_per_func: torch.Tensor | None = None
        if needs_own_ref and not is_peft_model(self.model):
            if ref_copy is None:  # the policy was loaded from a path: load the reference the same way
                init_kwargs = dict(args.model_init_kwargs or {})
                if args.distributed_state.distributed_type in ["MULTI_GPU", "DEEPSPEED"]:
                    init_kwargs["device_map"] = None
                init_kwargs.setdefault("trust_remote_code", args.trust_remote_code)
                init_kwargs.setdefault("dtype", self.model.dtype)
                init_kwargs.setdefault("attn_implementation", self.model.config._attn_implementation)
                ref_copy = create_model_from_path(model, **init_kwargs)
            self.ref_model = self._spro_prepare_reference(ref_copy)

    # ------------------------------------------------------------------ GGUF

    @staticmethod
    def _spro_load_gguf(model: str, args: SPROConfig, bound: inspect.BoundArguments):
        """``(model instance, args)`` for a GGUF ``model`` (a ``.gguf`` path, or a folder with
        ``model_init_kwargs={"gguf_file": ...}``), loaded and dequantised by
        :func:`spro.models.loading.load_model` as spro's own trainer does; its tokenizer becomes the
        ``processing_class`` when none is given. ``args`` is a copy without ``model_init_kwargs`` (they
        were used here: ``gguf_file`` and ``dtype``; any other key is an error naming it)."""
        from spro.models.loading import load_model

        folder, gguf_file = _gguf_source(model, args)
        init = dict(args.model_init_kwargs or {})
        init.pop("gguf_file", None)
        dtype = init.pop("dtype", init.pop("torch_dtype", "float32"))
        dtype = str(dtype).removeprefix("torch.")
        if init:
            raise ValueError(
                f"model_init_kwargs {sorted(init)}: a GGUF model is loaded by spro (spro.models.loading.load_model), "
                "which takes gguf_file and dtype only; remove the others, or convert the file once with "
                "`spro export --model FILE.gguf --output FOLDER` and pass FOLDER"
            )
        if dtype not in ("float32", "bfloat16", "float16", "auto"):
            raise ValueError(f"model_init_kwargs dtype={dtype!r}: a GGUF model loads as float32, bfloat16, float16 or auto")
        policy, tok = load_model(folder, dtype=dtype, gguf_file=gguf_file)
        if bound.arguments.get("processing_class") is None:
            bound.arguments["processing_class"] = tok
        args = copy.copy(args)  # (the caller's config keeps its model_init_kwargs)
        args.model_init_kwargs = None
        return policy, args

    # ------------------------------------------------------------------ reference model

    def _spro_prepare_reference(self, ref: torch.nn.Module) -> torch.nn.Module:
        """Freeze ``ref`` and prepare it the way ``GRPOTrainer.__init__`` prepares its own reference."""
        ref.requires_grad_(False)
        ref.eval()
        if self.args.disable_dropout:
            disable_dropout_in_model(ref)
        if self.args.cast_lm_head_to_fp32:
            _cast_lm_head_to_fp32(ref)
        add_fused_lm_head(ref, temperature=self.temperature, cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32)
        if self.is_deepspeed_enabled:
            return prepare_deepspeed(ref, self.accelerator)
        if self.is_fsdp_enabled:
            return prepare_fsdp(ref, self.accelerator)
        return self.accelerator.prepare_model(ref, evaluation_mode=True)

    # ------------------------------------------------------------------ hooks into TRL

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # TRL returns the rewards of every process ([B_global, n_funcs], process order); keep them.
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._spro_rewards_per_func = rewards_per_func
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        self._spro_rewards_per_func = None
        output = super()._generate_and_score_completions(inputs)
        if self._spro_rewards_per_func is None:
            raise RuntimeError(
                "SPROTrainer: TRL did not call _calculate_rewards; this TRL version is not supported "
                f"(supported: trl{SUPPORTED_TRL})"
            )
        mode = "train" if self.model.training else "eval"
        output["advantages"] = self._spro_advantages(output, mode)
        self._spro_rewards_per_func = None
        return output

    # ------------------------------------------------------------------ SPRO advantage

    def _spro_logps(self, output: dict[str, Any], mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs of the completions under pi_old and pi_ref, ``[B_local, T]`` each."""
        logp = output.get("old_per_token_logps")
        ref_logp = output.get("ref_per_token_logps")
        if logp is not None and ref_logp is not None:
            return logp, ref_logp
        input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        logits_to_keep = output["completion_ids"].size(1)
        batch_size = (
            self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
        )
        forward_kwargs = {k: output[k] for k in _FORWARD_KEYS if k in output}

        def score(model):
            return self._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size, **forward_kwargs
            )[0]

        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if logp is None:
                # TRL skipped pi_old because, on-policy, it equals the current policy: score it now.
                logp = score(self.model)
            if ref_logp is None:
                if self.ref_model is not None:
                    ref_logp = score(self.ref_model)
                elif is_peft_model(self.model) or is_peft_model(self.accelerator.unwrap_model(self.model)):
                    unwrapped = self.accelerator.unwrap_model(self.model)
                    with use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None):
                        ref_logp = score(self.model)
                else:  # pragma: no cover - __init__ always provides one of the two
                    raise RuntimeError("SPROTrainer: no reference model to score the completions with")
        return logp, ref_logp

    def _spro_gather(self, x: torch.Tensor) -> torch.Tensor:
        """Pad ``x [B_local, T_local]`` along dim 1 to the longest process and gather: ``[B_global, T_max]``."""
        x = self.accelerator.pad_across_processes(x.contiguous(), dim=1, pad_index=0)
        return self.accelerator.gather(x)

    def _spro_advantages(self, output: dict[str, Any], mode: str) -> torch.Tensor:
        """SPRO's advantage for this process's completions, ``[B_local, T_local]``."""
        logp, ref_logp = self._spro_logps(output, mode)
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        local_b, local_t = mask.shape

        logp_all = self._spro_gather(logp.float())
        ref_all = self._spro_gather(ref_logp.float())
        mask_all = self._spro_gather(mask.float())
        rewards_per_func = self._spro_rewards_per_func.to(logp_all.device)
        weights = self.reward_weights.to(rewards_per_func.device)
        rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
        scorable = ~torch.isnan(rewards_per_func).all(dim=1)

        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        if rewards.numel() % num_generations:
            raise ValueError(
                f"SPROTrainer: {rewards.numel()} completions do not split into groups of "
                f"num_generations={num_generations}"
            )
        # TRL's sampler puts the num_generations completions of a prompt next to each other in the global batch.
        group_ids = torch.arange(rewards.numel(), device=rewards.device) // num_generations

        advantages = torch.zeros_like(logp_all)
        # Completions no reward function could score carry no signal: advantage 0, and they are left out of
        # their group's statistics (as in TRL).
        keep = scorable.nonzero(as_tuple=True)[0]
        if keep.numel() > 0:
            advantages[keep] = self._spro_compute_advantages(
                rewards=rewards[keep],
                logp=logp_all[keep],
                ref_logp=ref_all[keep],
                mask=mask_all[keep],
                group_ids=group_ids[keep],
            )
            self._spro_log_metrics(mode, logp_all[keep], ref_all[keep], mask_all[keep], group_ids[keep],
                                   advantages[keep])
        self._spro_log_table(advantages, mask_all)

        start = self.accelerator.process_index * local_b
        local = advantages[start : start + local_b, :local_t]
        return local.to(dtype=torch.float32, device=mask.device)

    def _spro_compute_advantages(
        self,
        *,
        rewards: torch.Tensor,
        logp: torch.Tensor,
        ref_logp: torch.Tensor,
        mask: torch.Tensor,
        group_ids: torch.Tensor,
    ) -> torch.Tensor:
        """The core estimator on the gathered batch: rewards ``[B]``, the rest ``[B, T]`` -> ``[B, T]``."""
        return spro_advantage(rewards, logp, ref_logp, mask, group_ids, **self.args.spro_options())

    def _spro_log_metrics(self, mode, logp, ref_logp, mask, group_ids, advantages) -> None:
        """Append SPRO's ``process/*`` metrics (computed on the gathered batch, so equal on every process)."""
        options = SPROOptions(**self.args.spro_options())
        stats = process_stats(logp, ref_logp, mask, group_ids, options, advantages)
        for key, value in process_metrics(**stats).items():
            self._metrics[mode][key].append(0.0 if value is None else value)

    def _spro_log_table(self, advantages: torch.Tensor, mask: torch.Tensor) -> None:
        """Show each completion's mean SPRO advantage in TRL's completions table instead of GRPO's."""
        logged = self._logs.get("advantages") if isinstance(getattr(self, "_logs", None), dict) else None
        if logged is None:
            return
        per_seq = (advantages * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        for _ in range(min(per_seq.numel(), len(logged))):
            logged.pop()
        logged.extend(per_seq.tolist())


def _gguf_source(model: Any, args: Any) -> tuple[str, str | None] | None:
    """``(name, gguf_file)`` for :func:`spro.models.loading.load_model` when ``model`` names a GGUF checkpoint:
    a path ending in ``.gguf``, or a folder with ``args.model_init_kwargs["gguf_file"]``; else None."""
    if not isinstance(model, str):
        return None
    gguf_file = (getattr(args, "model_init_kwargs", None) or {}).get("gguf_file")
    if gguf_file is not None:
        return model, gguf_file
    return (model, None) if model.endswith(".gguf") else None


def _cast_lm_head_to_fp32(model: torch.nn.Module) -> None:
    """Run ``model``'s LM head in float32 (what TRL does to its models with ``cast_lm_head_to_fp32``).

    With tied embeddings the embedding outputs are cast back to the original dtype, as in TRL.
    """
    head = model.get_output_embeddings()
    original = head.weight.dtype
    head.float()
    if getattr(model.config, "tie_word_embeddings", False) and original != torch.float32:
        model.get_input_embeddings().register_forward_hook(lambda module, args, out: out.to(original))
