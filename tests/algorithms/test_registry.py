"""The algorithm plugin API: registration, options, selection by name or import path, the 0.1 shims."""

from __future__ import annotations

import dataclasses
import sys
import textwrap

import pytest
import torch

from spro.algorithms import (
    AdvantageInputs, Algorithm, Options, get_algorithm, list_algorithms, option, register_algorithm, registry,
)
from spro.algorithms.core import outcome_advantage, spro_advantage
from spro.config import ConfigError, load_config


def _inputs(B=8, T=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, T, generator=g) < 0.8
    mask[:, 0] = True
    return AdvantageInputs(rewards=torch.randint(0, 2, (B,), generator=g).float(), mask=mask,
                           group_ids=torch.arange(B) // 4, logp=-torch.rand(B, T, generator=g),
                           ref_logp=-torch.rand(B, T, generator=g))


@pytest.fixture
def scratch_registry():
    """Registrations made in a test are removed afterwards."""
    registry.list_algorithms()  # the built-in ones are registered on first use
    before = dict(registry._REGISTRY)
    yield
    registry._REGISTRY.clear()
    registry._REGISTRY.update(before)


def test_builtins_own_their_options_reference_and_loss():
    assert {"grpo", "dr_grpo", "rloo", "spro", "prime"} <= set(list_algorithms())
    spro, dr, prime = get_algorithm("spro"), get_algorithm("dr_grpo"), get_algorithm("prime")
    assert spro.needs_reference and prime.needs_reference and not get_algorithm("grpo").needs_reference
    assert dr.loss_agg == "seq-mean-token-sum-norm" and spro.loss_agg == "seq-mean-token-mean"
    assert [f.name for f in dataclasses.fields(spro.Options)][:2] == ["beta", "outcome_scale"]
    assert prime.Options().prm_update == "before" and spro.reference == "arXiv:2507.01551"
    x = _inputs()
    torch.testing.assert_close(spro(spro.Options(beta=0.3)).advantages(x),
                               spro_advantage(x.rewards, x.logp, x.ref_logp, x.mask, x.group_ids, beta=0.3))


def test_options_are_checked_with_the_key_named():
    with pytest.raises(ConfigError, match="beta must be >= 0, got -1"):
        get_algorithm("spro").Options(beta=-1)
    with pytest.raises(ConfigError, match="outcome_scale: 'std' is not one of group, batch, none"):
        get_algorithm("grpo").Options(outcome_scale="std")
    with pytest.raises(ConfigError, match="msa_scale_std: not supported with baseline=pooled_loo"):
        get_algorithm("spro").Options(baseline="pooled_loo", msa_scale_std=True)
    with pytest.raises(TypeError, match="options must be a SPROOptions"):
        get_algorithm("spro")(get_algorithm("grpo").Options())


def test_unknown_names_suggest_and_import_paths_explain():
    with pytest.raises(ValueError, match="unknown algorithm 'grop'.*did you mean 'grpo'"):
        get_algorithm("grop")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        get_algorithm("no_such_module_xyz:algo")
    with pytest.raises(ValueError, match="has no attribute 'nope'"):
        get_algorithm("spro.algorithms.grpo:nope")
    with pytest.raises(ValueError, match="is not a registered algorithm: decorate it"):
        get_algorithm("spro.algorithms.core:spro_advantage")
    assert get_algorithm("spro.algorithms.grpo:GRPO") is get_algorithm("grpo")


