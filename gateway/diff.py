"""The structural diff of two normalized sites: what changed, as paths into the document.

`diff_sites(before, after)` walks both documents (as `normalize_site` returns them) side by
side and lists every difference as `{"path", "before", "after"}`:

- a `path` is the keys and list positions from the top of the document, joined by `/`
  (`fuse_tree/0/children/1/parameters/limit`); a key holding `/` or `~` is escaped as in
  JSON Pointer (RFC 6901: `~1`, `~0`);
- a list position is the element's position in the NEW document, or in the old one for an
  element that was removed;
- children of a list of objects are matched by identity, not position, so a re-ordering is
  not a change: a connector by its `id`, a fuse-tree node by `parameters.fuse_id`, else by
  `parameters.name` (an identity shared by two siblings is no identity: the next one is
  tried), else by their order among the siblings left without one;
- an element only in the new list is one change (`before: null`, `after`: the element), an
  element only in the old list likewise (`after: null`); a list of plain values (such as
  `charging_capability`) that differs is one change holding both lists;
- values differ when their JSON differs: `1`, `1.0` and `true` are three different values.

At most `MAX_CHANGES` are listed, in document order; past that the result says `truncated`.
Walks use an explicit stack, so a fuse tree thousands of levels deep costs memory, not the
interpreter's recursion limit.  Unchanged subtrees are recognized by their JSON (orjson, in
C) before they are walked, so the walk goes down the changed branches only.  Pure
functions: no I/O, no clock, no logging.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

MAX_CHANGES = 100
# Below a subtree too deep for orjson, this many levels are walked before trying it again.
PLAIN_LEVELS = 200

Path = tuple[str, "Path | None"]  # a segment and its parent's path, shared by siblings
Identity = tuple[str, Hashable]


@dataclass(frozen=True, slots=True)
class Diff:
    changes: list[dict[str, Any]]
    truncated: bool


def diff_sites(before: Any, after: Any, *, limit: int = MAX_CHANGES) -> Diff:
    """Every difference between two normalized sites, at most `limit` of them."""
    changes: list[dict[str, Any]] = []
    for path, old, new in _differences(before, after):
        if len(changes) == limit:
            return Diff(changes, truncated=True)
        changes.append({"path": _render(path), "before": old, "after": new})
    return Diff(changes, truncated=False)


def _differences(before: Any, after: Any) -> Iterator[tuple[Path | None, Any, Any]]:
    """(path, old value, new value) for each difference, in document order."""
    # (path, old, new, levels left to walk without trying the serialized comparison);
    # reversed pushes keep the pops in document order.  The documents themselves differ
    # (that is why they are compared): their parts are what is worth comparing whole.
    stack: list[tuple[Path | None, Any, Any, int]] = [(None, before, after, 1)]
    while stack:
        path, old, new, plain = stack.pop()
        both_dicts = isinstance(old, dict) and isinstance(new, dict)
        both_lists = isinstance(old, list) and isinstance(new, list)
        if both_dicts or both_lists:
            # Most of a document is unchanged: compare whole subtrees in C first.
            if plain == 0:
                same = _same_json(old, new)
                if same:
                    continue
                plain = PLAIN_LEVELS if same is None else 0
            else:
                plain -= 1
        if both_dicts:
            pending = [(key, old.get(key), value) for key, value in new.items()]
            pending += [(key, value, None) for key, value in old.items() if key not in new]
            for key, old_value, new_value in reversed(pending):
                stack.append(((_escape(str(key)), path), old_value, new_value, plain))
        elif both_lists and _objects(old) and _objects(new):
            pairs = list(_matched(path, old, new))
            stack.extend((where, a, b, plain) for where, a, b in reversed(pairs))
        elif not _same(old, new):
            yield path, old, new


def _same_json(old: Any, new: Any) -> bool | None:
    """Whether two values serialize to the same JSON; None when too deep to tell this way."""
    try:
        return orjson.dumps(old) == orjson.dumps(new)
    except orjson.JSONEncodeError:
        return None


def _matched(
    path: Path | None, old: list[Any], new: list[Any]
) -> Iterator[tuple[Path | None, Any, Any]]:
    """The element pairs of two lists of objects, matched by identity, in document order:
    matched and added elements at their new position, then the removed ones."""
    old_candidates = [_candidates(element) for element in old]
    new_candidates = [_candidates(element) for element in new]
    old_counts = Counter(c for found in old_candidates for c in found)
    new_counts = Counter(c for found in new_candidates for c in found)
    old_at = {
        identity: index
        for index, identity in enumerate(_identities(old_candidates, old_counts, new_counts))
    }
    matched: set[int] = set()
    new_ids = _identities(new_candidates, new_counts, old_counts)
    for index, (element, identity) in enumerate(zip(new, new_ids, strict=True)):
        previous = old_at.get(identity)
        if previous is not None:
            matched.add(previous)
        yield (str(index), path), None if previous is None else old[previous], element
    for index, element in enumerate(old):
        if index not in matched:
            yield (str(index), path), element, None


def _identities(
    candidates: list[list[Identity]], mine: Counter[Identity], theirs: Counter[Identity]
) -> list[Identity]:
    """Each element's identity: the first of its candidate keys that no other element of
    its list shares, nor more than one of the list it is compared with; else its rank
    among those left without one."""
    found: list[Identity] = []
    anonymous = 0
    for options in candidates:
        identity = next((c for c in options if mine[c] == 1 and theirs[c] <= 1), None)
        if identity is None:
            identity = ("rank", anonymous)
            anonymous += 1
        found.append(identity)
    return found


def _candidates(element: Any) -> list[Identity]:
    if not isinstance(element, dict):
        return []
    parameters = element.get("parameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    values = (
        ("id", element.get("id")),
        ("fuse_id", parameters.get("fuse_id")),
        ("name", parameters.get("name")),
    )
    return [(kind, value) for kind, value in values if isinstance(value, str | int | float)]


def _objects(elements: list[Any]) -> bool:
    return all(isinstance(element, dict) for element in elements)


def _same(old: Any, new: Any) -> bool:
    """Equal as JSON, without recursion: containers are compared element by element."""
    stack = [(old, new)]
    while stack:
        a, b = stack.pop()
        if type(a) is not type(b):
            return False
        if isinstance(a, dict):
            if a.keys() != b.keys():
                return False
            stack.extend((a[key], b[key]) for key in a)
        elif isinstance(a, list):
            if len(a) != len(b):
                return False
            stack.extend(zip(a, b, strict=True))
        elif a != b:
            return False
    return True


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _render(path: Path | None) -> str:
    segments: list[str] = []
    while path is not None:
        segment, path = path
        segments.append(segment)
    segments.reverse()
    return "/".join(segments)
