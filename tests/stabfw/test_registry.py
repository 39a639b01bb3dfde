from typing import Literal

import numpy as np
import pytest

import stabfw
from stabfw.run import registry


class Tiny(stabfw.SelfConsumingLoop):
    def __init__(self, n: int = 5, kind: Literal["a", "b"] = "a"):
        self.n, self.kind = n, kind

    def real_data(self, rng):
        return rng.normal(size=self.n)

    def fit(self, data, init, rng):
        return float(np.mean(data))

    def generate(self, state, n, rng):
        return rng.normal(state, 1.0, n)

    def params(self, state):
        return np.array([state])


def test_register_make_and_validate():
    registry.register("tiny-test", Tiny, summary="a test domain", overwrite=True)
    loop = stabfw.make("tiny-test", n="7")  # coerced by the constructor's annotations
    assert isinstance(loop, Tiny) and loop.n == 7
    assert registry.validate_params("tiny-test", {}) == {"n": 5, "kind": "a"}
    with pytest.raises(stabfw.ConfigError, match=r"domain\.kind"):
        stabfw.make("tiny-test", kind="c")
    with pytest.raises(stabfw.ConfigError, match=r"domain\.colour"):
        stabfw.make("tiny-test", colour=1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("tiny-test", Tiny)
    assert "tiny-test" in [e.name for e in registry.list_domains()]


def test_unknown_domain_lists_the_known_ones():
    with pytest.raises(stabfw.ConfigError, match=r"registered: .*gaussian"):
        registry.get("no-such-domain")


def test_lazy_string_targets_and_missing_modules():
    registry.register("lazy-test", "tests_missing_module:Nope", extra="nope", overwrite=True)
    with pytest.raises(stabfw.ConfigError, match=r"pip install 'stabfw\[nope\]'"):
        registry.get("lazy-test")


def test_import_stabfw_stays_light():
    import subprocess
    import sys

    code = ("import sys, stabfw; heavy = [m for m in ('torch', 'diffusers', 'gymnasium', "
            "'sktime', 'sklearn', 'matplotlib', 'domains') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
