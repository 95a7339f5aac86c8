"""The haproxy adapter: which files haproxy reads, how it splits lines, what global says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jailshim.daemons.haproxy import config_files, parse_config, read_config, split_line
from jailshim.errors import ConfigError


def test_files_in_command_line_order_with_directories(tmp_path: Path) -> None:
    """-f files and dirs, then --: dirs give non-hidden regular *.cfg files in C byte order."""
    d = tmp_path / "conf.d"
    d.mkdir()
    for name in ("b.cfg", "A.cfg", ".hidden.cfg", "notes.txt", "a.cfg"):
        (d / name).write_text("global\n")
    (d / "sub.cfg").mkdir()
    (d / "link.cfg").symlink_to(d / "a.cfg")
    (tmp_path / "main.cfg").write_text("global\n")
    (tmp_path / "last.cfg").write_text("global\n")
    argv = ["haproxy", "-db", "-f", str(tmp_path / "main.cfg"), "-p", "/run/x.pid", "-f", str(d)]
    argv += ["-sf", "12", "13", "--", str(tmp_path / "last.cfg")]
    names = [os.path.relpath(p, tmp_path) for p in config_files(argv)]
    assert names == [
        "main.cfg",
        "conf.d/A.cfg",
        "conf.d/a.cfg",
        "conf.d/b.cfg",
        "conf.d/link.cfg",
        "last.cfg",
    ]


def test_relative_files_follow_dash_c(tmp_path: Path) -> None:
    """-C DIR: relative -f paths are read from DIR, as haproxy chdirs first."""
    (tmp_path / "h.cfg").write_text("global\n")
    assert config_files(["haproxy", "-C", str(tmp_path), "-f", "h.cfg"]) == [
        str(tmp_path / "h.cfg")
    ]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A -f that does not exist: 78 naming it."""
    with pytest.raises(ConfigError, match=r"nope\.cfg cannot be read"):
        config_files(["haproxy", "-f", str(tmp_path / "nope.cfg")])


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("  chroot /var/lib/haproxy  # the jail", ["chroot", "/var/lib/haproxy"]),
        ("log-format \"%{+Q}o %t\"' %s'\\ %{-Q}r", ["log-format", "%{+Q}o %t %s %{-Q}r"]),
        ("a\\ b \\#c \\x41 \\\\", ["a b", "#c", "A", "\\"]),
        ("chroot /t\\qmp\\", ["chroot", "/t\\qmp\\"]),  # unknown escapes stay as written
        ("chroot '$HOME'", ["chroot", "$HOME"]),  # no expansion in strong quotes
        ('chroot "${JAIL}/x" "$JAIL"', ["chroot", "/srv/j/x", "/srv/j"]),
        ('user "" # empty word', ["user"]),  # an empty last word is an absent one
        ('chroot "" /x', ["chroot", "", "/x"]),
        ("a\vb\fc", ["a", "b", "c"]),  # \v and \f are blanks
        ("a\x1cb\u2028c", ["a\x1cb\u2028c"]),  # not blanks to haproxy
        ("chroot /a\r /b", ["chroot", "/a"]),  # \r ends the line
        ('log "${S-/dev/log}" "${JAIL[*]}"', ["log", "/dev/log", "/srv/j"]),
        ("x \\$HOME \\$HOME", ["x", "\\$HOME", "\\$HOME"]),  # \$ outside quotes stays
        ("#only a comment", []),
    ],
)
def test_split_line_follows_haproxy(line: str, words: list[str]) -> None:
    """Quoting, escapes, comments and variables as configuration.txt section 2.2 says."""
    assert split_line(line, {"JAIL": "/srv/j", "HOME": "/root"}) == words


def test_global_values_logs_and_binds() -> None:
    """chroot/user/uid/group/gid from global; unix log targets anywhere; binds of proxies."""
    cfg = parse_config(
        [
            (
                "a.cfg",
                "global\n  chroot /srv/jail\n  uid 99\n  group haproxy\n  log /dev/log local0\n"
                "  log 127.0.0.1:514 local1\n  log unix@/run/log.sock local2\n",
            ),
            (
                "b.cfg",
                "defaults\n  log /dev/log local0\nfrontend f\n  bind 127.0.0.1:443 ssl crt x\n"
                "backend b\n  bind 1.2.3.4:1\nlisten l\n  bind [::1]:8443\n",
            ),
        ],
        {},
    )
    assert (cfg.chroot, cfg.user, cfg.group) == (
        "/srv/jail",
        "+99",
        "haproxy",
    )  # uid: a number, as haproxy reads it
    assert cfg.log_sockets == ("/dev/log", "/run/log.sock")
    assert [(b.address, b.where) for b in cfg.binds] == [
        ("127.0.0.1:443", "b.cfg:4"),
        ("[::1]:8443", "b.cfg:8"),
    ]


