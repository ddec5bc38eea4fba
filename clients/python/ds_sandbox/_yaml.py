"""Reading template YAML files from a local directory, without PyYAML.

Templates are small, flat documents: scalars, string maps (env, files,
metadata) and string lists (run_cmds, aliases). This reads that subset of
YAML: block mappings and sequences, flow [lists] and {maps}, plain, 'single'-
and "double"-quoted scalars, | and > block scalars, and comments. Anything else
is refused with a ValueError naming the line, rather than misread; such a file
can still be loaded through the server (put it in the server's templates
directory and call load_template without templates_dir).
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

from .template import Template

__all__ = ["load_template_file", "list_template_files", "parse"]

_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def list_template_files(directory: str) -> list[str]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    ids = {os.path.splitext(n)[0] for n in names if n.endswith((".yaml", ".yml"))}
    return sorted(i for i in ids if _ID_RE.match(i))


def load_template_file(directory: str, template_id: str) -> Optional[Template]:
    if not _ID_RE.match(template_id or ""):
        raise ValueError(f"template id {template_id!r}: only letters, digits, '.', '_' and '-' are allowed")
    for ext in (".yaml", ".yml"):
        p = os.path.join(directory, template_id + ext)
        if os.path.isfile(p):
            with open(p, encoding="utf-8") as f:
                doc = parse(f.read(), p)
            if doc is None:
                doc = {}
            if not isinstance(doc, dict):
                raise ValueError(f"{p}: a template is a mapping of fields")
            if doc.get("id") is None:
                doc["id"] = template_id
            elif str(doc["id"]) != template_id:
                raise ValueError(f"{p}: id {doc['id']!r} differs from the file name {template_id!r}")
            try:
                return Template.from_dict(doc)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{p}: {e}") from None
    return None


class _Line:
    __slots__ = ("no", "indent", "text")

    def __init__(self, no: int, indent: int, text: str):
        self.no = no
        self.indent = indent
        self.text = text


def _strip_comment(s: str) -> str:
    """Remove a trailing comment (a # at the start or after a space, outside quotes)."""
    q = None
    for i, ch in enumerate(s):
        if q:
            if ch == q:
                q = None
            elif ch == "\\" and q == '"':
                continue
        elif ch in "'\"" and (i == 0 or s[i - 1] in " \t:[{,-"):
            q = ch
        elif ch == "#" and (i == 0 or s[i - 1] in " \t"):
            return s[:i].rstrip()
    return s.rstrip()


class _Parser:
    def __init__(self, text: str, source: str):
        self.source = source
        self.raw = text.splitlines()
        self.i = 0

    def err(self, no: int, msg: str) -> ValueError:
        return ValueError(f"{self.source}:{no + 1}: {msg}")

    def peek(self) -> Optional[_Line]:
        """The next structural line (skipping blanks and comments), not consumed."""
        j = self.i
        while j < len(self.raw):
            line = self.raw[j]
            if "\t" in line[: len(line) - len(line.lstrip())]:
                raise self.err(j, "tabs are not allowed in indentation")
            stripped = line.strip()
            if stripped and not stripped.startswith("#"):
                if stripped in ("---", "...") and j == self.i and line.startswith(stripped):
                    if stripped == "---" and any(l.strip() and not l.strip().startswith("#") for l in self.raw[:j]):
                        raise self.err(j, "more than one YAML document")
                    self.i = j + 1
                    return self.peek()
                return _Line(j, len(line) - len(line.lstrip(" ")), _strip_comment(line.strip()))
            j += 1
        return None

    def advance(self, line: _Line) -> None:
        self.i = line.no + 1

    def node(self, indent: int) -> Any:
        """A block node whose lines are indented at least ``indent``."""
        line = self.peek()
        if line is None or line.indent < indent:
            return None
        if line.text == "-" or line.text.startswith("- "):
            return self.seq(line.indent)
        return self.map(line.indent)

    def seq(self, indent: int) -> list:
        out = []
        while True:
            line = self.peek()
            if line is None or line.indent < indent:
                return out
            if line.indent > indent:
                raise self.err(line.no, "unexpected indentation")
            if not (line.text == "-" or line.text.startswith("- ")):
                return out
            self.advance(line)
            rest = line.text[1:].strip()
            if not rest:
                out.append(self.node(indent + 1))
            elif re.match(r"^[^'\"\[{][^:]*:(\s|$)", rest):
                raise self.err(line.no, "mappings inside lists are not supported here")
            else:
                out.append(self.scalar_or_flow(rest, line, indent))
        return out

    def map(self, indent: int) -> dict:
        out: dict = {}
        while True:
            line = self.peek()
            if line is None or line.indent < indent:
                return out
            if line.indent > indent:
                raise self.err(line.no, "unexpected indentation")
            key, rest = self.split_key(line)
            self.advance(line)
            if key in out:
                raise self.err(line.no, f"duplicate key {key!r}")
            if rest == "":
                nxt = self.peek()
                if nxt is not None and (nxt.indent > indent or
                                        (nxt.indent == indent and (nxt.text == "-" or nxt.text.startswith("- ")))):
                    out[key] = self.node(nxt.indent)
                else:
                    out[key] = None
            else:
                out[key] = self.scalar_or_flow(rest, line, indent)

    def split_key(self, line: _Line) -> tuple[str, str]:
        t = line.text
        if t[0] in "'\"":
            val, end = self.quoted(t, 0, line)
            rest = t[end:].lstrip()
            if not rest.startswith(":"):
                raise self.err(line.no, "expected ':' after a quoted key")
            return str(val), rest[1:].strip()
        m = re.match(r"^([^:#\[\]{},]+?)\s*:(\s+|$)(.*)$", t)
        if not m:
            raise self.err(line.no, f"expected 'key: value', got {t!r}")
        return m.group(1).strip(), m.group(3).strip()

    def scalar_or_flow(self, s: str, line: _Line, indent: int) -> Any:
        if s[0] in "|>":
            return self.block_scalar(s, line, indent)
        if s[0] in "[{":
            val, end = self.flow(s, 0, line)
            if s[end:].strip():
                raise self.err(line.no, f"unexpected text after {s[:end]!r}")
            return val
        if s[0] in "'\"":
            val, end = self.quoted(s, 0, line)
            if s[end:].strip():
                raise self.err(line.no, f"unexpected text after a quoted string")
            return val
        if s[0] in "&*!%@`":
            raise self.err(line.no, f"YAML feature {s[0]!r} is not supported here")
        return self.plain(s)

    @staticmethod
    def plain(s: str) -> Any:
        s = s.strip()
        if s in ("null", "Null", "NULL", "~", ""):
            return None
        if s in ("true", "True", "TRUE"):
            return True
        if s in ("false", "False", "FALSE"):
            return False
        if re.match(r"^[-+]?\d+$", s):
            return int(s)
        return s

    _ESC = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "/": "/", " ": " ",
            "a": "\a", "b": "\b", "e": "\x1b", "f": "\f", "v": "\v", "N": "\x85", "_": "\xa0"}

    def quoted(self, s: str, i: int, line: _Line) -> tuple[str, int]:
        q = s[i]
        out = []
        j = i + 1
        while j < len(s):
            ch = s[j]
            if q == "'":
                if ch == "'":
                    if j + 1 < len(s) and s[j + 1] == "'":
                        out.append("'")
                        j += 2
                        continue
                    return "".join(out), j + 1
                out.append(ch)
                j += 1
                continue
            if ch == '"':
                return "".join(out), j + 1
            if ch == "\\":
                if j + 1 >= len(s):
                    break
                e = s[j + 1]
                if e in self._ESC:
                    out.append(self._ESC[e])
                    j += 2
                    continue
                n = {"x": 2, "u": 4, "U": 8}.get(e)
                if n and re.match(r"^[0-9a-fA-F]{%d}$" % n, s[j + 2:j + 2 + n]):
                    out.append(chr(int(s[j + 2:j + 2 + n], 16)))
                    j += 2 + n
                    continue
                raise self.err(line.no, f"unknown escape \\{e}")
            out.append(ch)
            j += 1
        raise self.err(line.no, "unterminated quoted string (multi-line quoted strings are not supported here)")

    def flow(self, s: str, i: int, line: _Line) -> tuple[Any, int]:
        close = "]" if s[i] == "[" else "}"
        is_map = close == "}"
        out_l: list = []
        out_m: dict = {}
        j = i + 1
        while True:
            while j < len(s) and s[j] == " ":
                j += 1
            if j >= len(s):
                raise self.err(line.no, "unterminated flow collection (multi-line ones are not supported here)")
            if s[j] == close:
                return (out_m if is_map else out_l), j + 1
            item, j = self.flow_item(s, j, line, close)
            if is_map:
                while j < len(s) and s[j] == " ":
                    j += 1
                if j >= len(s) or s[j] != ":":
                    raise self.err(line.no, "expected ':' in a flow mapping")
                j += 1
                while j < len(s) and s[j] == " ":
                    j += 1
                val, j = self.flow_item(s, j, line, close)
                out_m[str(item)] = val
            else:
                out_l.append(item)
            while j < len(s) and s[j] == " ":
                j += 1
            if j < len(s) and s[j] == ",":
                j += 1
            elif j < len(s) and s[j] == close:
                continue
            else:
                raise self.err(line.no, "expected ',' or the end of the flow collection")

    def flow_item(self, s: str, j: int, line: _Line, close: str) -> tuple[Any, int]:
        if s[j] in "'\"":
            return self.quoted(s, j, line)
        if s[j] in "[{":
            return self.flow(s, j, line)
        m = re.compile(r"[^,\]}]*?(?=\s*(,|%s|:\s|:$))" % re.escape(close)).match(s, j)
        if not m:
            raise self.err(line.no, "malformed flow collection")
        return self.plain(m.group(0)), m.end()

    def block_scalar(self, head: str, line: _Line, parent_indent: int) -> str:
        m = re.match(r"^([|>])([+-]?)(\d?)([+-]?)$", head.strip())
        if not m:
            raise self.err(line.no, f"malformed block scalar header {head!r}")
        style, chomp = m.group(1), m.group(2) or m.group(4)
        explicit = int(m.group(3)) if m.group(3) else None
        j = line.no + 1
        body: list[str] = []
        ind = parent_indent + explicit if explicit else None
        while j < len(self.raw):
            raw = self.raw[j]
            if raw.strip() == "":
                body.append("")
                j += 1
                continue
            cur = len(raw) - len(raw.lstrip(" "))
            if ind is None:
                if cur <= parent_indent:
                    break
                ind = cur
            if cur < ind:
                break
            body.append(raw[ind:])
            j += 1
        self.i = j
        # trailing blank lines belong to chomping
        trail = 0
        while body and body[-1] == "":
            body.pop()
            trail += 1
        if style == "|":
            text = "\n".join(body)
        else:
            parts: list[str] = []
            prev: Optional[str] = None
            for b in body:
                if prev is None:
                    parts.append(b)
                elif b == "":
                    parts.append("\n")
                elif prev == "":
                    parts.append(b)
                elif b.startswith(" ") or prev.startswith(" "):
                    parts.append("\n" + b)
                else:
                    parts.append(" " + b)
                prev = b
            text = "".join(parts)
        if not body:
            return "" if chomp != "+" else "\n" * trail
        if chomp == "-":
            return text
        if chomp == "+":
            return text + "\n" + "\n" * trail
        return text + "\n"


def parse(text: str, source: str = "<yaml>") -> Any:
    p = _Parser(text, source)
    first = p.peek()
    if first is None:
        return None
    if first.indent != 0:
        raise p.err(first.no, "the document must start at column 0")
    val = p.node(0)
    rest = p.peek()
    if rest is not None:
        raise p.err(rest.no, f"unexpected {rest.text!r}")
    return val
