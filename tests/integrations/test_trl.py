"""SPROTrainer (TRL 1.16) on the tiny model, on CPU.

The advantages SPROTrainer hands to TRL's loss are checked against ``spro.algorithms.core.spro_advantage``
recomputed outside the trainer from independent ingredients: log-probs of a plain forward of a
snapshot of the policy taken just before sampling (pi_old) and of the initial model (pi_ref), rewards
re-scored from the decoded completions, groups taken from the prompt texts.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from spro.algorithms.core import spro_advantage  # noqa: E402
from spro.integrations.trl import SPROConfig, SPROTrainer  # noqa: E402
from spro.models.tiny import build_char_tokenizer, build_tiny_model  # noqa: E402

MODEL_KW = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)
PROMPTS = ["Q:12+7=", "Q:3+45=", "Q:8+8=", "Q:21+30="]


def make_model(tokenizer):
    """The tiny model, also stopping at any of ten letters so that completion lengths vary."""
    model = build_tiny_model(tokenizer, **MODEL_KW)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids(list("abcdefghij"))]
    return model


def digit_reward(prompts, completions, **kwargs):
    """Fraction of digits in the completion: varies within a group even for a random model."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


class RecordingSPROTrainer(SPROTrainer):
    """Keeps, for every generation, a snapshot of the sampling policy and TRL's output batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records = []

    def _generate_and_score_completions(self, inputs):
        snapshot = {k: v.detach().clone() for k, v in self.accelerator.unwrap_model(self.model).state_dict().items()}
        output = super()._generate_and_score_completions(inputs)
        self.records.append(
            {
                "policy_state": snapshot,
                "prompts": [x["prompt"] for x in inputs],
                "output": {k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in output.items()},
            }
        )
        return output


def completion_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature):
    """log p(completion token) from a plain forward + log_softmax (no TRL code): [B, T]."""
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    T = completion_ids.size(1)
    logits = logits[:, -T - 1 : -1] / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1)


def make_args(tmp_path, **overrides):
    kw = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=8,
        max_steps=3,
        learning_rate=3e-2,
        logging_steps=1,
        seed=0,
        spro_beta=1.0,
        gradient_checkpointing=False,
    )
    kw.update(overrides)
    return SPROConfig(**kw)


def every_fourth_unscorable(prompts, completions, **kwargs):
    """digit_reward, but None (no verdict) for every 4th completion."""
    return [None if i % 4 == 3 else r for i, r in enumerate(digit_reward(prompts, completions))]


def run_and_check(tmp_path, model_arg, args, tokenizer, reward_fn=digit_reward):
    reference = build_tiny_model(tokenizer, **MODEL_KW).eval()  # = the starting policy
    dataset = Dataset.from_dict({"prompt": PROMPTS})
    trainer = RecordingSPROTrainer(
        model=model_arg, reward_funcs=reward_fn, args=args, train_dataset=dataset, processing_class=tokenizer
    )
    start = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()

    assert trainer.records, "no generation happened"
    policy = build_tiny_model(tokenizer, **MODEL_KW).eval()
    process_seen = False
    lengths = set()
    for rec in trainer.records:
        out = rec["output"]
        policy.load_state_dict(rec["policy_state"])
        mask = out["completion_mask"]
        lengths.update(mask.sum(dim=1).tolist())
        ids = (out["prompt_ids"], out["prompt_mask"], out["completion_ids"], mask)
        logp = completion_logps(policy, *ids, temperature=args.temperature)
        ref_logp = completion_logps(reference, *ids, temperature=args.temperature)
        completions = tokenizer.batch_decode(out["completion_ids"] * mask, skip_special_tokens=True)
        rewards = torch.tensor([float("nan") if r is None else r for r in reward_fn(rec["prompts"], completions)])
        group_of = {p: i for i, p in enumerate(dict.fromkeys(rec["prompts"]))}
        group_ids = torch.tensor([group_of[p] for p in rec["prompts"]])
        assert torch.bincount(group_ids).tolist() == [args.num_generations] * len(group_of)

        # Completions without a reward get 0 and stay out of their group's statistics (as in TRL).
        keep = ~torch.isnan(rewards)
        expected = torch.zeros_like(logp)
        expected[keep] = spro_advantage(rewards[keep], logp[keep], ref_logp[keep], mask[keep], group_ids[keep],
                                        **args.spro_options())
        got = out["advantages"]
        assert got.shape == mask.shape  # per-token [B, T], not GRPO's [B]
        torch.testing.assert_close(got, expected.float(), atol=1e-4, rtol=1e-4)

        process = spro_advantage(rewards[keep], logp[keep], ref_logp[keep], mask[keep], group_ids[keep],
                                 **{**args.spro_options(), "process_only": True})
        process_seen |= bool(process.abs().max() > 1e-3)

    assert len(lengths) > 1, "all completions had the same length: the masks were not exercised"
    # Once the policy has moved away from the reference, the process term is really there.
    assert process_seen, "the process term stayed 0 in every step: the check above only tested the outcome part"
    end = trainer.model.state_dict()
    assert any(not torch.equal(start[k], end[k]) for k in start), "weights did not change"
    logged = [h for h in trainer.state.log_history if "process/msa_abs_mean" in h]
    assert len(logged) == len(trainer.records)  # one entry per generation (TRL logs every step)
    assert all(k in logged[-1] for k in ("process/cpr_final_mean", "process/cpr_final_std"))
    assert logged[-1]["process/msa_abs_mean"] > 0
    return trainer


def test_spro_trainer_in_memory_model_beta0(tmp_path):
    """TRL's defaults: KL beta 0 (SPROTrainer builds the frozen reference), on-policy (pi_old computed here)."""
    tok = build_char_tokenizer()
    model = make_model(tok)
    args = make_args(tmp_path)
    trainer = run_and_check(tmp_path, model, args, tok)
    assert trainer.ref_model is not None
    assert all(not p.requires_grad for p in trainer.ref_model.parameters())
    # The reference stayed the starting policy.
    fresh = build_tiny_model(tok, **MODEL_KW).state_dict()
    ref_state = trainer.accelerator.unwrap_model(trainer.ref_model).state_dict()
    assert all(torch.equal(fresh[k], ref_state[k]) for k in fresh)


