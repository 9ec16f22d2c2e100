"""Load the engine's named hot-path queries from queries.sql once."""
import pathlib
import re

_HEADER = re.compile(r"^-- name: (?P<name>\w+) --$", re.MULTILINE)


def parse(text):
    """Return {name: query} for every `-- name: NAME --` section of text."""
    parts = _HEADER.split(text)
    queries = {}
    for name, body in zip(parts[1::2], parts[2::2]):
        lines = [line for line in body.strip().splitlines() if not line.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip()
    return queries


queries = parse((pathlib.Path(__file__).parent / "queries.sql").read_text())
