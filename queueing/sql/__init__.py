"""Load the engine's named hot-path queries from every .sql file here, once."""
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


def load(folder):
    """Return the named queries of every .sql file in folder; a name used twice is an error."""
    queries = {}
    for path in sorted(pathlib.Path(folder).glob("*.sql")):
        for name, query in parse(path.read_text()).items():
            if name in queries:
                raise ValueError(f"query {name!r} is named twice ({path.name})")
            queries[name] = query
    return queries


queries = load(pathlib.Path(__file__).parent)