def test_register_a_function_with_and_without_options(scratch_registry):
    @register_algorithm("test_sign")
    def sign(x: AdvantageInputs) -> torch.Tensor:
        return torch.sign(x.rewards - x.group_mean(x.rewards))[:, None].expand(x.mask.shape)

    @dataclasses.dataclass
    class ScaleOptions(Options):
        scale: float = option(2.0, help="A factor.", check=(lambda v: v > 0, "> 0"))

    @register_algorithm("test_scaled", options=ScaleOptions, needs_reference=True, loss_agg="token-mean")
    def scaled(x, options):
        return options.scale * torch.ones_like(x.logp)

    assert sign.algorithm is get_algorithm("test_sign") and {"test_sign", "test_scaled"} <= set(list_algorithms())
    x = _inputs()
    out = get_algorithm("test_sign")().advantages(x)
    expect = torch.sign(outcome_advantage(x.rewards, x.group_ids))[:, None] * x.mask
    assert torch.equal(out, expect)  # masked positions are exactly 0, whatever the function returned there
    cls = get_algorithm("test_scaled")
    assert cls.needs_reference and cls.loss_agg == "token-mean"
    assert torch.equal(cls(ScaleOptions(scale=3.0)).advantages(x), 3.0 * x.mask.float())
    cfg = load_config(overrides=["algorithm.name=test_scaled", "algorithm.test_scaled.scale=0.5"])
    assert cfg.algorithm.options == ScaleOptions(scale=0.5)
    with pytest.raises(ConfigError, match="algorithm.test_scaled.scale must be > 0"):
        load_config(overrides=["algorithm.name=test_scaled", "algorithm.test_scaled.scale=0"])
    with pytest.raises(ValueError, match="already registered"):
        register_algorithm("test_sign")(lambda x: x.mask.float())
    register_algorithm("test_sign", overwrite=True)(lambda x: x.mask.float())


def test_a_bad_estimator_output_is_named(scratch_registry):
    @register_algorithm("test_bad_shape")
    def bad(x):
        return x.rewards

    with pytest.raises(ValueError, match=r"algorithm 'test_bad_shape' returned \(8,\); expected advantages of shape"):
        get_algorithm("test_bad_shape")().advantages(_inputs())


def test_a_stateful_algorithm_subclass(scratch_registry):
    @register_algorithm("test_counter")
    class Counter(Algorithm):
        """Counts its calls."""

        def setup(self, ctx):
            self.n = 0

        def advantages(self, x):
            self.n += 1
            return x.mask.float() * self.n

        def metrics(self, x, adv):
            return {"counter/n": float(self.n)}

        def save(self, folder):
            (folder / "n.txt").write_text(str(self.n))

    assert Counter.name == "test_counter" and Counter().has_state and not get_algorithm("grpo")().has_state


def test_import_path_from_the_working_directory(tmp_path, monkeypatch, scratch_registry):
    (tmp_path / "my_algo_mod.py").write_text(textwrap.dedent('''
        import torch
        from spro.algorithms import register_algorithm

        @register_algorithm("my_algo_from_cwd")
        def my_algo(x):
            return torch.ones_like(x.logp)
    '''))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        cfg = load_config(overrides=["algorithm.name=my_algo_mod:my_algo"])
        assert cfg.algorithm.options is not None and get_algorithm("my_algo_from_cwd").name == "my_algo_from_cwd"
    finally:
        sys.modules.pop("my_algo_mod", None)


def test_a_plugin_that_forgets_needs_reference_gets_an_error_naming_the_flag():
    import pytest
    import torch

    from spro.algorithms import AdvantageInputs, MissingReferenceError, register_algorithm
    from spro.algorithms.registry import _REGISTRY, compute_advantages, get_algorithm

    @register_algorithm("_reads_ref")
    def reads_ref(x):
        return (x.logp - x.ref_logp) * x.mask

    try:
        x = AdvantageInputs(torch.tensor([1.0, 0.0]), torch.ones(2, 3, dtype=torch.bool), torch.tensor([0, 0]),
                            torch.zeros(2, 3), ref_logp=None)
        with pytest.raises(MissingReferenceError, match=r"needs_reference=True.*model.use_reference"):
            compute_advantages(get_algorithm("_reads_ref")(), x)
        # with the reference, the same plugin runs
        x.ref_logp = torch.zeros(2, 3)
        assert compute_advantages(get_algorithm("_reads_ref")(), x).shape == (2, 3)
    finally:
        _REGISTRY.pop("_reads_ref", None)
