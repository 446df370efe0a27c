import pytest

from gradleak.defenses import build_defense
from gradleak.errors import ConfigError
from gradleak.utility import text_defense_cost


def test_noise_raises_perplexity_of_a_tiny_decoder():
    kw = dict(model="gpt2-tiny", steps=12, batch_size=4, train_records=32, test_records=16, seq_len=32)
    clean = text_defense_cost(None, **kw)
    noisy = text_defense_cost(build_defense("gaussian", std=0.1), **kw)
    assert clean.metric == "perplexity" and clean.value < 512  # below uniform over the 512-token vocabulary
    assert noisy.value > 1.5 * clean.value


def test_microbatch_dp_is_refused_with_a_config_error():
    """DP-SGD runs on text through Opacus (tests/text/test_dp.py); TF-Privacy microbatch clipping does not."""
    with pytest.raises(ConfigError, match="per-example"):
        text_defense_cost(build_defense("microbatch_dpsgd"), model="bert-tiny", steps=1)
