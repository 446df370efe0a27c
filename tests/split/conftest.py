import pytest

from gradleak.data import load_dataset


@pytest.fixture(scope="module")
def digits16():
    return load_dataset("digits", size=16, channels=1)
