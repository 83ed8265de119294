"""SPRO as a verl advantage estimator (supported: ``verl==0.9.1``).

verl's estimator registry (``register_adv_est``) calls an estimator with the token-level rewards,
the response mask, the prompt index (``uid``) and the ``algorithm`` config; it does not pass the
log-probs SPRO's process reward needs. This module therefore has three pieces:

- :func:`compute_spro_advantage`: the estimator, with verl's calling convention plus
  ``old_log_probs`` (pi_old, the policy that sampled the batch) and ``ref_log_prob`` (pi_ref);
  it reads its options from the ``algorithm`` config (keys in :class:`SPROVerlOptions`) and calls
  :func:`spro.algorithms.core.spro_advantage`. Pure torch/numpy: it needs no verl.
- :func:`compute_advantage`: a drop-in wrapper of ``verl.trainer.ppo.ray_trainer.compute_advantage``.
  For ``adv_estimator == "spro"`` it takes ``old_log_probs`` and ``ref_log_prob`` from the
  ``DataProto`` batch (verl's legacy trainer and its v1 trainer both put them there before the
  advantage step) and writes ``advantages`` and ``returns``; any other estimator goes to verl's
  original function unchanged.
- :func:`install`: registers ``"spro"`` with ``register_adv_est`` and puts the wrapper in place
  of ``compute_advantage`` in verl's modules (``ray_trainer`` and every loaded verl module that
  imported it, e.g. ``trainer.ppo.v1.utils``); in the v1 trainer it also adds SPRO's metrics to
  the step metrics. It is idempotent; :func:`uninstall` undoes it.

verl runs its trainer inside a Ray actor (``TaskRunner``), so the patch must happen in that
process, not only in the launching one. ``python -m spro.integrations.verl <hydra overrides>``
does this: it runs verl's own ``verl.trainer.main_ppo`` entry point with Ray's
``worker_process_setup_hook`` set to :func:`ray_worker_setup`, which calls :func:`install` in
every Ray worker. ``examples/verl_spro.md`` has the full command and config.

Requirements in the verl config: ``algorithm.adv_estimator=spro``; a reference policy, which verl
only loads when a KL term is on: ``actor_rollout_ref.actor.use_kl_loss=True`` with
``actor_rollout_ref.actor.kl_loss_coef=0.0`` (the paper uses no KL); SPRO's options as new keys
under ``algorithm`` (``+algorithm.spro_beta=0.05`` etc.; Hydra needs the ``+`` for keys not in
verl's schema).

This module imports without verl; the functions that need verl import it on call and raise an
``ImportError`` that says how to install it when it is missing.
"""

from __future__ import annotations

import importlib
import logging
import sys
from dataclasses import fields
from typing import Any

import numpy as np
import torch

from spro.algorithms.core import spro_advantage
from spro.algorithms.spro import SPROOptions, process_metrics, process_stats
from spro.options import ConfigError

__all__ = [
    "ESTIMATOR_NAME",
    "SUPPORTED_VERL",
    "SPROVerlOptions",
    "compute_spro_advantage",
    "spro_metrics",
    "compute_advantage",
    "register",
    "install",
    "uninstall",
    "is_installed",
    "last_metrics",
    "ray_worker_setup",
    "main",
]

ESTIMATOR_NAME = "spro"
SUPPORTED_VERL = "==0.9.1"
_SETUP_HOOK = "spro.integrations.verl.ray_worker_setup"

logger = logging.getLogger(__name__)

