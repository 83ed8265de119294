"""The verl adapter (spro.integrations.verl).

Two layers:

* Always run (no verl needed): the estimator and the ``compute_advantage`` wrapper on a stand-in
  with the shape of verl's ``DataProto`` (``.batch`` mapping of ``[B, T]`` tensors, ``.non_tensor_batch``
  with a numpy ``uid`` array, ``.meta_info`` dict), checked against ``spro.algorithms.core.spro_advantage``
  and against a hand-computed example.
* Only where verl 0.9.1 imports (it cannot share this project's main environment: it needs
  transformers<5.11 and tensordict<=0.10): the real ``DataProto``, verl's own ``compute_advantage``
  after :func:`install`, the v1 trainer's ``_compute_advantage`` step (with TransferQueue faked), the
  registry, and verl's Hydra config with SPRO's keys. Run them with
  ``PYTHONPATH=src /path/to/verl-env/bin/python -m pytest tests/integrations/test_verl.py``.
"""

from __future__ import annotations

import importlib.util
import os
import types

import numpy as np
import pytest
import torch

from spro.algorithms.core import spro_advantage
from spro.integrations import verl as sv

HAS_VERL = importlib.util.find_spec("verl") is not None
needs_verl = pytest.mark.skipif(
    not HAS_VERL, reason="verl is not importable in this environment (verl 0.9.1 needs its own venv)"
)


class StandInDataProto:
    """The parts of verl's DataProto the adapter touches: batch, non_tensor_batch, meta_info."""

    def __init__(self, tensors: dict[str, torch.Tensor], uid):
        self.batch = dict(tensors)
        self.non_tensor_batch = {"uid": np.asarray(uid, dtype=object)}
        self.meta_info = {}


def make_batch(seed: int = 0):
    """Two prompts (uids interleaved, unequal group sizes), responses of different lengths, the
    verifier's score on the last response token as verl does."""
    g = torch.Generator().manual_seed(seed)
    lengths = [3, 5, 2, 5, 4, 1, 5]
    uid = ["p-a", "p-b", "p-a", "p-b", "p-a", "p-b", "p-b"]
    B, T = len(lengths), max(lengths)
    mask = torch.zeros(B, T)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.5, 0.0])
    token_level_rewards = torch.zeros(B, T)
    token_level_rewards[torch.arange(B), torch.tensor(lengths) - 1] = scores
    old = torch.randn(B, T, generator=g) - 2.0
    ref = old + 0.3 * torch.randn(B, T, generator=g)
    group_ids = torch.tensor([0 if u == "p-a" else 1 for u in uid])
    return {
        "token_level_rewards": token_level_rewards,
        "response_mask": mask,
        "old_log_probs": old,
        "ref_log_prob": ref,
    }, uid, scores, group_ids


# --------------------------------------------------------------------------------------------
# always run: the adapter logic on verl-shaped data
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"spro_beta": 0.5, "spro_outcome_scale": "none", "spro_msa_scale_std": True},
        {"spro_beta": 0.2, "spro_baseline": "pooled_loo", "spro_process_reward": "per_token"},
        {"spro_beta": 1.0, "spro_process_only": True},
    ],
)
def test_wrapper_matches_core_on_standin(options):
    tensors, uid, scores, group_ids = make_batch()
    data = StandInDataProto(tensors, uid)
    out = sv.compute_advantage(data, "spro", config=dict(options))
    assert out is data
    expected = spro_advantage(
        scores, tensors["old_log_probs"], tensors["ref_log_prob"], tensors["response_mask"], group_ids,
        **sv.SPROVerlOptions(**options).core_kwargs(),
    )
    torch.testing.assert_close(data.batch["advantages"], expected.float())
    torch.testing.assert_close(data.batch["returns"], expected.float())
    assert set(data.meta_info["spro_metrics"]) == {
        "process/cpr_final_mean", "process/cpr_final_std", "process/msa_abs_mean", "process/reward_abs_mean",
        "process/advantage_abs_mean",
    }
    assert sv.last_metrics() == data.meta_info["spro_metrics"]


def test_hand_computed_example():
    """Group of two responses, beta = 1: A_out = +-1/sqrt(2) (unbiased std), MSA by hand."""
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    old = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.5, -1.0, 0.0]])
    # p = old - ref: row0 [0.5, -1.0, 0.0], row1 [-0.5, 0.0, .]; CPR row0 [0.5, -0.5, -0.5], row1 [-0.5, -0.5, .]
    # MSA: t0 mean 0 -> [0.5, -0.5]; t1 mean -0.5 -> [0, 0]; t2 only row0 -> 0
    a = 0.5 / (0.5**0.5 + 1e-6)  # rewards 1, 0: mean 0.5, unbiased std sqrt(0.5)
    expected = torch.tensor([[a + 0.5, a, a], [-a - 0.5, -a, 0.0]])
    adv, ret = sv.compute_spro_advantage(
        rewards, mask, np.array(["x", "x"], dtype=object), {"spro_beta": 1.0}, old_log_probs=old, ref_log_prob=ref
    )
    torch.testing.assert_close(adv, expected)
    assert ret is adv


