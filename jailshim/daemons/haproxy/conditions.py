"""haproxy's `.if` expressions (src/cfgcond.c). Imported only when a configuration has a `.if`
to evaluate: most have none, and the adapter runs on every start of haproxy."""

from __future__ import annotations

from collections.abc import Mapping

from jailshim.daemons.haproxy.facts import Facts, version_key
from jailshim.daemons.haproxy.tokenizer import ParseError

__all__ = ["condition"]


class _Cond:
    """`.if` expressions: cfg_parse_cond_expr/_and/_term and cfg_eval_cond_term (src/cfgcond.c)."""

    def __init__(self, text: str, env: Mapping[str, str], facts: Facts) -> None:
        self.s, self.i, self.env, self.facts = text, 0, env, facts

    def _blank(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t":
            self.i += 1

    def expr(self) -> bool:
        value = self.and_()
        self._blank()
        while self.s.startswith("||", self.i):
            self.i += 2
            right = self.and_()
            value = value or right
            self._blank()
        return value

    def and_(self) -> bool:
        value = self.term()
        self._blank()
        while self.s.startswith("&&", self.i):
            self.i += 2
            right = self.term()
            value = value and right
            self._blank()
        return value

    def term(self) -> bool:
        self._blank()
        neg = False
        while self.s.startswith("!", self.i):
            neg = not neg
            self.i += 1
            self._blank()
        s = self.s
        j = self.i
        if j < len(s) and s[j] in "+-":
            j += 1
        if j < len(s) and s[j].isdigit():
            k = j
            base = 10
            if (
                s.startswith(("0x", "0X"), j)
                and k + 2 < len(s)
                and s[k + 2] in "0123456789abcdefABCDEF"
            ):
                base, k = 16, j + 2
            elif s[j] == "0":
                base = 8
            digits = "0123456789abcdef"[:base]
            start = k
            while k < len(s) and s[k].lower() in digits:
                k += 1
            value = int(s[start:k] or "0", base) != 0
            self.i = k
            return value != neg
        if j < len(s) and s[j] == "(":
            self.i = j + 1
            value = self.expr()
            self._blank()
            if not s.startswith(")", self.i):
                raise ParseError("expected ')' after conditional expression")
            self.i += 1
            return value != neg
        k = self.i
        while k < len(s) and s[k] not in " (":
            k += 1
        name = s[self.i : k]
        if name not in _PREDICATES:
            raise ParseError(f"unparsable conditional expression '{s[self.i :]}'")
        self.i = k
        return self._pred(name, self._args()) != neg

    def _args(self) -> list[str]:
        """make_arg_list() (src/arg.c) for string arguments: (a, "b", 'c')."""
        s = self.s
        if not s.startswith("(", self.i):
            return []
        self.i += 1
        args: list[str] = []
        cur: list[str] = []
        quote = ""
        while self.i < len(s):
            c = s[self.i]
            if quote:
                if c == "\\" and self.i + 1 < len(s):
                    cur.append(s[self.i + 1])
                    self.i += 2
                    continue
                if c == quote:
                    quote = ""
                else:
                    cur.append(c)
            elif c in "\"'":
                quote = c
            elif c == "\\" and self.i + 1 < len(s):
                cur.append(s[self.i + 1])
                self.i += 1
            elif c == ",":
                args.append("".join(cur))
                cur = []
            elif c == ")":
                args.append("".join(cur))
                self.i += 1
                return args
            else:
                cur.append(c)
            self.i += 1
        raise ParseError("missing closing ')' in predicate arguments")

    def _pred(self, name: str, args: list[str]) -> bool:
        want = 2 if name in ("streq", "strneq") else 1
        if len(args) != want:
            raise ParseError(f"predicate '{name}' needs {want} argument(s)")
        a = args[0]
        if name == "defined":
            return a in self.env
        if name == "feature":
            return _feature(self.facts.features, a)
        if name == "streq":
            return a == args[1]
        if name == "strneq":
            return a != args[1]
        return _version_predicate(name, a, self.facts)


def _feature(features: str, name: str) -> bool:
    """feature(NAME): "+NAME" in `haproxy -vv`'s feature list (a "-NAME" or none: false)."""
    for f in features.split():
        if f[1:] == name and f[:1] in "+-":
            return f[0] == "+"
    return False


def _version_predicate(name: str, a: str, facts: Facts) -> bool:
    """version_atleast/_before, openssl_version_atleast/_before, ssllib_name_startswith."""
    if name == "ssllib_name_startswith":
        return facts.openssl.startswith(a)
    if name.startswith("openssl_"):
        mine = (
            version_key(facts.openssl.removeprefix("OpenSSL ").split()[0]) if facts.openssl else ()
        )
        if not mine:  # no OpenSSL version known: neither at least nor before
            return False
    else:
        mine = version_key(facts.version)
    return mine >= version_key(a) if name.endswith("_atleast") else mine < version_key(a)


_PREDICATES = {
    "defined",
    "feature",
    "streq",
    "strneq",
    "version_atleast",
    "version_before",
    "openssl_version_atleast",
    "openssl_version_before",
    "ssllib_name_startswith",
}


def condition(text: str, env: Mapping[str, str], facts: Facts) -> bool:
    cond = _Cond(text, env, facts)
    value = cond.expr()
    cond._blank()
    if cond.i != len(text):
        raise ParseError(f"unexpected character '{text[cond.i]}' in conditional expression")
    return value
