import pytest
import torch

from gradleak.errors import ConfigError
from gradleak.split import SplitCNN


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_client_then_server_is_the_whole_model(cut):
    torch.manual_seed(0)
    model = SplitCNN(channels=1, size=16, num_outputs=10)
    x = torch.rand(3, 1, 16, 16)
    torch.testing.assert_close(model.server(cut)(model.client(cut)(x)), model(x))


def test_bad_cut_and_size_are_config_errors():
    with pytest.raises(ConfigError, match="cut"):
        SplitCNN().client(4)
    with pytest.raises(ConfigError, match="multiple of 4"):
        SplitCNN(size=15)