class SPROVerlOptions:
    """SPRO's keys in verl's ``algorithm`` config: ``algorithm.spro_<option>`` for each option of
    :class:`spro.algorithms.spro.SPROOptions` (``spro_beta``, ``spro_outcome_scale``, ...), with its
    defaults and checks. ``SPROVerlOptions(spro_beta=0.1)``; ``.options`` is the ``SPROOptions``."""

    PREFIX = "spro_"

    def __init__(self, **values: Any) -> None:
        names = {f.name for f in fields(SPROOptions)}
        unknown = sorted(k for k in values if not k.startswith(self.PREFIX) or k[len(self.PREFIX):] not in names)
        if unknown:
            raise ValueError(f"algorithm.{unknown[0]}: not an SPRO option (they are "
                             f"{', '.join(self.PREFIX + n for n in sorted(names))})")
        if values.get(self.PREFIX + "ref_refresh_every"):
            raise ValueError("algorithm.spro_ref_refresh_every: not supported with verl (the reference is verl's)")
        try:
            self.options = SPROOptions(**{k[len(self.PREFIX):]: v for k, v in values.items()})
        except ConfigError as e:
            raise ValueError(f"algorithm.{self.PREFIX}{e}") from None

    def __getattr__(self, name: str) -> Any:  # opts.spro_beta -> opts.options.beta
        if name.startswith(self.PREFIX) and "options" in self.__dict__:
            return getattr(self.options, name[len(self.PREFIX):])
        raise AttributeError(name)

    @classmethod
    def from_config(cls, config: Any) -> SPROVerlOptions:
        """Read the ``spro_*`` keys from verl's ``algorithm`` config (DictConfig, AlgoConfig, dict or None)."""
        values = {}
        if config is not None:
            for f in fields(SPROOptions):
                key = cls.PREFIX + f.name
                value = config.get(key, None) if hasattr(config, "get") else getattr(config, key, None)
                if value is not None:
                    values[key] = value
        return cls(**values)

    def core_kwargs(self) -> dict[str, Any]:
        """Keyword options for :func:`spro.algorithms.core.spro_advantage`."""
        return self.options.core_kwargs()


def _group_ids(index: Any, batch_size: int, device: torch.device) -> torch.Tensor:
    """verl's prompt index (an array of uids, any hashable values) -> integer group ids ``[B]``."""
    if index is None:
        raise ValueError(
            "spro: the batch has no prompt index ('uid' in non_tensor_batch); SPRO compares the responses "
            "of a prompt and needs it (verl adds it when actor_rollout_ref.rollout.n > 1)"
        )
    index = np.asarray(index, dtype=object) if not isinstance(index, np.ndarray) else index
    if index.shape != (batch_size,):
        raise ValueError(f"spro: index (uid) has shape {index.shape}, expected ({batch_size},)")
    _, inverse = np.unique(index.astype(str), return_inverse=True)
    return torch.as_tensor(inverse.reshape(-1), dtype=torch.long, device=device)


def _missing_logprob_error(name: str) -> ValueError:
    if name == "ref_log_prob":
        hint = (
            "verl computes reference log-probs only when a KL term is on: set "
            "actor_rollout_ref.actor.use_kl_loss=True and actor_rollout_ref.actor.kl_loss_coef=0.0"
        )
    else:
        hint = "verl computes them in the old_log_prob step before the advantage step"
    return ValueError(
        f"spro: {name} is missing. SPRO's process reward needs the sampling policy's (old_log_probs) and "
        f"the reference's (ref_log_prob) per-token log-probs. verl's compute_advantage does not pass them to "
        f"registered estimators: call spro.integrations.verl.install() in the trainer process (or launch with "
        f"`python -m spro.integrations.verl ...`). {hint}."
    )


