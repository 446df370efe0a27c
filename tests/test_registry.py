from __future__ import annotations

import pytest

from gradleak.errors import ConfigError
from gradleak.registry import Registry


def test_lookup_is_case_insensitive_and_lists_names() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("Alpha")(lambda n=1: n * 2)
    assert reg.build("alpha", n=4) == 8
    assert "ALPHA" in reg and reg.names() == ["alpha"]


def test_unknown_name_and_bad_settings_are_named() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("alpha")(lambda n=1: n)
    with pytest.raises(ConfigError, match=r"unknown widget 'beta'; known: alpha"):
        reg.get("beta")
    with pytest.raises(ConfigError, match=r"widget 'alpha' rejected its settings"):
        reg.build("alpha", m=3)
    with pytest.raises(ConfigError, match="registered twice"):
        reg.register("ALPHA")(lambda: 0)
