"""The formats of the files people write, as types: task and app specs (``task``, ``app``),
and the one typed validator and JSON Schema writer over them (``check``). Imports no other
part of the library but its errors, so every layer can name these types."""