def test_positional_config_and_enum_like_estimator():
    """verl calls compute_advantage(data, adv_estimator, gamma, lam, num_repeat, norm_adv_by_std_in_grpo, config)."""
    tensors, uid, scores, group_ids = make_batch(1)
    data = StandInDataProto(tensors, uid)
    estimator = types.SimpleNamespace(value="spro")  # like an Enum member
    sv.compute_advantage(data, estimator, 1.0, 1.0, 4, True, {"spro_beta": 0.7})
    expected = spro_advantage(scores, tensors["old_log_probs"], tensors["ref_log_prob"], tensors["response_mask"],
                              group_ids, beta=0.7)
    torch.testing.assert_close(data.batch["advantages"], expected.float())


def test_response_mask_derived_from_attention_mask():
    tensors, uid, scores, group_ids = make_batch(2)
    mask = tensors.pop("response_mask")
    B, T = mask.shape
    tensors["responses"] = torch.zeros(B, T, dtype=torch.long)
    tensors["attention_mask"] = torch.cat([torch.ones(B, 4), mask], dim=1)
    data = StandInDataProto(tensors, uid)
    sv.compute_advantage(data, "spro", config=None)
    torch.testing.assert_close(data.batch["response_mask"], mask)
    expected = spro_advantage(scores, tensors["old_log_probs"], tensors["ref_log_prob"], mask, group_ids, beta=0.05)
    torch.testing.assert_close(data.batch["advantages"], expected.float())


def test_missing_inputs_are_clear_errors():
    tensors, uid, _, _ = make_batch()
    no_ref = {k: v for k, v in tensors.items() if k != "ref_log_prob"}
    with pytest.raises(ValueError, match="use_kl_loss=True"):
        sv.compute_advantage(StandInDataProto(no_ref, uid), "spro")
    no_old = {k: v for k, v in tensors.items() if k != "old_log_probs"}
    with pytest.raises(ValueError, match="old_log_probs is missing"):
        sv.compute_advantage(StandInDataProto(no_old, uid), "spro")
    data = StandInDataProto(tensors, uid)
    data.non_tensor_batch = {}
    with pytest.raises(ValueError, match="uid"):
        sv.compute_advantage(data, "spro")
    # What verl's stock compute_advantage would do with a registered estimator: no log-probs passed.
    with pytest.raises(ValueError, match="install"):
        sv.compute_spro_advantage(token_level_rewards=tensors["token_level_rewards"],
                                  response_mask=tensors["response_mask"], index=np.array(uid, dtype=object))


def test_options_validation():
    with pytest.raises(ValueError, match="algorithm.spro_baseline"):
        sv.SPROVerlOptions.from_config({"spro_baseline": "mean"})
    with pytest.raises(ValueError, match="algorithm.spro_beta"):
        sv.SPROVerlOptions.from_config({"spro_beta": -0.1})
    with pytest.raises(ValueError, match="algorithm.spro_msa_scale_std"):
        sv.SPROVerlOptions.from_config({"spro_baseline": "pooled_loo", "spro_msa_scale_std": True})
    opts = sv.SPROVerlOptions.from_config(types.SimpleNamespace(get=lambda k, d=None: {"spro_beta": 0.3}.get(k, d)))
    assert opts.spro_beta == 0.3 and opts.spro_baseline == "masked_step"


def test_launcher_adds_the_ray_setup_hook(monkeypatch):
    """main() installs, appends the Ray worker hook override (unless given) and runs verl's main_ppo.main."""
    seen = []
    fake_main_ppo = types.SimpleNamespace(main=lambda: seen.append(list(__import__("sys").argv[1:])))
    monkeypatch.setattr(sv, "install", lambda: seen.append("installed"))
    monkeypatch.setattr(sv, "_import_verl", lambda name: fake_main_ppo)
    monkeypatch.setattr("sys.argv", ["prog"])
    sv.main(["algorithm.adv_estimator=spro", "+algorithm.spro_beta=0.1"])
    hook = "+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook=spro.integrations.verl.ray_worker_setup"
    assert seen == ["installed", ["algorithm.adv_estimator=spro", "+algorithm.spro_beta=0.1", hook]]
    seen.clear()
    own = "+ray_kwargs.ray_init.runtime_env.worker_process_setup_hook=my.module.setup"
    sv.main(["algorithm.adv_estimator=spro", own])
    assert seen == ["installed", ["algorithm.adv_estimator=spro", own]]


