"""POSIX getopt(3) as daemons written in C read their command line, without GNU's reordering;
and getopt_long(3) (glibc's, which permutes, and libntp's, which does not) for radvd and ntpd.

named (isc_commandline_parse) and postfix (GETOPT with "+") both read options this way: flags
combine (-gu bind), a value is the rest of its word or the next word (-tDIR, -t DIR), and `--`
or the first word that is not an option ends the options. Each adapter turns a GetoptError into
its daemon's own sentence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from jailshim.errors import UsageError

__all__ = ["GetoptError", "LongParsed", "Parsed", "getopt", "getopt_long", "last", "options_of"]


class GetoptError(Exception):
    """An option the daemon does not take (``missing`` False) or one whose value is missing."""

    def __init__(self, letter: str, *, missing: bool) -> None:
        super().__init__(letter)
        self.letter = letter
        self.missing = missing


class Parsed(NamedTuple):
    options: tuple[tuple[str, str], ...]  # (letter, value) in order; a flag's value is ""
    rest: int  # the index in argv of the first word after the options


def getopt(argv: Sequence[str], optstring: str) -> Parsed:
    """Read ``argv[1:]`` against ``optstring`` (getopt's own syntax: "c:Dv")."""
    with_value = {optstring[i - 1] for i, ch in enumerate(optstring) if ch == ":"}
    flags = set(optstring.replace(":", "")) - with_value
    options: list[tuple[str, str]] = []
    i = 1
    while i < len(argv):
        word = argv[i]
        if word == "--":
            i += 1
            break
        if not word.startswith("-") or word == "-":
            break
        for j in range(1, len(word)):
            letter = word[j]
            if letter in with_value:
                value = word[j + 1 :]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise GetoptError(letter, missing=True)
                    value = argv[i]
                options.append((letter, value))
                break
            if letter not in flags:
                raise GetoptError(letter, missing=False)
            options.append((letter, ""))
        i += 1
    return Parsed(tuple(options), i)


def options_of(daemon: str, argv: Sequence[str], optstring: str) -> dict[str, list[str]]:
    """Each option letter's values (a flag's: ""), or the sentence for a command line the
    daemon itself would refuse (it would print its usage and exit)."""
    try:
        parsed = getopt(argv, optstring)
    except GetoptError as exc:
        what = "needs a value and COMMAND ends there" if exc.missing else "is not one it takes"
        raise UsageError(
            f"{daemon}'s option -{exc.letter} {what}, so {daemon} would refuse to start; "
            f"fix COMMAND (`{daemon} -h` lists its options)."
        ) from None
    found: dict[str, list[str]] = {}
    for letter, value in parsed.options:
        found.setdefault(letter, []).append(value)
    return found


class LongParsed(NamedTuple):
    options: dict[str, list[str]]  # each letter's values in order (a flag's: "")
    operands: list[str]  # the words that are no option (permuting: all of them; else those after)


def getopt_long(
    argv: Sequence[str],
    optstring: str,
    longs: Mapping[str, tuple[str, bool]],
    refused: Callable[[str, str], Exception],
    *,
    permute: bool,
    exact_wins: bool,
) -> LongParsed:
    """``argv[1:]`` read as getopt_long(3) reads it: short options combine (-nu radvd) and
    take the rest of their word or the next one; `--name[=value]` may be shortened to a
    unique prefix (``longs``: name -> (letter, takes a value); ``exact_wins``: glibc takes an
    exact name even when it prefixes another, libntp counts it as ambiguous); `--` ends the
    options, and so does the first word that is no option unless ``permute`` (glibc's
    default). ``refused(word, why)`` is the daemon's own sentence for a line it would refuse."""
    found: dict[str, list[str]] = {}
    operands: list[str] = []
    words = list(argv[1:])
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word == "--":
            break
        if not word.startswith("-") or word == "-":
            if not permute:
                i -= 1
                break
            operands.append(word)
            continue
        if word.startswith("--"):
            letter, value, i = _long(word, words, i, longs, refused, exact_wins=exact_wins)
            found.setdefault(letter, []).append(value)
            continue
        pairs, i = _short(word, words, i, optstring, refused)
        for letter, value in pairs:
            found.setdefault(letter, []).append(value)
    return LongParsed(found, [*operands, *words[i:]])


def _long(
    word: str,
    words: Sequence[str],
    i: int,
    longs: Mapping[str, tuple[str, bool]],
    refused: Callable[[str, str], Exception],
    *,
    exact_wins: bool,
) -> tuple[str, str, int]:
    """`--name[=value]`: its letter, its value (the next word when it takes one and has no
    `=`) and the index of the word after it."""
    name, equals, value = word[2:].partition("=")
    exact = [n for n in longs if n == name] if exact_wins else []
    matches = exact or [n for n in longs if n.startswith(name)]
    if len(matches) != 1:
        raise refused(word, "is not one it takes" if not matches else "is ambiguous")
    letter, takes = longs[matches[0]]
    if takes and not equals:
        if i >= len(words):
            raise refused(word, "needs a value and COMMAND ends there")
        return letter, words[i], i + 1
    if not takes and equals:
        raise refused(word, "takes no value")
    return letter, value, i


def _short(
    word: str,
    words: Sequence[str],
    i: int,
    optstring: str,
    refused: Callable[[str, str], Exception],
) -> tuple[list[tuple[str, str]], int]:
    """The options of one `-abc` word, (letter, value) each, and the index of the word after
    it and the value it took, if any."""
    found = []
    for j in range(1, len(word)):
        letter = word[j]
        at = optstring.find(letter)
        if letter == ":" or at < 0:
            raise refused(f"-{letter}", "is not one it takes")
        if optstring[at + 1 : at + 2] != ":":
            found.append((letter, ""))
            continue
        value = word[j + 1 :]
        if not value:
            if i >= len(words):
                raise refused(f"-{letter}", "needs a value and COMMAND ends there")
            value, i = words[i], i + 1
        found.append((letter, value))
        break
    return found, i


def last(options: Mapping[str, list[str]], letter: str, default: str = "") -> str:
    """The value of an option's last occurrence, as a daemon that keeps the last one reads
    it; ``default`` when absent."""
    values = options.get(letter)
    return values[-1] if values else default