def compute_spro_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    old_log_probs: torch.Tensor | None = None,
    ref_log_prob: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SPRO advantage with verl's estimator signature (registered as ``"spro"``).

    Args:
        token_level_rewards: ``[B, T]``; the outcome reward of response ``i`` is its sum over tokens
            (verl puts the verifier's score on the last token).
        response_mask: ``[B, T]`` 0/1 mask of the response tokens.
        index: ``[B]`` prompt uids (``non_tensor_batch["uid"]``); equal uids form a group.
        config: verl's ``algorithm`` config; its ``spro_*`` keys (see :class:`SPROVerlOptions`) set the options.
        old_log_probs: ``[B, T]`` log-probs of the responses under the policy that sampled them.
        ref_log_prob: ``[B, T]`` log-probs under the frozen reference policy.
        **kwargs: other inputs verl may pass (``reward_baselines``, ...), ignored.

    Returns:
        ``(advantages, returns)``, both the same ``[B, T]`` tensor (float32), 0 outside the mask.
    """
    if old_log_probs is None:
        raise _missing_logprob_error("old_log_probs")
    if ref_log_prob is None:
        raise _missing_logprob_error("ref_log_prob")
    options = SPROVerlOptions.from_config(config)
    if token_level_rewards.dim() != 2:
        raise ValueError(f"spro: token_level_rewards must be [B, T], got shape {tuple(token_level_rewards.shape)}")
    for name, x in (("response_mask", response_mask), ("old_log_probs", old_log_probs), ("ref_log_prob", ref_log_prob)):
        if tuple(x.shape) != tuple(token_level_rewards.shape):
            raise ValueError(
                f"spro: {name} has shape {tuple(x.shape)}, token_level_rewards {tuple(token_level_rewards.shape)}"
            )
    with torch.no_grad():
        mask = response_mask.float()
        rewards = (token_level_rewards.float() * mask).sum(dim=-1)
        group_ids = _group_ids(index, mask.shape[0], mask.device)
        advantages = spro_advantage(
            rewards, old_log_probs.float(), ref_log_prob.float(), mask, group_ids, **options.core_kwargs()
        ).float()
    return advantages, advantages


def spro_metrics(old_log_probs: torch.Tensor, ref_log_prob: torch.Tensor, response_mask: torch.Tensor, index: Any,
                 config: Any = None, advantages: torch.Tensor | None = None) -> dict[str, float]:
    """SPRO's ``process/*`` metrics of a batch, as spro's own trainer and the TRL integration log them
    (``spro.algorithms.spro.process_metrics``); ``process/advantage_abs_mean`` only with ``advantages``."""
    options = SPROVerlOptions.from_config(config).options
    mask = response_mask.bool()
    group_ids = _group_ids(index, mask.shape[0], mask.device)
    stats = process_stats(old_log_probs.float(), ref_log_prob.float(), mask, group_ids, options, advantages)
    metrics = {k: (0.0 if v is None else v) for k, v in process_metrics(**stats).items()}
    if advantages is None:
        metrics.pop("process/advantage_abs_mean")
    return metrics


# ---------------------------------------------------------------------------------------------
# the compute_advantage wrapper and its installation into verl
# ---------------------------------------------------------------------------------------------

_ORIGINAL_COMPUTE_ADVANTAGE = None  # verl's function, set by install()
_ORIGINAL_V1_STEP = None  # verl's v1 PPOTrainer._compute_advantage, set by install()
_LAST_METRICS: dict[str, float] = {}


def _import_verl(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"spro.integrations.verl needs verl{SUPPORTED_VERL} ({module} could not be imported: {exc}). verl needs "
            "transformers<5.11 and tensordict<=0.10, so install it in an environment of its own: "
            "`pip install torch && pip install 'spro[verl]'` (see examples/verl_spro.md)."
        ) from exc


def _estimator_name(adv_estimator: Any) -> str:
    return getattr(adv_estimator, "value", adv_estimator)


def _batch_get(batch: Any, key: str):
    return batch[key] if key in batch.keys() else None


def compute_advantage(data: Any, adv_estimator: Any, *args: Any, **kwargs: Any) -> Any:
    """Drop-in replacement for ``verl.trainer.ppo.ray_trainer.compute_advantage``.

    ``adv_estimator == "spro"``: reads ``token_level_rewards``, ``response_mask``, ``old_log_probs`` and
    ``ref_log_prob`` from ``data.batch`` and ``uid`` from ``data.non_tensor_batch``, writes
    ``data.batch["advantages"]`` and ``data.batch["returns"]`` and SPRO's metrics into
    ``data.meta_info["spro_metrics"]``, and returns ``data``. The algorithm config is the ``config``
    keyword (or the 7th positional argument, as in verl's signature). Any other estimator is passed to
    verl's original ``compute_advantage`` unchanged.
    """
    if _estimator_name(adv_estimator) != ESTIMATOR_NAME:
        original = _ORIGINAL_COMPUTE_ADVANTAGE
        if original is None:
            original = _import_verl("verl.trainer.ppo.ray_trainer").compute_advantage
            if original is compute_advantage:  # pragma: no cover - installed but the original was lost
                raise RuntimeError("spro: verl's original compute_advantage is unknown")
        return original(data, adv_estimator, *args, **kwargs)

    # verl's signature: (data, adv_estimator, gamma, lam, num_repeat, norm_adv_by_std_in_grpo, config)
    config = kwargs.get("config", args[4] if len(args) > 4 else None)
    batch = data.batch
    response_mask = _batch_get(batch, "response_mask")
    if response_mask is None:
        if _batch_get(batch, "responses") is None or _batch_get(batch, "attention_mask") is None:
            raise ValueError("spro: the batch has neither 'response_mask' nor 'responses' + 'attention_mask'")
        response_mask = batch["attention_mask"][:, -batch["responses"].size(1) :]
        batch["response_mask"] = response_mask
    if _batch_get(batch, "token_level_rewards") is None:
        raise ValueError("spro: the batch has no 'token_level_rewards' (verl sets them before the advantage step)")
    old_log_probs = _batch_get(batch, "old_log_probs")
    ref_log_prob = _batch_get(batch, "ref_log_prob")
    index = data.non_tensor_batch.get("uid")
    advantages, returns = compute_spro_advantage(
        token_level_rewards=batch["token_level_rewards"],
        response_mask=response_mask,
        index=index,
        config=config,
        old_log_probs=old_log_probs,
        ref_log_prob=ref_log_prob,
    )
    batch["advantages"] = advantages
    batch["returns"] = returns
    metrics = spro_metrics(old_log_probs, ref_log_prob, response_mask, index, config, advantages)
    _LAST_METRICS.clear()
    _LAST_METRICS.update(metrics)
    if isinstance(getattr(data, "meta_info", None), dict):
        data.meta_info["spro_metrics"] = dict(metrics)
    return data


def last_metrics() -> dict[str, float]:
    """SPRO metrics of the last batch :func:`compute_advantage` handled in this process (a copy)."""
    return dict(_LAST_METRICS)


def register() -> None:
    """Register :func:`compute_spro_advantage` as ``"spro"`` in verl's advantage-estimator registry."""
    core_algos = _import_verl("verl.trainer.ppo.core_algos")
    if core_algos.ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR_NAME) is not compute_spro_advantage:
        core_algos.register_adv_est(ESTIMATOR_NAME)(compute_spro_advantage)


def _v1_compute_advantage_step(self, batch, metrics):
    """verl v1 ``PPOTrainer._compute_advantage`` plus SPRO's metrics in the step's metrics."""
    _LAST_METRICS.clear()
    out = _ORIGINAL_V1_STEP(self, batch, metrics)
    if _LAST_METRICS and isinstance(metrics, dict):
        metrics.update(_LAST_METRICS)
    return out


def install() -> None:
    """Register ``"spro"`` and route verl's ``compute_advantage`` through :func:`compute_advantage`.

    Patches ``verl.trainer.ppo.ray_trainer.compute_advantage`` and every loaded ``verl`` module holding a
    reference to it (modules imported later pick up the patched one); with verl's v1 trainer present,
    wraps ``PPOTrainer._compute_advantage`` to add SPRO's metrics. Idempotent. Must run in the process
    that runs the trainer (see :func:`ray_worker_setup`).
    """
    global _ORIGINAL_COMPUTE_ADVANTAGE, _ORIGINAL_V1_STEP
    register()
    ray_trainer = _import_verl("verl.trainer.ppo.ray_trainer")
    if ray_trainer.compute_advantage is not compute_advantage:
        _ORIGINAL_COMPUTE_ADVANTAGE = ray_trainer.compute_advantage
    try:  # the v1 trainer (the default in verl 0.9) calls compute_advantage through this module
        importlib.import_module("verl.trainer.ppo.v1.utils")
    except ImportError as exc:  # pragma: no cover - depends on the verl install
        logger.debug("spro: verl.trainer.ppo.v1.utils not importable (%s); patching the legacy trainer only", exc)
    for name, module in list(sys.modules.items()):
        if (name == "verl" or name.startswith("verl.")) and module is not None:
            if getattr(module, "compute_advantage", None) is _ORIGINAL_COMPUTE_ADVANTAGE:
                module.compute_advantage = compute_advantage
    try:
        trainer_base = importlib.import_module("verl.trainer.ppo.v1.trainer_base")
    except ImportError:  # pragma: no cover - depends on the verl install
        return
    step = trainer_base.PPOTrainer.__dict__.get("_compute_advantage")
    if step is not None and step is not _v1_compute_advantage_step:
        _ORIGINAL_V1_STEP = step
        trainer_base.PPOTrainer._compute_advantage = _v1_compute_advantage_step


def is_installed() -> bool:
    """Whether :func:`install` is in effect in this process."""
    ray_trainer = sys.modules.get("verl.trainer.ppo.ray_trainer")
    return ray_trainer is not None and ray_trainer.compute_advantage is compute_advantage


def uninstall() -> None:
    """Undo :func:`install`'s patches (the ``"spro"`` registry entry stays: verl cannot unregister)."""
    global _ORIGINAL_COMPUTE_ADVANTAGE, _ORIGINAL_V1_STEP
    if _ORIGINAL_COMPUTE_ADVANTAGE is not None:
        for name, module in list(sys.modules.items()):
            if (name == "verl" or name.startswith("verl.")) and module is not None:
                if getattr(module, "compute_advantage", None) is compute_advantage:
                    module.compute_advantage = _ORIGINAL_COMPUTE_ADVANTAGE
    trainer_base = sys.modules.get("verl.trainer.ppo.v1.trainer_base")
    if trainer_base is not None and _ORIGINAL_V1_STEP is not None:
        if trainer_base.PPOTrainer.__dict__.get("_compute_advantage") is _v1_compute_advantage_step:
            trainer_base.PPOTrainer._compute_advantage = _ORIGINAL_V1_STEP
    _ORIGINAL_COMPUTE_ADVANTAGE = None
    _ORIGINAL_V1_STEP = None


def ray_worker_setup() -> None:
    """Ray ``worker_process_setup_hook``: :func:`install` in every Ray worker that has verl.

    Workers without verl (or where it cannot be imported) are left alone with a warning, so that the
    hook never kills a worker that does not run the trainer.
    """
    try:
        install()
    except ImportError as exc:
        logger.warning("spro: not installing the verl SPRO estimator in this worker: %s", exc)


def main(argv: list[str] | None = None) -> None:
    """``python -m spro.integrations.verl [hydra overrides]``: verl's ``main_ppo`` with SPRO installed.

    Installs here, adds ``+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook=...ray_worker_setup``
    (unless the overrides already set that hook) so that Ray's workers, the trainer's included, install
    too, then hands the overrides to ``verl.trainer.main_ppo.main``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    install()
    if not any("worker_process_setup_hook" in a.split("=", 1)[0] for a in argv):
        argv.append(f"+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook={_SETUP_HOOK}")
    main_ppo = _import_verl("verl.trainer.main_ppo")
    sys.argv = [sys.argv[0], *argv]
    main_ppo.main()


if __name__ == "__main__":  # pragma: no cover
    # Run the imported module's main (not this __main__ copy), so that the functions installed here are
    # the same objects as the ones Ray's workers install by module path.
    from spro.integrations.verl import main as _main

    _main()
