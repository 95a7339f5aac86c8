"""Each run imports only what it needs: start-up time is part of the product (issue 28).

The module list of a real `python -m jailshim …` run is read with `python -v` ("import 'NAME'"
for every module any loader loads): `-X importtime` times only `import` statements, and the
adapters are loaded with importlib.import_module, which it does not list. Three runs, as
bench.startup measures them, each with the modules it must not load; and the modules the probe
child loads before chroot, which must not bring subprocess (its `ld.so --list` is spawned with
os.posix_spawn: tests below hold that runner's time-out, bound, stdin and fds).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jailshim.verify import libfind
from tests.support import clean_env, need

ADAPTERS = {
    f"jailshim.daemons.{n}"
    for n in ("named", "nsd", "ntpsec", "postfix", "stunnel", "unbound", "vsftpd")
}
NETWORK = {"pyroute2", "tenacity", "jailshim.verify.network"}
QUIET = ["--log-level", "error"]


def _loaded(*argv: str, python: tuple[str, ...] = ("-m", "jailshim")) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-v", *python, *argv],
        capture_output=True,
        text=True,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return set(re.findall(r"^import '([\w.]+)'", proc.stderr, re.M))


@pytest.fixture
def jail(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "jail"
    path.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    yield path


def test_a_run_with_a_jail_loads_no_adapter_and_no_network(jail: Path) -> None:
    loaded = _loaded("run", "--dry-run", "--chroot", str(jail), *QUIET, "--", "/bin/true")
    assert "jailshim.prepare" in loaded  # it did plan the jail
    assert not (ADAPTERS | NETWORK | {"jailshim.daemons.haproxy"}) & loaded


def test_a_haproxy_config_run_loads_its_adapter_only(tmp_path: Path, jail: Path) -> None:
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"global\n    chroot {jail}\n    user nobody\n    group nogroup\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
        "    timeout server 1s\nfrontend f\n    bind 127.0.0.1:18553\n"
        "    default_backend b\nbackend b\n    server s 127.0.0.1:9\n"
    )
    loaded = _loaded(
        "run", "--dry-run", "--haproxy-config", str(config), "--no-config-check", *QUIET,
        "--", "/bin/true",
    )  # fmt: skip
    assert "jailshim.daemons.haproxy" in loaded
    # its bind addresses are parsed (verify.network), never waited for in a dry run
    assert not (ADAPTERS | {"pyroute2", "tenacity", "jailshim.daemons.checkconf"}) & loaded


def test_init_without_a_jail_loads_no_front_end() -> None:
    loaded = _loaded("run", "--init", *QUIET, "--", "/bin/true")
    assert "jailshim.supervisor" in loaded
    front_end = {
        "structlog",
        "logging",
        "asyncio",
        "json",
        "subprocess",
        "jailshim.cli",
        "jailshim.log",
        "jailshim.files",
        "jailshim.spec",
        "jailshim.check",
        "jailshim.prepare",
        "jailshim.jail",
        "jailshim.verify",
        "jailshim.daemons.haproxy",
    }
    assert not (front_end | ADAPTERS | NETWORK) & loaded


def test_the_probe_child_spawns_the_loader_without_subprocess() -> None:
    # what _child loads before chroot: the reseeders, the loader's list, the needs
    loaded = _loaded(
        python=(
            "-c",
            "import jailshim.verify.probe, jailshim.verify.openssl, jailshim.verify.libfind, "
            "jailshim.verify.gnutls, jailshim.verify.entropy, jailshim.verify.needs",
        )
    )
    assert "jailshim.verify.libfind" in loaded
    assert not {"subprocess", "structlog", "asyncio"} & loaded


# the loader's list without subprocess: the same safety as subprocess.run gave -------------


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "loader"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_the_loader_list_reads_both_outputs(tmp_path: Path) -> None:
    loader = _script(tmp_path, 'echo "out $1 $2"; echo "err" >&2')
    assert libfind._loader_list(loader, "/usr/bin/x") == ("out --list /usr/bin/x\n", "err\n")


def test_the_loader_gets_no_stdin_and_no_inherited_fd(tmp_path: Path) -> None:
    loader = _script(tmp_path, "readlink /proc/$$/fd/0; ls /proc/$$/fd")
    kept = os.open(os.devnull, os.O_RDONLY)  # not close-on-exec: subprocess closed it too
    os.set_inheritable(kept, True)
    try:
        answer = libfind._loader_list(loader, "x")
    finally:
        os.close(kept)
    assert answer is not None
    lines = answer[0].split()
    assert lines[0] == "/dev/null"
    assert str(kept) not in lines[1:]  # the script's own fds: 0 1 2 and the one it reads


def test_a_hung_loader_is_killed_and_reaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader = _script(tmp_path, "echo started; exec sleep 30")
    monkeypatch.setattr(libfind, "_LIST_TIMEOUT", 0.5)
    began = time.monotonic()
    assert libfind._loader_list(loader, "x") is None
    assert time.monotonic() - began < 5
    with pytest.raises(ChildProcessError):  # reaped: no child left
        os.waitpid(-1, os.WNOHANG)


def test_a_loader_that_says_too_much_is_read_to_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loader = _script(tmp_path, "head -c 300000 /dev/zero | tr '\\0' x")
    monkeypatch.setattr(libfind, "_LIST_LIMIT", 100_000)
    answer = libfind._loader_list(loader, "x")
    assert answer is not None
    assert len(answer[0]) == 100_000


def test_a_loader_that_cannot_run_is_no_answer(tmp_path: Path) -> None:
    assert libfind._loader_list(str(tmp_path / "missing"), "x") is None


def test_the_real_loader_names_a_binarys_libcrypto() -> None:
    openssl = "/usr/bin/openssl"
    need(os.path.exists(openssl), "needs /usr/bin/openssl (Debian's openssl package)")
    libs, note = libfind.for_command(openssl)
    assert [lib.family for lib in libs] == ["OpenSSL"], note


def _with_loader(tmp_path: Path, loader: str) -> str:
    """A copy of /bin/true whose PT_INTERP names ``loader`` (never executed: only read)."""
    data = Path("/bin/true").read_bytes()
    interp = libfind._interpreter(data[:65536]).encode()
    assert interp and len(loader) <= len(interp)
    patched = tmp_path / "daemon"
    patched.write_bytes(data.replace(interp, loader.encode().ljust(len(interp), b"\0"), 1))
    return str(patched)


@pytest.fixture
def hang() -> Iterator[Path]:
    """A "loader" that never answers, at a path short enough for a PT_INTERP."""
    short = Path(tempfile.mkdtemp(prefix="jl", dir="/tmp"))
    path = short / "h"
    path.write_text("#!/bin/sh\nexec sleep 30\n")
    path.chmod(0o755)
    yield path
    shutil.rmtree(short)


def test_a_started_loader_not_read_is_killed_and_reaped(tmp_path: Path, hang: Path) -> None:
    listing = libfind.CommandLibraries(_with_loader(tmp_path, str(hang)))
    assert listing.loader == str(hang)
    began = time.monotonic()
    listing.cancel()
    assert time.monotonic() - began < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


def test_a_loader_past_its_deadline_is_no_list(
    tmp_path: Path, hang: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(libfind, "_LIST_TIMEOUT", 0.3)
    libs, note = libfind.CommandLibraries(_with_loader(tmp_path, str(hang))).result()
    assert libs == [] and "linked statically" in note  # as when the loader cannot run


def test_the_lookups_start_without_subprocess(tmp_path: Path) -> None:
    """The probe child's other helper process (the lookups as the daemon's user) is spawned
    the same way: the answer comes back, and subprocess was never loaded."""
    jail = tmp_path / "jail"
    jail.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    script = (
        "import json, sys\n"
        "from jailshim.verify import needs\n"
        "wanted = needs.Needs(resolve=('localhost',), services=True)\n"
        "lookups = needs.start_lookups(wanted, sys.argv[1], 65534, 65534, ())\n"
        "answers = needs._answers(lookups)\n"
        "print(json.dumps(['subprocess' in sys.modules, sorted(answers)]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(jail)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == '[false, ["resolve", "services"]]', proc.stderr


_EARLY_PROBE = """
import json, os, sys
from jailshim import handover
from jailshim.verify import probe

