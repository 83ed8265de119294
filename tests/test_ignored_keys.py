"""A warning for every set key the chosen algorithm ignores (issue 21, item 3): the keys of another
algorithm's section algorithm.<other>.*; the shared algorithm.* keys are read by every algorithm."""

from __future__ import annotations

import warnings

import pytest

from spro.config import IgnoredKeyWarning, config_from_dict, ignored_keys, load_config, to_dict


def _warned(**kw) -> list[str]:
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        cfg = load_config(**kw)
    return cfg, sorted(str(x.message).split(" is set")[0] for x in w if issubclass(x.category, IgnoredKeyWarning))


def test_each_key_of_another_algorithms_section_is_named():
    cfg, keys = _warned(overrides=["algorithm.name=grpo", "algorithm.spro.beta=0.1", "algorithm.prime.prm_lr=1e-6",
                                   "algorithm.prime.filter=false", "algorithm.grpo.eps=1e-4"])
    assert keys == ["algorithm.prime.filter", "algorithm.prime.prm_lr", "algorithm.spro.beta"]
    assert cfg.algorithm.options.eps == 1e-4  # the chosen algorithm's own section is read, no warning


def test_message_says_what_applies_and_the_kl_key():
    with pytest.warns(IgnoredKeyWarning, match=r"algorithm.spro.beta is set, but algorithm.name=grpo does not read "
                      r"the section algorithm.spro.\*.*no effect on this run.*algorithm.kl_coef"):
        load_config(overrides=["algorithm.name=grpo", "algorithm.spro.beta=0.1"])


def test_prime_keys_on_spro_and_a_preset_section():
    _, keys = _warned(overrides=["algorithm.prime.outcome_coef=2"])  # algorithm.name defaults to spro
    assert keys == ["algorithm.prime.outcome_coef"]
    # a preset may set several algorithms' options (tiny-arithmetic sets spro.beta): only what the user sets warns
    _, keys = _warned(preset="tiny-arithmetic", overrides=["algorithm.name=rloo"])
    assert keys == []
    _, keys = _warned(preset="tiny-arithmetic", overrides=["algorithm.name=rloo", "algorithm.spro.beta=0.05"])
    assert keys == ["algorithm.spro.beta"]


def test_nothing_ignored_nothing_warned():
    for over in ([], ["algorithm.name=grpo", "algorithm.kl_coef=0.1"], ["algorithm.spro.beta=0.02"]):
        _, keys = _warned(overrides=over)
        assert keys == []
    _, keys = _warned(preset="tiny-arithmetic")
    assert keys == []
    # a saved run config holds only the sections that were given: loading it again warns the same
    cfg, _ = _warned(overrides=["algorithm.name=grpo"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", IgnoredKeyWarning)
        config_from_dict(to_dict(cfg))


def test_ignored_keys_is_a_pure_function():
    assert ignored_keys({"name": "dr_grpo", "clip_eps_low": 0.1, "grpo": {"outcome_scale": "none"}}) == [
        ("algorithm.grpo.outcome_scale", "algorithm.name=dr_grpo does not read the section algorithm.grpo.* (it "
                                         "applies when algorithm.name=grpo); it has no effect on this run")]
    assert ignored_keys(None) == []