def test_unsplittable_line_is_located() -> None:
    """An unterminated quote is a config error naming file and line."""
    with pytest.raises(ConfigError, match=r"h.cfg:3: unmatched quote"):
        parse_config([("h.cfg", 'global\n  user x\n  chroot "/srv\n')], {})


def test_conditional_blocks_are_evaluated() -> None:
    """.if/.elif/.else are evaluated as haproxy does: only the taken branch counts."""
    text = "global\n.if defined(X)\n  chroot /a\n.elif streq(a,a)\n  chroot /b\n"
    text += ".else\n chroot /c\n.endif\n"
    assert parse_config([("h.cfg", text)], {}).chroot == "/b"
    assert parse_config([("h.cfg", text)], {"X": ""}).chroot == "/a"


def test_read_config_reads_files(tmp_path: Path) -> None:
    """read_config reads the files it is given, in order (the first chroot wins, as haproxy)."""
    (tmp_path / "1.cfg").write_text("global\n  chroot /one\n")
    (tmp_path / "2.cfg").write_text("global\n  chroot /two\n")
    cfg = read_config([str(tmp_path / "1.cfg"), str(tmp_path / "2.cfg")], {})
    assert cfg.chroot == "/one"


KEYWORDS = [
    "global",
    "defaults",
    "frontend f",
    "chroot",
    "user",
    "group",
    "uid",
    "gid",
    "log",
    "bind",
    ".if",
    ".endif",
    "backend b",
    "listen l",
    "#",
]
PIECES = st.sampled_from(
    [
        *KEYWORDS,
        " ",
        "\t",
        '"',
        "'",
        "\\",
        "\\x4",
        "\\x41",
        "$",
        "${A}",
        "${",
        "/dev/log",
        "unix@",
        "127.0.0.1:80",
        "é",
        "\x00",
        "#x",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(PIECES, max_size=8).map("".join), max_size=12))
def test_mangled_configs_never_crash(lines: list[str]) -> None:
    """Any generated or mangled config: a result, or a ConfigError located at file:line."""
    try:
        cfg = parse_config([("gen.cfg", "\n".join(lines))], {"A": "x"})
    except ConfigError as exc:
        assert exc.sentence.startswith("haproxy configuration gen.cfg:")
        assert exc.facts["line"] >= 1  # type: ignore[operator]
    else:
        assert cfg.files == ("gen.cfg",)


SAFE_WORD = st.text(st.characters(blacklist_characters="'\n\r\x00"), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(SAFE_WORD, min_size=1, max_size=6))
def test_strongly_quoted_words_round_trip(words: list[str]) -> None:
    """Each word wrapped in single quotes comes back exactly (strong quoting)."""
    line = " ".join(f"'{w}'" for w in words)
    assert split_line(line, {}) == words


def test_a_directory_that_cannot_be_listed_is_a_config_error(area: Path) -> None:
    """-f DIR that cannot be listed: exit 78 naming the directory, no traceback."""
    conf = area / "conf.d"
    conf.mkdir(mode=0o700)
    # Owned by a uid that the user namespace below does not map: even its root cannot list
    # it, while the checkout and pytest's tree (root's) stay readable there.
    os.chown(conf, 12345, 12345)
    argv = ["run", "--dry-run", "--no-config-check", "--", "haproxy", "-f", str(conf)]
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", sys.executable, "-m", "jailshim", *argv],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 78, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"directory {conf} cannot be listed" in json.loads(proc.stderr)["error"]


_MODULES_AFTER_READ = """
import json, sys
from jailshim.daemons.haproxy import ADAPTER
ADAPTER.read(["/nonexistent/haproxy", "-f", sys.argv[1]], {})
print(json.dumps(sorted(m for m in sys.modules if m.startswith("jailshim.daemons.haproxy."))))
"""


def _haproxy_modules_after_read(config: Path) -> list[str]:
    """The haproxy package's modules a fresh interpreter has loaded after the adapter read
    ``config`` (a process of its own: this one has imported them all)."""
    proc = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER_READ, str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [m.rsplit(".", 1)[1] for m in json.loads(proc.stdout)]


def test_a_config_without_if_never_imports_the_conditions(tmp_path: Path) -> None:
    """The adapter runs at every start of haproxy: the `.if` parser and `haproxy -vv` facts
    are loaded for a configuration that has a `.if`, and only then (start-up time)."""
    plain = tmp_path / "plain.cfg"
    plain.write_text("global\n  chroot /j\n  log /dev/log local0\nfrontend f\n  bind :80\n")
    loaded = _haproxy_modules_after_read(plain)
    assert "conditions" not in loaded
    assert "facts" not in loaded
    assert "checker" not in loaded  # only `haproxy -c` needs it
    assert {"config", "tokenizer"} <= set(loaded)
    conditional = tmp_path / "if.cfg"
    conditional.write_text("global\n.if streq(a,a)\n  chroot /j\n.endif\n")
    assert {"conditions", "facts"} <= set(_haproxy_modules_after_read(conditional))
