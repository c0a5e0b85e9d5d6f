"""Reading YAML as Prometheus' Go YAML library does where PyYAML differs.

Two differences matter to configs pasted from Prometheus: a key given twice is an error there
(PyYAML keeps the last), and a field of string type takes any scalar as written (``regex: true``
is the regex ``true``, ``port: 8080`` the string ``8080``, ``1.50`` stays ``1.50``), where PyYAML
makes a bool, an int or a float of it.
"""

from __future__ import annotations

from typing import Any, ClassVar

import yaml

# libyaml's parser when PyYAML has it: at 10,000 targets the pure-Python one took 3.5 s, and beat
# reloads on the config's every change.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR_TAG = "tag:yaml.org,2002:str"
#: Tags a plain scalar resolves to that Go's yaml still decodes as written into a string field.
_TYPED_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("bool", "int", "float", "timestamp"))


def as_written(node: yaml.Node, typed_keys: frozenset[str] = frozenset()) -> None:
    """Make every bool, int, float or timestamp scalar under ``node`` a string of its text (null
    stays null), except the values of mapping keys in ``typed_keys``."""
    if isinstance(node, yaml.ScalarNode):
        if node.tag in _TYPED_TAGS:
            node.tag = _STR_TAG
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            as_written(item, typed_keys)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            as_written(key, typed_keys)
            if not (isinstance(key, yaml.ScalarNode) and key.value in typed_keys):
                as_written(value, typed_keys)


class StrictLoader(_SafeLoader):  # type: ignore[misc,valid-type]
    """A safe YAML loader that refuses a key given twice in one mapping, and reads the values of
    the keys in :attr:`text_keys` as written (see :func:`as_written`)."""

    #: keys whose whole value is read as written, at any depth
    text_keys: ClassVar[frozenset[str]] = frozenset()
    #: keys under those whose values keep their YAML type
    typed_keys: ClassVar[frozenset[str]] = frozenset()


def _construct_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice in one mapping (first on line {seen[key] + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
        # children are built after this call, so retagging them here takes effect
        if key in loader.text_keys:
            as_written(value_node, loader.typed_keys)
    return _SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class TextLoader(StrictLoader):
    """A :class:`StrictLoader` that reads every scalar of the document as written (a file_sd file:
    target groups hold only strings)."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            as_written(node)
        return node