def test_spro_trainer_batch_scale_and_sequence_ratio(tmp_path):
    """scale_rewards='batch' through spro_outcome_scale='batch' (on the batch gathered over processes) and
    GSPO's sequence-level ratio in TRL's loss, with SPRO's per-token advantage."""
    tok = build_char_tokenizer()
    args = make_args(tmp_path, max_steps=2, scale_rewards="batch", spro_outcome_scale="batch",
                     importance_sampling_level="sequence")
    run_and_check(tmp_path, make_model(tok), args, tok)


def test_spro_trainer_unscorable_completions(tmp_path):
    """Completions every reward function left unscored (None) get advantage 0 and no say in the baselines."""
    tok = build_char_tokenizer()
    trainer = run_and_check(tmp_path, make_model(tok), make_args(tmp_path, max_steps=2), tok,
                            reward_fn=every_fourth_unscorable)
    assert all((rec["output"]["advantages"][3::4] == 0).all() for rec in trainer.records)


@pytest.mark.parametrize("kl_beta,steps_per_generation", [(0.0, 2), (0.01, 1)])
def test_spro_trainer_model_path(tmp_path, kl_beta, steps_per_generation):
    """Model given as a path: reference loaded from it (beta 0) or TRL's own (beta > 0); with
    steps_per_generation=2 TRL computes pi_old itself (the batch is reused across optimizer steps)."""
    tok = build_char_tokenizer()
    path = tmp_path / "tiny"
    make_model(tok).save_pretrained(path)
    tok.save_pretrained(path)
    args = make_args(
        tmp_path,
        beta=kl_beta,
        per_device_train_batch_size=4,
        steps_per_generation=steps_per_generation,
        max_steps=4,
        model_init_kwargs={"dtype": "float32"},
    )
    run_and_check(tmp_path, str(path), args, tok)


def test_spro_config_validation(tmp_path):
    with pytest.raises(ValueError, match="spro_outcome_scale"):
        make_args(tmp_path, spro_outcome_scale="std")
    with pytest.raises(ValueError, match="spro_baseline"):
        make_args(tmp_path, spro_baseline="mean")
    with pytest.raises(ValueError, match="spro_beta"):
        make_args(tmp_path, spro_beta=-1.0)
    with pytest.raises(ValueError, match="multi_objective_aggregation"):
        make_args(tmp_path, multi_objective_aggregation="normalize_then_sum")
    args = make_args(tmp_path, spro_baseline="pooled", spro_process_reward="per_token", spro_outcome_scale="none")
    assert args.spro_options() == {
        "beta": 1.0, "outcome_scale": "none", "msa_scale_std": False, "eps": 1e-6,
        "process_reward": "per_token", "baseline": "pooled", "process_only": False, "credit": "sum",
        "min_form_temperature": 0.1, "zero_variance_groups": "keep", "process_squash": None,
    }
    defaults = {f.name: f.default for f in dataclasses.fields(SPROConfig)}
    assert defaults["loss_type"] == "grpo" and defaults["disable_dropout"] is True
    assert all(f.metadata.get("help") for f in dataclasses.fields(SPROConfig) if f.name.startswith("spro_"))


