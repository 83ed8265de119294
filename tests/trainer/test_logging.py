"""What a TRL user expects to see: per-reward metrics, plain console lines and train.log, TensorBoard text
samples and hparams."""

from __future__ import annotations

from helpers import REWARDS, read_jsonl, small_overrides

from spro.config import load_config
from spro.trainer import Trainer


def length_reward(prompts, completions, **kw):
    return [len(c) / 8 for c in completions]


def test_console_lines_log_file_tensorboard_text_and_hparams(model_dir, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    over = small_overrides(model_dir, tmp_path / "run", total_steps=3, **{
        "logging.tensorboard": True, "logging.log_completions": 2, "logging.every": 2,
        "logging.progress_bar": True,  # not a terminal here: plain lines instead of a bar
        "data.rewards": "[digits, {name: length, weight: 0.5}]", "data.accuracy_reward": "digits"})
    out = Trainer(load_config(overrides=over), reward_funcs={**REWARDS, "length": length_reward}).train()

    metrics = read_jsonl(out / "metrics.jsonl")
    for m in metrics:  # TRL's per-function names, with the weighted total still in reward/mean
        for name in ("digits", "length"):
            assert m[f"reward/{name}/mean"] is not None and m[f"reward/{name}/std"] >= 0
        assert abs(m["reward/mean"] - (m["reward/digits/mean"] + 0.5 * m["reward/length/mean"])) < 1e-5

    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step ")]
    log = (out / "train.log").read_text()
    assert "\r" not in log
    lines = log.splitlines()
    assert [line.split()[1] for line in lines[:2]] == ["2/3", "3/3"]  # every 2 steps and the last
    assert lines[2].startswith("step 3: eval accuracy ")
    assert printed == lines
    m2 = metrics[1]
    assert lines[0].startswith(f"step 2/3  reward {m2['reward/mean']:.3f}±{m2['reward/std']:.3f}  "
                               f"acc {m2['accuracy']:.3f}  loss {m2['loss']:.4f}")

    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0}).Reload()
    text = events.Tensors("completions/text_summary")
    assert [t.step for t in text] == [1, 2, 3]
    table = text[0].tensor_proto.string_val[0].decode()
    first = read_jsonl(out / "completions.jsonl")[0]
    assert table.startswith("| prompt | completion | reward |") and first["prompt"].split("\n")[0] in table
    plugins = events.PluginTagToContent("hparams")
    assert "_hparams_/experiment" in plugins and "_hparams_/session_start_info" in plugins
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    start = HParamsPluginData.FromString(plugins["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["algorithm.name"].string_value == "spro"
    assert start.hparams["rollout.num_generations"].number_value == 4
    assert "digits" in start.hparams["data.rewards"].string_value

