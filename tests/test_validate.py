"""poolarch._validate: one message style naming the argument and the allowed values."""
import math

import pytest

from poolarch._validate import check_choice, check_int, check_number, check_positive_finite


def test_check_int():
    assert check_int(3, "n", 1) == 3 and check_int(None, "n", 1, allow_none=True) is None
    with pytest.raises(TypeError, match=r"^n must be an int >= 1, got 2.0$"):
        check_int(2.0, "n", 1)
    with pytest.raises(TypeError, match="n must be an int"):
        check_int(True, "n")
    with pytest.raises(ValueError, match=r"^n must be an int >= 1 or None, got 0$"):
        check_int(0, "n", 1, allow_none=True)


def test_check_number_and_choice():
    assert check_number(2, "width", 0, strict=True) == 2.0
    with pytest.raises(ValueError, match=r"^width must be a finite number > 0, got 0$"):
        check_number(0, "width", 0, strict=True)
    with pytest.raises(ValueError, match="width"):
        check_number(math.inf, "width")
    with pytest.raises(TypeError, match="width"):
        check_number("1", "width")
    assert check_choice("max", ("max", "avg"), "pool") == "max"
    with pytest.raises(ValueError, match=r"^pool must be one of \('max', 'avg'\), got 'min'$"):
        check_choice("min", ("max", "avg"), "pool")
    with pytest.raises(ValueError, match="scale must be positive and finite"):
        check_positive_finite((0.5, 0.0), "scale")
