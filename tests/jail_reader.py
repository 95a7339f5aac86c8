"""Enter a jail as a given user and report what one device there is and what it reads.

    python jail_reader.py JAIL NAME UID GID  ->  one JSON line on stdout

Used by tests to prove a node works the way the daemon will use it: from inside the chroot,
as an unprivileged user, never as the root that prepared it.
"""

from __future__ import annotations

import json
import os
import stat
import sys


def main(jail: str, name: str, uid: int, gid: int) -> int:
    os.chroot(jail)
    os.chdir("/")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    report: dict[str, object] = {"uid": os.getuid()}
    try:
        st = os.lstat(f"/dev/{name}")
        report["chr"] = stat.S_ISCHR(st.st_mode)
        report["numbers"] = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_NOFOLLOW)
        report["read"] = os.read(fd, 32).hex()
        os.close(fd)
    except OSError as exc:
        report["error"] = f"{exc.errno}:{exc.strerror}"
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
