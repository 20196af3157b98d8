"""Reading the YAML files people write (task and app specs, GPU catalogs, price lists): one
reader, safe and bounded, whose errors name the file.

* ``yaml.SafeLoader`` only: no Python objects are built from tags.
* A size limit, checked before the file is parsed.
* UTF-8 only, with the byte that is not.
* Aliases bounded: a short chain of anchors and aliases expands exponentially when the data
  is walked (eight lines can exhaust memory in an error message or a JSON dump). Specs
  accept none; a catalog may reuse a block a few times (the packaged one shares its MIG
  profiles), up to ``max_aliases``, which caps any expansion at a few hundred-fold.
* Parser messages cut to a short preview.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from rightsizer.errors import ConfigError

MAX_YAML_BYTES = 1 << 20  # specs and lists are a few KB; anything near this is not one
PREVIEW_CHARS = 500  # of a parser's message


def _loader(what: str, max_aliases: int) -> type[yaml.SafeLoader]:
    class BoundedAliasLoader(yaml.SafeLoader):
        aliases = 0

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                self.aliases += 1
                if max_aliases == 0:
                    raise yaml.composer.ComposerError(
                        None, None, f"YAML aliases (*{event.anchor}) are not accepted in a {what}; "
                        "write the value out", event.start_mark)
                if self.aliases > max_aliases:
                    raise yaml.composer.ComposerError(
                        None, None, f"more than {max_aliases} YAML aliases (at *{event.anchor}) in a "
                        f"{what}: repeated aliases can expand exponentially; write the values out",
                        event.start_mark)
            return super().compose_node(parent, index)

    return BoundedAliasLoader


def read_yaml(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_YAML_BYTES,
              max_aliases: int = 0) -> Any:
    """The parsed YAML document at ``path`` (a ``what``: "task spec", "GPU catalog", ...).

    A ConfigError naming the file for a missing or unreadable file, one over ``max_bytes``,
    text that is not UTF-8, invalid YAML, or more than ``max_aliases`` aliases.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ConfigError(f"{size} bytes; a {what} is at most {max_bytes} bytes", str(path))
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {e.start}: {e.reason}); a {what} is UTF-8 text",
                          str(path)) from None
    except OSError as e:
        raise ConfigError(f"cannot read the {what}: {e}", str(path)) from None
    try:
        return yaml.load(text, Loader=_loader(what, max_aliases))  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {str(e)[:PREVIEW_CHARS]}", str(path)) from None
