r"""haproxy 2.6's parse_line() (src/tools.c): one configuration line into its words.

haproxy has no line continuations (a trailing backslash stays a backslash). Words are split on
blanks; a backslash escapes space, tab, backslash, quotes, # and $; \\n \\r \\t \\xNN stand for
their characters; other combinations are kept as written. "Double quotes" quote weakly and
expand $VAR and ${VAR}; 'single quotes' quote strongly; an unquoted # starts a comment
(configuration.txt, 2.2).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["SPACE", "ParseError", "env_expand", "parse_line", "split_line"]

SPACE = " \t\n\v\f\r"  # isspace() in the C locale
_HEX = "0123456789abcdefABCDEF"


class ParseError(ValueError):
    """A line haproxy could not split either (unterminated quote, bad escape)."""


def _getenv(env: Mapping[str, str], name: str) -> str | None:
    return env.get(name)


def env_expand(text: str, env: Mapping[str, str]) -> str:
    """$NAME and ${NAME} anywhere in an address, as haproxy's env_expand() (src/tools.c)."""
    if "$" not in text:
        return text
    out: list[str] = []
    i = 0
    while True:
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        beg = j + 1
        if beg < len(text) and text[beg] == "{":
            beg += 1
        end = beg
        while end < len(text) and (
            text[end].isascii() and (text[end].isalnum() or text[end] == "_")
        ):
            end += 1
        out.append(env.get(text[beg:end], "") or "")
        i = end + 1 if end < len(text) and text[end] == "}" and beg > j + 1 else end


def split_line(
    line: str,
    env: Mapping[str, str] | None = None,
    pseudo: Mapping[str, str] | None = None,
) -> list[str]:
    """The words of one line, as haproxy sees them: leading blanks skipped, then parse_line();
    trailing empty words are dropped (haproxy reads an empty args[n] as absent)."""
    words = parse_line(line.lstrip(SPACE), env, pseudo)
    while words and not words[-1]:
        words.pop()
    return words


def parse_line(
    line: str,
    env: Mapping[str, str] | None = None,
    pseudo: Mapping[str, str] | None = None,
) -> list[str]:
    r"""Split one line into words exactly as haproxy 2.6's parse_line() (src/tools.c).

    The line ends at \n, \r (unless it follows a blank) or #; blanks are isspace() (space, \t,
    \v, \f); a backslash escapes space, \\, #, ' and "; \$ only inside double quotes; \t \n \r
    \xNN give their characters; other pairs stay as written. "$NAME", "${NAME}",
    "${NAME-default}" (the default when NAME is unset) and "${NAME[*]}" (one word per blank-
    separated part) expand inside double quotes only; $.LINE, $.FILE, $.SECTION are haproxy's
    own. Empty words are kept (haproxy's args[]), a trailing blank gives a last empty word.
    """
    env = os.environ if env is None else env
    pseudo = pseudo or {}
    args: list[str] = []
    word: list[str] = []
    squote = dquote = False
    quote_at = -1
    n = len(line)
    i = 0
    while True:
        c = line[i] if i < n else "\0"
        if c >= "-" and c != "\\":
            word.append(c)
            i += 1
        elif c in "\0\n\r" or (c == "#" and not squote and not dquote):
            break
        elif c == '"' and not squote:
            dquote = not dquote
            quote_at = i if dquote else -1
            i += 1
        elif c == "'" and not dquote:
            squote = not squote
            quote_at = i if squote else -1
            i += 1
        elif c == "\\" and not squote:
            send, i = _escape(line, i, dquote=dquote)
            word.append(send)
        elif c in SPACE and not squote and not dquote:
            while i < n and line[i] in SPACE:
                i += 1
            args.append("".join(word))
            word = []
        elif c == "$" and dquote:
            value, expand, i = _variable(line, i + 1, env, pseudo)
            word = _add_value(value, expand, args, word)
        else:
            word.append(c)
            i += 1
    args.append("".join(word))
    if squote or dquote:
        raise ParseError(f"unmatched quote at position {quote_at + 1}")
    return args


def _escape(line: str, i: int, *, dquote: bool) -> tuple[str, int]:
    """The character a backslash at ``i`` gives, and where the line goes on after it."""
    nxt = line[i + 1] if i + 1 < len(line) else "\0"
    send = "\\"
    if nxt in " \\#'\"":
        send = nxt
        i += 1
    elif nxt in "tnr":
        send = {"t": "\t", "n": "\n", "r": "\r"}[nxt]
        i += 1
    elif nxt == "$" and dquote:
        send = "$"
        i += 1
    elif nxt == "x":
        digits = line[i + 2 : i + 4]
        if len(digits) != 2 or any(d not in _HEX for d in digits):
            raise ParseError(f"truncated or invalid hexadecimal sequence at position {i + 1}")
        send = chr(int(digits, 16))
        i += 3
    return send, i + 1


def _variable(
    line: str, i: int, env: Mapping[str, str], pseudo: Mapping[str, str]
) -> tuple[str | None, bool, int]:
    """A `$` inside double quotes (``i`` just past it): the variable's value (None: unset),
    whether it splits into words (${NAME[*]}), and where the line goes on."""
    n = len(line)
    brace = i < n and line[i] == "{"
    if brace:
        i += 1
    first = line[i] if i < n else "\0"
    if not (first.isascii() and (first.isalpha() or first in "_.")):
        raise ParseError(f"forbidden first char in environment variable name at position {i + 1}")
    name_at = i
    if first == ".":
        i += 1
    while i < n and line[i].isascii() and (line[i].isalnum() or line[i] == "_"):
        i += 1
    name = line[name_at:i]
    value: str | None
    if name.startswith("."):
        if name[1:] not in ("LINE", "FILE", "SECTION"):
            raise ParseError(f"unsupported internal variable {name} at position {name_at + 1}")
        value = pseudo.get(name[1:], "")
    else:
        value = _getenv(env, name)
    expand = False
    if i < n and line[i] == "[" and brace:
        if line[i + 1 : i + 3] != "*]":
            raise ParseError(f"truncated or invalid word expansion sequence at position {i + 1}")
        expand = True
        i += 3
    if brace:
        value, i = _close_brace(line, i, value)
    return value, expand, i


def _close_brace(line: str, i: int, value: str | None) -> tuple[str | None, int]:
    """The end of ${NAME} or ${NAME-default} at ``i``: the value (the default when unset), and
    the position after the brace."""
    if i < len(line) and line[i] == "-":
        close = line.find("}", i)
        if close < 0 or "\n" in line[i:close] or "\r" in line[i:close]:
            raise ParseError("unmatched brace in environment variable name")
        if value is None:
            value = line[i + 1 : close].split("\0", 1)[0]
        i = close
    elif i >= len(line) or line[i] != "}":
        raise ParseError("unmatched brace in environment variable name")
    return value, i + 1


def _add_value(value: str | None, expand: bool, args: list[str], word: list[str]) -> list[str]:
    """Append a variable's value to the word being built; with ``expand`` each blank ends a
    word (appended to ``args``). Returns the word being built now."""
    if not value:
        return word
    value = value.split("\0", 1)[0]
    k = 0
    while k < len(value):
        if expand and value[k] in SPACE:
            args.append("".join(word))
            word = []
            k += 1
            while k < len(value) and value[k] in SPACE:
                k += 1
        else:
            word.append(value[k])
            k += 1
    return word
