"""TLS 1.3 handshakes per second through haproxy started by `jailshim run` against the same
haproxy started directly, same config, same run (rounds alternate; medians).

    .venv/bin/python -m bench.handshakes [ROUNDS] [SECONDS]   (default 7 rounds of 2 s each)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import PYTHON, machine, precompile, write_section


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(work: Path, name: str, pem: Path) -> tuple[Path, int]:
    jail, port = work / f"jail-{name}", _port()
    jail.mkdir(mode=0o755)
    cfg = work / f"{name}.cfg"
    cfg.write_text(
        f"global\n    chroot {jail}\n    user nobody\n    group nogroup\n    nbthread 1\n"
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n"
        f"    timeout server 30s\nfrontend tls\n    bind 127.0.0.1:{port} ssl crt {pem} "
        "ssl-min-ver TLSv1.3\n    tcp-request content reject\n"
    )
    return cfg, port


def _handshakes(port: int, seconds: float, ctx: ssl.SSLContext) -> float:
    done, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw):
            done += 1
    return done / (time.perf_counter() - start)


def _wait(port: int, ctx: ssl.SSLContext) -> None:
    for _ in range(200):
        try:
            _handshakes(port, 0.01, ctx)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"haproxy on {port} never answered")


def main(rounds: int, seconds: float) -> str:
    precompile()
    work = Path(tempfile.mkdtemp(prefix="jailshim-bench-"))
    work.chmod(0o755)
    pem = work / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(work / "k.pem"),
            "-out",
            str(work / "c.pem"),
            "-days",
            "2",
            "-subj",
            "/CN=bench",
        ],
        check=True,
        capture_output=True,
    )
    pem.write_bytes((work / "c.pem").read_bytes() + (work / "k.pem").read_bytes())
    via_cfg, via_port = _config(work, "jailshim", pem)
    direct_cfg, direct_port = _config(work, "direct", pem)
    haproxy = shutil.which("haproxy") or "haproxy"
    subprocess.run(
        [
            PYTHON,
            "-m",
            "jailshim",
            "prepare",
            "--chroot",
            str(work / "jail-direct"),
            "--log-level",
            "error",
        ],
        check=True,
    )
    procs = [
        subprocess.Popen(
            [
                PYTHON,
                "-m",
                "jailshim",
                "run",
                "--log-level",
                "error",
                "--",
                haproxy,
                "-f",
                str(via_cfg),
                "-db",
            ],
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen([haproxy, "-f", str(direct_cfg), "-db"], stderr=subprocess.DEVNULL),
    ]
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    rates: dict[str, list[float]] = {"jailshim": [], "direct": []}
    try:
        _wait(via_port, ctx)
        _wait(direct_port, ctx)
        for _ in range(rounds):
            rates["jailshim"].append(_handshakes(via_port, seconds, ctx))
            rates["direct"].append(_handshakes(direct_port, seconds, ctx))
    finally:
        for proc in procs:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait()
        for name in ("jailshim", "direct"):
            subprocess.run(
                [
                    PYTHON,
                    "-m",
                    "jailshim",
                    "teardown",
                    "--chroot",
                    str(work / f"jail-{name}"),
                    "--log-level",
                    "error",
                ],
                check=False,
            )
        shutil.rmtree(work, ignore_errors=True)
    via, direct = statistics.median(rates["jailshim"]), statistics.median(rates["direct"])
    return "\n".join(
        [
            f"Machine: {machine()}; {rounds} alternating rounds of {seconds:.0f} s, one client, "
            "haproxy nbthread 1, ECDSA P-256, TLS 1.3; median handshakes/s.",
            "",
            "| haproxy started | handshakes/s | ratio |",
            "| --- | ---: | ---: |",
            f"| directly | {direct:.0f} | 1.00 |",
            f"| by `jailshim run` (exec) | {via:.0f} | {via / direct:.3f} |",
            "",
            f"Target ratio ≥ 0.97: {'met' if via / direct >= 0.97 else 'not met'}.",
        ]
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    report = main(int(args[0]) if args else 7, float(args[1]) if len(args) > 1 else 2.0)
    print(report)
    write_section("TLS handshakes after hand-over", report)
