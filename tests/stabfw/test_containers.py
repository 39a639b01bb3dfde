import numpy as np
import pandas as pd
import pytest

from stabfw.core import containers


def test_numpy():
    a, b = np.arange(6).reshape(3, 2), np.arange(4).reshape(2, 2)
    assert containers.size(a) == 3
    np.testing.assert_array_equal(containers.concat([a, np.empty((0, 2)), b]), np.vstack([a, b]))
    np.testing.assert_array_equal(containers.take(a, [2, 0]), a[[2, 0]])


def test_torch():
    torch = pytest.importorskip("torch")
    a, b = torch.arange(6).reshape(3, 2), torch.arange(4).reshape(2, 2)
    assert containers.size(a) == 3
    assert torch.equal(containers.concat([a, b]), torch.cat([a, b]))
    assert torch.equal(containers.take(a, np.array([1])), a[[1]])


def test_pandas_resets_the_index():
    a = pd.DataFrame({"x": [1, 2, 3]})
    b = pd.DataFrame({"x": [4, 5]})
    both = containers.concat([a, b])
    assert list(both["x"]) == [1, 2, 3, 4, 5] and list(both.index) == list(range(5))
    sub = containers.take(both, [4, 1])
    assert list(sub["x"]) == [5, 2] and list(sub.index) == [0, 1]
    s = containers.concat([a["x"], b["x"]])
    assert isinstance(s, pd.Series) and containers.size(s) == 5


def test_lists_and_errors():
    assert containers.concat([[1, 2], [], [3]]) == [1, 2, 3]
    assert containers.take(["a", "b", "c"], [2, 0]) == ["c", "a"]
    with pytest.raises(ValueError, match="every part is empty"):
        containers.concat([np.empty((0, 1))])
    with pytest.raises(TypeError, match=r"override SelfConsumingLoop\.concat"):
        containers.concat([{1}, {2}])
