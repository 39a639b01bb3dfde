"""One conformance suite over every registered domain, driven by its ``test_params``."""

import pytest

from stabfw.run import registry
from stabfw.run.conformance import CONFORMANCE

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")

DOMAINS = [e.name for e in registry.BUILTINS]


def _loop(name):
    try:
        cls = registry.get(name)
    except Exception as err:  # the domain's extra is not installed
        pytest.skip(f"{name}: {err}")
    assert cls.test_params, f"{name} declares no test_params"
    return registry.make(name, **cls.test_params)


@pytest.mark.parametrize("check", list(CONFORMANCE))
@pytest.mark.parametrize("domain", DOMAINS)
def test_conformance(domain, check, tmp_path):
    CONFORMANCE[check](_loop(domain), tmp_path=tmp_path)


@pytest.mark.parametrize("domain", DOMAINS)
def test_every_builtin_domain_imports_with_the_test_extras(domain):
    registry.get(domain)  # `make test` installs every extra: a skip above would hide a break
