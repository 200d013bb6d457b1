"""The shortest path through the system: a remote call, a map, an exception."""

from __future__ import annotations

import pytest

from supports.basic import CustomError, app, async_square, fail, slow_gen, square


@pytest.mark.spec("B1")
def test_remote_map_and_errors(server: object) -> None:
    with app.run(show_logs=False):
        assert square.remote(7) == 49
        assert async_square.remote(6) == 36
        assert list(square.map(range(10))) == [i * i for i in range(10)]
        with pytest.raises(ValueError, match="bad value"):
            fail.remote("value")
        with pytest.raises(CustomError):
            fail.remote("custom")
        assert list(slow_gen.remote_gen(3, 0.0)) == [0, 1, 2]
