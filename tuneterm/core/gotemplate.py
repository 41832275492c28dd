"""A renderer for the subset of Go's text/template syntax that tuneterm's Ollama Modelfiles use, and
Ollama's way of filling it, so a Modelfile's TEMPLATE can be checked against the model's own chat
template without Ollama.

The subset: text; ``{{ .Field }}`` and ``{{ $.Field }}``; ``{{ if C }} ... {{ else if C }} ... {{ else }}
... {{ end }}``; ``{{ range .Messages }} ... {{ end }}``; conditions ``.Field``, ``eq .Field "s"`` and
``ne .Field "s"``; the trim markers ``{{-`` and ``-}}``. Anything else is a ``ValueError``.

:func:`ollama_values` fills the template the way Ollama's chat endpoint does: the Modelfile's SYSTEM
goes first when the request has no system message, consecutive messages of one role are merged with
a blank line, ``.System`` is every system message joined, and ``.Messages`` keeps them all.
"""

from __future__ import annotations

import re

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_COND = re.compile(r'^(?:(eq|ne)\s+)?(\$?\.\w+)(?:\s+"((?:[^"\\]|\\.)*)")?$')


def _tokens(template: str) -> list[tuple[str, str]]:
    """("text", s) and ("action", body) pieces, trim markers applied."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", m.group(2)))
        pos = m.end()
        if m.group(3):
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip())
    out.append(("text", template[pos:]))
    return [t for t in out if t != ("text", "")]


def _parse(tokens: list, i: int, stop: tuple[str, ...]) -> tuple[list, int, str | None]:
    """Nodes until an action in ``stop``; returns (nodes, next index, the stop action)."""
    nodes: list = []
    while i < len(tokens):
        kind, body = tokens[i]
        if kind == "text":
            nodes.append(("text", body))
            i += 1
            continue
        if body in stop or (body.startswith("else if ") and "else" in stop):
            return nodes, i, body
        if body.startswith("if "):
            branches, i = _parse_if(tokens, i, body[3:])
            nodes.append(("if", branches))
        elif body.startswith("range "):
            field = body[6:].strip()
            inner, i, end = _parse(tokens, i + 1, ("end",))
            if end != "end":
                raise ValueError("range without end")
            nodes.append(("range", field, inner))
            i += 1
        elif re.fullmatch(r"\$?\.\w+", body):
            nodes.append(("field", body))
            i += 1
        else:
            raise ValueError(f"unsupported template action {{{{ {body} }}}}")
    return nodes, i, None


def _parse_if(tokens: list, i: int, cond: str) -> tuple[list, int]:
    branches = []
    while True:
        inner, i, end = _parse(tokens, i + 1, ("else", "end"))
        branches.append((cond, inner))
        if end is None:
            raise ValueError("if without end")
        if end == "end":
            return branches, i + 1
        if end == "else":
            inner, i, end = _parse(tokens, i + 1, ("end",))
            if end != "end":
                raise ValueError("else without end")
            branches.append((None, inner))
            return branches, i + 1
        cond = end[len("else if "):]


def _lookup(name: str, dot: dict, root: dict):
    scope = root if name.startswith("$") else dot
    return scope.get(name.lstrip("$").lstrip("."), "")


def _truth(cond: str, dot: dict, root: dict) -> bool:
    m = _COND.match(cond.strip())
    if not m:
        raise ValueError(f"unsupported condition {cond!r}")
    op, field, literal = m.groups()
    value = _lookup(field, dot, root)
    if op is None:
        return bool(value)
    literal = (literal or "").replace('\\"', '"')
    return (value == literal) if op == "eq" else (value != literal)


def _render(nodes: list, dot: dict, root: dict, out: list[str]) -> None:
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "field":
            out.append(str(_lookup(node[1], dot, root)))
        elif node[0] == "if":
            for cond, inner in node[1]:
                if cond is None or _truth(cond, dot, root):
                    _render(inner, dot, root, out)
                    break
        elif node[0] == "range":
            for item in _lookup(node[1], dot, root) or []:
                _render(node[2], item, root, out)


def render(template: str, values: dict) -> str:
    nodes, _, end = _parse(_tokens(template), 0, ())
    if end is not None:
        raise ValueError(f"unexpected {{{{ {end} }}}}")
    out: list[str] = []
    _render(nodes, values, values, out)
    return "".join(out)


def ollama_values(messages: list[dict], default_system: str = "") -> dict:
    """``.System`` and ``.Messages`` as Ollama's chat endpoint fills them (see the module's docstring)."""
    msgs = [{"Role": m["role"], "Content": m.get("content") or ""} for m in messages]
    if default_system and (not msgs or msgs[0]["Role"] != "system"):
        msgs.insert(0, {"Role": "system", "Content": default_system})
    collated: list[dict] = []
    for m in msgs:
        if collated and collated[-1]["Role"] == m["Role"]:
            collated[-1]["Content"] += "\n\n" + m["Content"]
        else:
            collated.append(dict(m))
    system = "\n\n".join(m["Content"] for m in msgs if m["Role"] == "system")
    return {"System": system, "Messages": collated}