@pytest.mark.skipif(HAS_VERL, reason="checks the error raised when verl is missing")
def test_without_verl_imports_cleanly_and_explains():
    with pytest.raises(ImportError, match=r"spro\[verl\]"):
        sv.install()
    data = StandInDataProto(make_batch()[0], make_batch()[1])
    with pytest.raises(ImportError, match="verl"):
        sv.compute_advantage(data, "grpo")


# --------------------------------------------------------------------------------------------
# real verl (skipped where verl is not importable)
# --------------------------------------------------------------------------------------------


@pytest.fixture
def installed():
    pytest.importorskip("verl.trainer.ppo.ray_trainer", reason="verl is not importable in this environment")
    sv.install()
    yield
    sv.uninstall()


def real_dataproto(seed=0):
    from verl import DataProto

    tensors, uid, scores, group_ids = make_batch(seed)
    return DataProto.from_dict(tensors={k: v.clone() for k, v in tensors.items()},
                               non_tensors={"uid": np.array(uid, dtype=object)}), tensors, scores, group_ids


@needs_verl
def test_real_verl_install_patches_and_registers(installed):
    from verl.trainer.ppo import core_algos, ray_trainer
    from verl.trainer.ppo.v1 import trainer_base, utils

    assert sv.is_installed()
    assert ray_trainer.compute_advantage is sv.compute_advantage
    assert utils.compute_advantage is sv.compute_advantage
    assert core_algos.get_adv_estimator_fn("spro") is sv.compute_spro_advantage
    assert trainer_base.PPOTrainer._compute_advantage is sv._v1_compute_advantage_step
    sv.install()  # idempotent
    assert ray_trainer.compute_advantage is sv.compute_advantage
    sv.uninstall()
    assert ray_trainer.compute_advantage is not sv.compute_advantage
    assert utils.compute_advantage is ray_trainer.compute_advantage
    sv.install()


@needs_verl
def test_real_verl_compute_advantage_with_dataproto(installed):
    from omegaconf import OmegaConf
    from verl.trainer.ppo import ray_trainer

    data, tensors, scores, group_ids = real_dataproto()
    config = OmegaConf.create({"adv_estimator": "spro", "spro_beta": 0.4, "spro_msa_scale_std": True})
    out = ray_trainer.compute_advantage(data, adv_estimator="spro", num_repeat=4, config=config)
    expected = spro_advantage(scores, tensors["old_log_probs"], tensors["ref_log_prob"], tensors["response_mask"],
                              group_ids, beta=0.4, msa_scale_std=True)
    torch.testing.assert_close(out.batch["advantages"], expected.float())
    torch.testing.assert_close(out.batch["returns"], expected.float())
    assert out.meta_info["spro_metrics"]["process/msa_abs_mean"] > 0


@needs_verl
def test_real_verl_other_estimators_unchanged(installed):
    from verl.trainer.ppo import ray_trainer

    original = sv._ORIGINAL_COMPUTE_ADVANTAGE
    assert original is not None and original is not sv.compute_advantage
    for estimator in ("grpo", "rloo"):
        a, _, _, _ = real_dataproto()
        b, _, _, _ = real_dataproto()
        ray_trainer.compute_advantage(a, adv_estimator=estimator, norm_adv_by_std_in_grpo=True, config={})
        original(b, adv_estimator=estimator, norm_adv_by_std_in_grpo=True, config={})
        torch.testing.assert_close(a.batch["advantages"], b.batch["advantages"])


@needs_verl
def test_real_verl_v1_multi_trajectory_path(installed):
    """verl 0.9's v1 trainer goes through utils.compute_advantage_for_multi_trajectories."""
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

    data, tensors, scores, group_ids = real_dataproto(3)
    uid = data.non_tensor_batch["uid"]
    keys = [f"{u}_0_{i}" for i, u in enumerate(uid)]
    compute_advantage_for_multi_trajectories(data, batch_keys=keys, adv_estimator="spro", config={"spro_beta": 0.9})
    expected = spro_advantage(scores, tensors["old_log_probs"], tensors["ref_log_prob"], tensors["response_mask"],
                              group_ids, beta=0.9)
    torch.testing.assert_close(data.batch["advantages"], expected.float())


