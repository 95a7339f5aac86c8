"""What a container user waits for: `podman run` to the first DNS-over-TLS answer.

The Containerfile's image (jailshim as ENTRYPOINT, preparing and verifying the jail at every
start) against the same image with the device nodes baked into the jail and haproxy itself as
ENTRYPOINT (what one would do without jailshim). Both run with --network=none and CAP_MKNOD;
the clock stops when a client inside the container (started with `podman exec` right after
`podman run -d` returns, polling every 5 ms) gets its answer from haproxy, which forwards to a
DNS backend in the same client process. Interleaved runs, medians.

sudo .venv/bin/python -m bench.container_start [RUNS]    (default 10; root, podman, runc)
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, machine, write_section

BASE = "localhost/debian:bookworm-local"  # tests/test_containers.py imports it (debootstrap)
JAILSHIM_IMAGE = "localhost/jailshim-haproxy:bench"
BAKED_IMAGE = "localhost/jailshim-haproxy:bench-baked"
TARGET = 1.10

BAKED = f"""FROM {JAILSHIM_IMAGE}
RUN mknod -m 0666 /var/lib/haproxy/dev/urandom c 1 9 \\
 && mknod -m 0666 /var/lib/haproxy/dev/random c 1 8 \\
 && mknod -m 0666 /var/lib/haproxy/dev/null c 1 3
