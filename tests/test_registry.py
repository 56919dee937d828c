import pytest

from poolarch._registry import Registry


def test_register_get_names_and_errors():
    reg = Registry("widget")

    @reg.register("b")
    def b():
        return "b"

    reg.register("a", len)
    assert reg.get("b") is b and reg.get("a") is len
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and len(reg) == 2
    assert "a" in reg and "c" not in reg and 3 not in reg
    with pytest.raises(ValueError, match=r"widget must be one of \['a', 'b'\], got 'c'"):
        reg.get("c")
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a", str)
    with pytest.raises(TypeError, match="widget name must be a non-empty string"):
        reg.register("", str)
    with pytest.raises(ValueError, match="widget must be one of"):
        reg.get(["unhashable"])
