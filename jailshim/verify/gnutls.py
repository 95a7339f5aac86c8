"""Can GnuTLS reseed inside the jail? Asked of the daemon's own libgnutls through ctypes.

GnuTLS 3.7 (lib/nettle/sysrng-linux.c) picks its system source once, at library load: getrandom()
when it answers, else /dev/urandom, which it then opens and closes at every reseed. Its
generators (lib/nettle/rnd.c) reseed from that source after 2 hours or 2 MB, or when
gnutls_rnd_refresh() pushes their counters past the limit. gnutls_rnd_refresh() returns
nothing, so the probe calls it, then gnutls_rnd(GNUTLS_RND_RANDOM): if the refresh could not
reseed, the counter is still past the limit and this call goes back to the source again and
returns its error (GNUTLS_E_RANDOM_DEVICE_ERROR, -342).
"""

from __future__ import annotations

import ctypes

from jailshim.verify import libfind
from jailshim.verify.cryptolib import CryptoLib
from jailshim.verify.findings import Finding

# the entropy row says which of the two (verdict.decide); this is what is left without one
_SEED_REMEDY = (
    "let the library seed: allow getrandom() in the daemon's seccomp filter, or provide the "
    "devices it reads (the entropy row says which)"
)

__all__ = ["GnuTLSProbe"]

_RND_RANDOM = 1  # GNUTLS_RND_RANDOM
_REMEDY = "provide dev/urandom in the jail (`jailshim prepare`)"


class GnuTLSProbe:
    """Two halves: ``__init__`` outside the jail (load, first draw), ``reseed`` inside it."""

    def __init__(self, lib: CryptoLib) -> None:
        self.skip_reason = ""  # this library cannot be probed
        self.seed_error = ""  # it gave no random bytes even before chroot
        self.version = lib.version
        self.check = "GnuTLS reseed"
        self._name, self._path = lib.name, lib.path
        self._lib: ctypes.CDLL | None = None
        try:
            loaded = libfind.load(lib)
            check_version = loaded.gnutls_check_version
            check_version.restype = ctypes.c_char_p
            check_version.argtypes = [ctypes.c_char_p]
            self.version = f"GnuTLS {(check_version(None) or b'').decode(errors='replace')}"
            loaded.gnutls_rnd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
            loaded.gnutls_rnd.restype = ctypes.c_int
            loaded.gnutls_rnd_refresh.argtypes = []
            loaded.gnutls_rnd_refresh.restype = None
            loaded.gnutls_strerror.argtypes = [ctypes.c_int]
            loaded.gnutls_strerror.restype = ctypes.c_char_p
        except (OSError, AttributeError) as exc:
            self.skip_reason = f"{lib.name} at {lib.path} could not be used ({exc})"
            return
        self.check = f"{self.version} reseed"
        buf = ctypes.create_string_buffer(16)
        # outside the jail, as the daemon did: this thread's generators are seeded now
        code = loaded.gnutls_rnd(_RND_RANDOM, buf, len(buf))
        if code < 0:
            self.seed_error = self._text(loaded, code)
            return
        self._lib = loaded

    @staticmethod
    def _text(lib: ctypes.CDLL, code: int) -> str:
        return f"{(lib.gnutls_strerror(code) or b'').decode(errors='replace')} ({code})"

    def reseed(self) -> Finding:
        subject = f"{self._name} ({self.version}) at {self._path}"
        if self.seed_error:
            return Finding(
                self.check,
                False,
                f"{subject}: no random bytes even before chroot ({self.seed_error}): the "
                "daemon would not start",
                _SEED_REMEDY,
                whose="probe",
            )
        lib = self._lib
        if lib is None:
            return Finding(
                self.check, True, f"skipped: {self.skip_reason}", warning=True, whose="probe"
            )
        buf = ctypes.create_string_buffer(16)
        lib.gnutls_rnd_refresh()
        code = lib.gnutls_rnd(_RND_RANDOM, buf, len(buf))
        if code == 0:
            return Finding(
                self.check, True, f"{subject}: generators reseeded in the jail", whose="probe"
            )
        return Finding(
            self.check,
            False,
            f"{subject}: reseeding failed in the jail: {self._text(lib, code)}",
            _REMEDY,
            whose="probe",
        )