@pytest.mark.parametrize("kw, match", [
    (dict(scale_rewards="batch"), r"scale_rewards='batch': SPROTrainer does not use TRL's reward scaling.*"
                                  r"spro_outcome_scale \(now 'group'\).*spro_outcome_scale='batch'"),
    (dict(scale_rewards=False), r"scale_rewards='none'.*spro_outcome_scale='none'"),
    (dict(scale_rewards="none", spro_outcome_scale="batch"), r"scale_rewards='none'.*now 'batch'"),
    (dict(off_policy_mask_threshold=0.5), r"off_policy_mask_threshold=0.5: .*per token"),
    (dict(loss_type="vespo"), r"loss_type='vespo'"),
])
def test_spro_config_refuses_grpo_options_it_does_not_honour(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        make_args(tmp_path, **kw)


@pytest.mark.parametrize("kw", [dict(scale_rewards="batch", spro_outcome_scale="batch"),
                                dict(scale_rewards="none", spro_outcome_scale="none"),
                                dict(spro_outcome_scale="none"), dict(scale_rewards=True),
                                dict(importance_sampling_level="sequence", mask_truncated_completions=True),
                                dict(loss_type="dapo", beta=0.01)])
def test_spro_config_accepts_what_it_honours(tmp_path, kw):
    args = make_args(tmp_path, **kw)
    assert args.spro_options()["outcome_scale"] == kw.get("spro_outcome_scale", "group")


def test_spro_trainer_trains_a_gguf_file_without_export(tmp_path):
    """A .gguf path (or a folder with model_init_kwargs={"gguf_file": ...}) loads through spro's GGUF loader:
    the model and its tokenizer come from the file, and the frozen reference is the same starting weights."""
    pytest.importorskip("gguf")
    from tiny_gguf import write_tiny_gguf

    gguf_path = write_tiny_gguf(tmp_path / "tiny.gguf", **MODEL_KW)
    tok = build_char_tokenizer()
    args = make_args(tmp_path, max_steps=2)
    trainer = SPROTrainer(model=str(gguf_path), reward_funcs=digit_reward, args=args,
                          train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
    assert trainer.processing_class("Q:12+7=")["input_ids"] == tok("Q:12+7=")["input_ids"]  # the file's tokenizer
    fresh = build_tiny_model(tok, **MODEL_KW).state_dict()
    start = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    assert all(torch.equal(fresh[k], start[k]) for k in fresh)  # the GGUF weights are the tiny model's
    trainer.train()
    end = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    assert any(not torch.equal(fresh[k], end[k]) for k in fresh)  # it trained
    ref = trainer.accelerator.unwrap_model(trainer.ref_model).state_dict()
    assert all(torch.equal(fresh[k], ref[k]) for k in fresh)  # the reference stayed the starting weights
    assert args.model_init_kwargs is None
    # the folder + gguf_file form, and a model_init_kwargs key spro's loader does not take
    args = make_args(tmp_path, max_steps=1, model_init_kwargs={"gguf_file": "tiny.gguf", "dtype": "float32"})
    trainer = SPROTrainer(model=str(tmp_path), reward_funcs=digit_reward, args=args,
                          train_dataset=Dataset.from_dict({"prompt": PROMPTS}))
    assert args.model_init_kwargs == {"gguf_file": "tiny.gguf", "dtype": "float32"}  # (the caller's, unchanged)
    assert trainer.args.model_init_kwargs is None
    args = make_args(tmp_path, model_init_kwargs={"gguf_file": "tiny.gguf", "attn_implementation": "eager"})
    with pytest.raises(ValueError, match=r"model_init_kwargs \['attn_implementation'\]: a GGUF model.*spro export"):
        SPROTrainer(model=str(tmp_path), reward_funcs=digit_reward, args=args,
                    train_dataset=Dataset.from_dict({"prompt": PROMPTS}))


def test_spro_trainer_rejects_grpo_config(tmp_path):
    tok = build_char_tokenizer()
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
                      per_device_train_batch_size=4, num_generations=4)
    with pytest.raises(TypeError, match="SPROConfig"):
        SPROTrainer(model=build_tiny_model(tok, **MODEL_KW), reward_funcs=digit_reward, args=args,
                    train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok)


def test_spro_ablation_options_reach_the_core(tmp_path):
    """A non-default option set (pooled baseline, per-token reward, no std scaling) is what the trainer uses."""
    tok = build_char_tokenizer()
    args = make_args(tmp_path, spro_baseline="pooled", spro_process_reward="per_token", spro_outcome_scale="none",
                     max_steps=2)
    model = make_model(tok)
    trainer = RecordingSPROTrainer(model=model, reward_funcs=digit_reward, args=args,
                                   train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok)
    seen = []
    original = trainer._spro_compute_advantages

    def spy(**batch):
        adv = original(**batch)
        seen.append((copy.deepcopy(batch), adv))
        return adv

    trainer._spro_compute_advantages = spy
    trainer.train()
    assert seen
    for batch, adv in seen:
        torch.testing.assert_close(adv, spro_advantage(**batch, **args.spro_options()))
        default = spro_advantage(**batch, beta=1.0)
        if not torch.allclose(adv, default):
            break
    else:
        pytest.fail("the ablation options made no difference in any step")


_MULTIPROC_WORKER = '''
import os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from accelerate.utils import gather_object
from datasets import Dataset
from spro.algorithms.core import spro_advantage
from spro.integrations.trl import SPROConfig, SPROTrainer
from spro.models.tiny import build_char_tokenizer, build_tiny_model

PROMPTS = ["Q:12+7=", "Q:3+45=", "Q:8+8=", "Q:21+30="]

def digit_reward(prompts, completions, **kw):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]

class Checked(SPROTrainer):
    checks = 0
    def _spro_compute_advantages(self, **batch):
        adv = super()._spro_compute_advantages(**batch)
        self._seen = ({k: v.clone() for k, v in batch.items()}, adv.clone())
        return adv
    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        batch, full = self._seen
        prompts = gather_object([x["prompt"] for x in inputs])  # process order, like TRL's rewards
        label = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
        groups = torch.tensor([label[p] for p in prompts])
        assert torch.equal(groups, batch["group_ids"] // self.num_generations), (groups, batch["group_ids"])
        b, t = out["completion_mask"].shape
        start = self.accelerator.process_index * b
        assert torch.equal(batch["mask"][start:start + b, :t], out["completion_mask"].float())
        assert batch["mask"][start:start + b, t:].sum() == 0
        torch.testing.assert_close(out["advantages"], full[start:start + b, :t].float())
        torch.testing.assert_close(full, spro_advantage(**batch, **self.args.spro_options()))
        Checked.checks += 1
        return out

tok = build_char_tokenizer()
model = build_tiny_model(tok, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, seed=0)
model.generation_config.eos_token_id = [tok.eos_token_id, *tok.convert_tokens_to_ids(list("abcdefghij"))]
args = SPROConfig(output_dir=sys.argv[1], use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                  per_device_train_batch_size=2, num_generations=4, max_completion_length=8, max_steps=4,
                  learning_rate=3e-2, logging_steps=1, spro_beta=1.0, gradient_checkpointing=False, seed=0)
trainer = Checked(model=model, reward_funcs=digit_reward, args=args,
                  train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok)
trainer.train()
assert trainer.accelerator.num_processes == 2
print(f"RANK {trainer.accelerator.process_index} OK checks={Checked.checks}")
'''


@pytest.mark.slow
def test_spro_trainer_two_processes(tmp_path):
    """Two CPU processes (torchrun, gloo), two completions each of a 4-completion group: the group is
    gathered before its statistics and each process gets back its own rows and columns."""
    import subprocess
    import sys

    script = tmp_path / "worker.py"
    script.write_text(_MULTIPROC_WORKER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(script), str(tmp_path / "out")],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "RANK 0 OK checks=4" in proc.stdout and "RANK 1 OK checks=4" in proc.stdout, proc.stdout[-4000:]


def test_spro_config_fields_are_generated_from_spro_options():
    import dataclasses

    from spro.algorithms.spro import SPROOptions
    from spro.integrations.trl import SPROConfig

    spro = {f.name: f for f in dataclasses.fields(SPROOptions) if f.name != "ref_refresh_every"}
    trl = {f.name.removeprefix("spro_"): f for f in dataclasses.fields(SPROConfig) if f.name.startswith("spro_")}
    assert trl.keys() == spro.keys()
    for name, f in spro.items():
        assert trl[name].default == f.default and trl[name].metadata["help"] == f.metadata["help"], name