seen = {"check_at_fork": [], "cancelled": 0, "collected": 0}
init, cancel, collect = probe.Probe.__init__, probe.Probe.cancel, probe.Probe.collect

def forked(self, *args, **kwargs):
    seen["check_at_fork"].append("jailshim.check" in sys.modules)
    init(self, *args, **kwargs)

def cancelled(self):
    seen["cancelled"] += 1
    cancel(self)

def collected(self):
    seen["collected"] += 1
    return collect(self)

def leftover():
    try:
        return os.waitpid(-1, os.WNOHANG)[0] != 0 or "running"
    except ChildProcessError:
        return False

def handed_over(*_args, **_kwargs):  # instead of exec: report, and end as the exec would
    print(json.dumps({**seen, "code": 0, "child left": leftover()}), flush=True)
    os._exit(0)

probe.Probe.__init__, probe.Probe.cancel, probe.Probe.collect = forked, cancelled, collected
handover.exec_command = handed_over
from jailshim import cli
code = cli.main(sys.argv[1:])
print(json.dumps({**seen, "code": code, "child left": leftover()}))
"""


@pytest.mark.parametrize("jail_mode", [0o755, 0o777])
def test_run_forks_the_probe_before_check_after_the_checker_starts(
    tmp_path: Path, jail_mode: int
) -> None:
    """`run` forks the probe before check and the prepare modules are imported (issue 28: the
    child is the critical path), but after the daemon's checker is started (where there is one,
    `haproxy -c` is the longer path: forked first, the run took ~7 ms more); a jail refused
    for the checker (others can write it: 78) is refused before any probe is forked, and no
    child is left behind."""
    need(shutil.which("haproxy") is not None, "needs haproxy (its checker runs after the vet)")
    import json

    jail = tmp_path / "jail"
    jail.mkdir()
    jail.chmod(jail_mode)
    tmp_path.chmod(0o755)
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"global\n    chroot {jail}\n    user nobody\n    group nogroup\n"
        "defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1s\n"
        "    timeout server 1s\nfrontend f\n    bind 127.0.0.1:18553\n"
        "    default_backend b\nbackend b\n    server s 127.0.0.1:9\n"
    )
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _EARLY_PROBE, "run", "--haproxy-config", str(config),
             *QUIET, "--", "/bin/true"],
            capture_output=True, text=True, env=clean_env(), stdin=subprocess.DEVNULL,
            timeout=120, check=False,
        )  # fmt: skip
    finally:
        subprocess.run(
            [sys.executable, "-m", "jailshim", "teardown", "--chroot", str(jail), *QUIET],
            capture_output=True, env=clean_env(), check=False,
        )  # fmt: skip
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["child left"] is False
    if jail_mode == 0o777:
        assert (seen["code"], seen["check_at_fork"], seen["cancelled"]) == (78, [], 0)
        assert "writable by a non-root user" in proc.stderr
    else:
        assert seen["check_at_fork"] == [False], proc.stderr  # one probe, forked before check
        assert (seen["code"], seen["cancelled"], seen["collected"]) == (0, 0, 1)


def test_cryptolib_compiles_no_regex_until_a_name_needs_one() -> None:
    """The probe child classifies COMMAND's libraries before chroot (its critical path): the
    library-name and version patterns are compiled when a name could match, not at import."""
    script = (
        "import re\n"
        "calls = []\n"
        "for name in ('compile', 'match', 'search', 'fullmatch'):\n"
        "    def spy(*a, _f=getattr(re, name), **k):\n"
        "        calls.append(a[0])\n"
        "        return _f(*a, **k)\n"
        "    setattr(re, name, spy)\n"
        "from jailshim.verify import cryptolib\n"
        "assert [cryptolib.classify(n) for n in ('libc.so.6', 'libz.so.1')] == ['', '']\n"
        "assert not calls, calls\n"
        "assert cryptolib.classify('libcrypto-2ade47cd.so.1.1.1b') == cryptolib.OPENSSL\n"
        "assert cryptolib.classify('libcryptopp.so.8') == ''\n"
        "assert cryptolib.version_in(b'x OpenSSL 3.0.11 19 Sep 2023 y') == "
        "'OpenSSL 3.0.11 19 Sep 2023'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=clean_env(), check=False
    )
    assert proc.returncode == 0, proc.stderr