ENTRYPOINT ["haproxy"]
CMD ["-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]
"""

# Runs in the container: a DNS backend on 127.0.0.1:5300 (a thread), then DoT queries to
# haproxy on 127.0.0.1:853 every 5 ms until one is answered; prints the answer's address.
CLIENT = r"""
import socket, ssl, struct, sys, threading, time
ANSWER = bytes([192, 0, 2, 53])
Q = b"\x05hello\x04demo\x08jailshim\x00" + struct.pack("!HH", 1, 1)
def read(c):
    n = struct.unpack("!H", c.recv(2))[0]; d = b""
    while len(d) < n: d += c.recv(n - len(d))
    return d
def serve(s):
    while True:
        c, _ = s.accept()
        with c:
            q = read(c)
            r = q[:2] + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + q[12:]
            r += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + ANSWER
            c.sendall(struct.pack("!H", len(r)) + r)
s = socket.create_server(("127.0.0.1", 5300))
threading.Thread(target=serve, args=(s,), daemon=True).start()
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
msg = struct.pack("!HHHHHH", 0x4A53, 0x0100, 1, 0, 0, 0) + Q
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", 853), timeout=3) as raw, \
                ctx.wrap_socket(raw) as t:
            t.sendall(struct.pack("!H", len(msg)) + msg)
            if ANSWER in read(t)[12 + len(Q):]:
                print("192.0.2.53"); sys.exit(0)
    except OSError:
        time.sleep(0.005)
sys.exit(1)
"""


def _podman(*args: str, env: dict[str, str], stdin: bytes | None = None) -> str:
    proc = subprocess.run(
        ["podman", *args], input=stdin, capture_output=True, env=env, timeout=900, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"podman {' '.join(args[:3])} … failed ({proc.returncode}): "
            + proc.stderr.decode(errors="replace")[-2000:]
        )
    return proc.stdout.decode()


def _build(env: dict[str, str], work: Path) -> None:
    if subprocess.run(["podman", "image", "exists", BASE], env=env, check=False).returncode:
        raise SystemExit(f"{BASE} is missing: run the container tests once (they import it).")
    _podman(
        *("build", "-q", "--build-arg", f"BASE={BASE}", "-t", JAILSHIM_IMAGE),
        *("-f", str(REPO / "Containerfile"), str(REPO)),
        env=env,
    )
    (work / "Containerfile").write_text(BAKED)
    _podman("build", "-q", "-t", BAKED_IMAGE, "-f", str(work / "Containerfile"), str(work), env=env)


def _one_start(image: tuple[str, ...], name: str, pem: Path, env: dict[str, str]) -> float:
    """Seconds from `podman run -d` to the first DoT answer; the container is removed after."""
    start = time.perf_counter()
    try:
        _podman(
            *("run", "-d", "--name", name, "--network=none", "--cap-add=MKNOD"),
            *("-v", f"{pem}:/etc/haproxy/certs/dot.pem:ro"),
            *("-e", "DNS_UPSTREAM=127.0.0.1:5300", "-e", "DOT_BIND=127.0.0.1:853"),
            *image,
            env=env,
        )
        answer = _podman("exec", name, "python3", "-c", CLIENT, env=env)
        elapsed = time.perf_counter() - start
        if answer.strip() != "192.0.2.53":
            raise SystemExit(f"{image[-1]}: no DoT answer: {answer!r}")
        return elapsed
    finally:
        subprocess.run(
            ["podman", "rm", "-f", "-t", "0", name], env=env, capture_output=True, check=False
        )


def main(runs: int) -> str:
    if os.geteuid() != 0 or shutil.which("podman") is None:
        raise SystemExit("bench.container_start needs root and podman (scripts/bootstrap.sh).")
    env = {**os.environ, "CONTAINERS_CONF": str(REPO / "tests" / "podman" / "containers.conf")}
    work = Path(tempfile.mkdtemp(prefix="jailshim-bench-", dir="/tmp"))
    work.chmod(0o755)
    try:
        key, cert, pem = work / "key.pem", work / "cert.pem", work / "dot.pem"
        subprocess.run(
            [
                *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes"),
                *("-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"),
            ],
            check=True,
            capture_output=True,
        )
        pem.write_bytes(cert.read_bytes() + key.read_bytes())
        pem.chmod(0o644)
        _build(env, work)
        images: dict[str, tuple[str, ...]] = {
            "jailshim ENTRYPOINT (prepare + verify)": (JAILSHIM_IMAGE,),
            "nodes baked in, haproxy ENTRYPOINT": (BAKED_IMAGE,),
            # where the difference goes: without run's `haproxy -c` of the config
            "jailshim ENTRYPOINT, JAILSHIM_NO_CONFIG_CHECK=1": (
                "-e",
                "JAILSHIM_NO_CONFIG_CHECK=1",
                JAILSHIM_IMAGE,
            ),
        }
        samples: dict[str, list[float]] = {label: [] for label in images}
        for image in images.values():  # one untimed start each: caches warm alike
            _one_start(image, f"jailshim-bench-{os.getpid()}-warmup", pem, env)
        for i in range(runs):
            for label, image in images.items():
                name = f"jailshim-bench-{os.getpid()}-{i}"
                samples[label].append(_one_start(image, name, pem, env))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {label: statistics.median(values) for label, values in samples.items()}
    jailshim, baked = (
        medians["jailshim ENTRYPOINT (prepare + verify)"],
        medians["nodes baked in, haproxy ENTRYPOINT"],
    )
    ratio = jailshim / baked
    lines = [
        f"Machine: {machine()}; podman {_version(env)} (runc), --network=none, --cap-add=MKNOD;",
        f"{runs} runs each, interleaved; `podman run -d` to the first DoT answer, median ms.",
        "",
        "| image | median ms | min | max |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, values in samples.items():
        lines.append(
            f"| {label} | {medians[label] * 1000:.0f} | {min(values) * 1000:.0f} | "
            f"{max(values) * 1000:.0f} |"
        )
    lines += [
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
        f"| jailshim ≤ {TARGET:.2f} × baked nodes | {ratio:.2f} × "
        f"(+{(jailshim - baked) * 1000:.0f} ms) | {'yes' if ratio <= TARGET else 'no'} |",
    ]
    return "\n".join(lines)


def _version(env: dict[str, str]) -> str:
    return _podman("version", "--format", "{{.Client.Version}}", env=env).strip()


if __name__ == "__main__":
    report = main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
    print(report)
    write_section("Container start to first answer", report)
