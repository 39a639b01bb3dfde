"""Reading YAML strictly: the one loader of config files and ``--set`` values.

PyYAML's ``safe_load`` keeps the last of two equal keys without a word (``loop:`` twice,
``dim: 2, dim: 3``); :func:`load_yaml` refuses them, naming the key and both lines. It is
``safe_load`` otherwise: no Python objects are built from tags.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "StrictLoader", "load_yaml"]


class DuplicateKeyError(yaml.YAMLError):
    """A mapping holds the same key twice."""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicated mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<": merged keys may repeat
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # SafeLoader reports unhashable keys itself
            line = key_node.start_mark.line + 1
            if key in seen:
                where = (f"lines {seen[key]} and {line}" if seen[key] != line
                         else f"both on line {line}")
                raise DuplicateKeyError(
                    f"key {key!r} appears twice in one mapping ({where}); PyYAML would "
                    "silently keep the last one — remove one of them")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """Parse YAML text like ``yaml.safe_load``, refusing duplicated keys.

    Raises
    ------
    yaml.YAMLError
        Broken YAML, or :class:`DuplicateKeyError`.
    """
    return yaml.load(text, Loader=StrictLoader)