@needs_verl
def test_real_verl_v1_trainer_advantage_step(installed, monkeypatch):
    """The v1 PPOTrainer._compute_advantage step itself (verl's code: fetch fields, build the DataProto,
    compute, write back nested), with only TransferQueue replaced by an in-memory store."""
    from omegaconf import OmegaConf
    from tensordict import TensorDict
    from verl.trainer.ppo.v1 import trainer_base

    tensors, uid, scores, group_ids = make_batch(4)
    lengths = tensors["response_mask"].sum(1).long().tolist()

    def nested(x):
        return torch.nested.as_nested_tensor([x[i, :n] for i, n in enumerate(lengths)], layout=torch.jagged)

    store = TensorDict(
        {
            "uid": list(uid),
            "response_mask": nested(tensors["response_mask"].long()),
            "rm_scores": nested(tensors["token_level_rewards"]),
            "old_log_probs": nested(tensors["old_log_probs"]),
            "ref_log_prob": nested(tensors["ref_log_prob"]),
        },
        batch_size=[len(uid)],
    )

    class FakeTQ:
        put = None

        def kv_batch_get(self, keys, partition_id, select_fields):
            return store.select(*[f for f in select_fields if f in store.keys()])

        def kv_batch_put(self, keys, partition_id, fields):
            FakeTQ.put = fields
            return types.SimpleNamespace(keys=keys, partition_id=partition_id)

    monkeypatch.setattr(trainer_base, "tq", FakeTQ())
    config = OmegaConf.create({
        "algorithm": {"use_kl_in_reward": False, "adv_estimator": "spro", "gamma": 1.0, "lam": 1.0,
                      "norm_adv_by_std_in_grpo": True, "spro_beta": 0.5},
        "actor_rollout_ref": {"rollout": {"n": 4}},
    })
    class Meta:  # verl's KVBatchMeta: keys, partition_id, len()
        keys = [f"{u}_0_{i}" for i, u in enumerate(uid)]
        partition_id = "train"

        def __len__(self):
            return len(uid)

    meta = Meta()
    metrics = {}
    trainer_base.PPOTrainer._compute_advantage(types.SimpleNamespace(config=config), meta, metrics)
    got = FakeTQ.put["advantages"].to_padded_tensor(0.0)
    expected = spro_advantage(scores, tensors["old_log_probs"], tensors["ref_log_prob"], tensors["response_mask"],
                              group_ids, beta=0.5)
    torch.testing.assert_close(got, expected.float()[:, : got.shape[1]])
    assert metrics["process/msa_abs_mean"] > 0 and "process/cpr_final_mean" in metrics


def doc_command() -> list[str]:
    """The arguments of the first `python -m spro.integrations.verl` command in examples/verl_spro.md."""
    import re
    import shlex

    doc = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "verl_spro.md")
    with open(doc) as f:
        text = f.read()
    block = re.search(r"```bash\n(python -m spro\.integrations\.verl .*?)```", text, re.S).group(1)
    argv = shlex.split(block.replace("\\\n", " ").replace("$HOME", "/home/user"))
    assert argv[:3] == ["python", "-m", "spro.integrations.verl"]
    return argv[3:]


@needs_verl
def test_real_verl_launcher_with_the_documented_command(monkeypatch, tmp_path):
    """`python -m spro.integrations.verl <the overrides in examples/verl_spro.md>` runs verl's own
    main_ppo (Hydra config, validate_config) up to the Ray launch, which is intercepted here."""
    from verl.trainer import main_ppo

    launched = {}
    monkeypatch.setattr(main_ppo, "run_ppo", lambda config, task_runner_class: launched.update(config=config))
    monkeypatch.chdir(tmp_path)  # Hydra writes its run folder under the working directory
    monkeypatch.setattr("sys.argv", ["spro-verl"])
    try:
        sv.main(doc_command())
        cfg = launched["config"]
        assert cfg.algorithm.adv_estimator == "spro"
        opts = sv.SPROVerlOptions.from_config(cfg.algorithm)
        assert (opts.spro_beta, opts.spro_outcome_scale, opts.spro_msa_scale_std) == (0.05, "group", False)
        assert cfg.actor_rollout_ref.actor.use_kl_loss and cfg.actor_rollout_ref.actor.kl_loss_coef == 0.0
        assert cfg.actor_rollout_ref.actor.loss_agg_mode == "seq-mean-token-mean"
        assert cfg.ray_kwargs.ray_init.runtime_env.worker_process_setup_hook == sv._SETUP_HOOK
        assert sv.is_installed()
    finally:
        sv.uninstall()


@needs_verl
@pytest.mark.slow
def test_real_verl_ray_workers_install_via_setup_hook():
    """Ray's worker_process_setup_hook installs SPRO in the worker processes (where verl's TaskRunner runs)."""
    import ray

    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(sv.__file__))))

    @ray.remote
    def probe():
        import sys

        from verl.trainer.ppo import ray_trainer

        return ray_trainer.compute_advantage is sys.modules["spro.integrations.verl"].compute_advantage

    ray.init(num_cpus=1, include_dashboard=False, runtime_env={
        "worker_process_setup_hook": sv._SETUP_HOOK,
        "env_vars": {"PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])},
    })
    try:
        assert ray.get(probe.remote(), timeout=300)
    finally:
        ray.shutdown()
