"""scikit-learn conventions on every shipped domain, and the names the docs use exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import stabfw
from stabfw.run.registry import list_domains, make

ROOT = Path(__file__).resolve().parents[2]
SUBPACKAGES = {"core", "run", "analysis", "reporting", "experiments", "cli", "domains", "errors"}


@pytest.mark.parametrize("name", [e.name for e in list_domains()])
def test_clone_get_params_and_set_params_on_every_domain(name):
    sklearn_base = pytest.importorskip("sklearn.base")
    loop = make(name)
    params = loop.get_params(deep=True)
    copy = sklearn_base.clone(loop)
    assert copy is not loop and type(copy) is type(loop) and copy.get_params() == params
    key = sorted(params)[0]
    assert copy.set_params(**{key: params[key]}) is copy
    with pytest.raises(ValueError, match="no parameter"):
        copy.set_params(no_such_parameter=1)


def test_every_stabfw_name_the_docs_use_is_exported():
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    used = {m for p in texts for m in re.findall(r"`stabfw\.([A-Za-z_]\w*)", p.read_text())}
    missing = sorted(n for n in used - SUBPACKAGES if not hasattr(stabfw, n))
    assert not missing, f"documented but not exported: {missing}"


def test_version_is_the_installed_distribution(capsys):
    from importlib.metadata import version

    from stabfw.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert version("stabfw") in capsys.readouterr().out and stabfw.__version__ == version("stabfw")
