"""Can OpenSSL reseed inside the jail? Asked of the daemon's own libcrypto through ctypes.

The probe loads libcrypto and instantiates the primary DRBG *before* chroot, as a daemon does,
then, inside the jail and as the daemon's user, closes any device fds OpenSSL kept open and
forces a reseed. That is the moment the seed-story daemon failed, an hour after start-up.

- OpenSSL 3.x: EVP_RAND_reseed(RAND_get0_primary(NULL), prediction_resistance=0, …).
  RAND_poll() is not used: on OpenSSL 3.0 it returns 1 even when the reseed failed.
- OpenSSL 1.1.1: RAND_DRBG_reseed(RAND_DRBG_get0_master(), NULL, 0, 0) (prediction
  resistance is not supported on the master in 1.1.1).
Either way RAND_keep_random_devices_open(0) first: the fd kept from before chroot would
otherwise hide a jail without the node.
"""

from __future__ import annotations

import ctypes

from jailshim.verify import libfind
from jailshim.verify.cryptolib import CryptoLib, short_version
from jailshim.verify.findings import Finding

# the entropy row says which of the two (verdict.decide); this is what is left without one
_SEED_REMEDY = (
    "let the library seed: allow getrandom() in the daemon's seccomp filter, or provide the "
    "devices it reads (the entropy row says which)"
)

__all__ = ["OpenSSLProbe"]

_REMEDY = "provide dev/urandom and dev/random in the jail (`jailshim prepare`)"
_SONAMES = ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so")
_INIT_LOAD_CRYPTO_STRINGS = 0x02  # OPENSSL_INIT_LOAD_CRYPTO_STRINGS: 1.1.1 loads none unasked


def _load_libcrypto() -> tuple[ctypes.CDLL | None, str]:
    """The host's libcrypto by soname (find_library would run `ldconfig -p`: slow)."""
    for name in _SONAMES:
        try:
            return ctypes.CDLL(name), name
        except OSError:
            continue
    from ctypes import util

    name = util.find_library("crypto") or ""
    try:
        return (ctypes.CDLL(name), name) if name else (None, "")
    except OSError:
        return None, ""


class OpenSSLProbe:
    """Two halves: ``__init__`` outside the jail, ``reseed`` inside it.

    With ``lib`` (the daemon's own libcrypto) the finding is named after its version
    ("OpenSSL 1.1.1r reseed") and says its file; without, the host's default libcrypto is
    probed under the name "OpenSSL reseed".
    """

    def __init__(self, lib: CryptoLib | None = None) -> None:
        self.skip_reason = ""  # this library cannot be probed (no libcrypto, no DRBG API)
        self.seed_error = ""  # it could not even seed before chroot: the daemon would not start
        self.version = ""
        self.check = "OpenSSL reseed"
        self._name = self._path = ""
        self._lib: ctypes.CDLL | None = None
        self._primary: int | None = None
        self._api = ""
        if lib is None:
            loaded, name = _load_libcrypto()
            if loaded is None:
                self.skip_reason = "no libcrypto found on this host"
                return
        else:
            name = lib.name
            self._name, self._path = lib.name, lib.path
            if lib.version:
                self.check = f"{short_version(lib.version)} reseed"
            try:
                loaded = libfind.load(lib)
            except OSError as exc:
                self.skip_reason = f"{lib.name} at {lib.path} could not be loaded ({exc})"
                return
        self._setup(loaded, name, lib is not None)

    def _setup(self, lib: ctypes.CDLL, name: str, named: bool) -> None:
        try:
            version = lib.OpenSSL_version
        except AttributeError:
            self.skip_reason = f"{name} is older than OpenSSL 1.1.1 (no DRBG to reseed)"
            return
        version.restype = ctypes.c_char_p
        version.argtypes = [ctypes.c_int]
        self.version = (version(0) or b"").decode(errors="replace")
        if named:
            self.check = f"{short_version(self.version)} reseed"
        lib.ERR_get_error.restype = ctypes.c_ulong
        lib.ERR_error_string_n.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t]
        lib.ERR_error_string_n.restype = None
        if hasattr(lib, "EVP_RAND_reseed"):
            self._api = "3"
            get_primary = lib.RAND_get0_primary
            get_primary.argtypes = [ctypes.c_void_p]
            self._reseed = lib.EVP_RAND_reseed
            self._reseed.argtypes = [
                ctypes.c_void_p,
                ctypes.c_int,
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_void_p,
                ctypes.c_size_t,
            ]
        elif hasattr(lib, "RAND_DRBG_reseed"):
            self._api = "1.1.1"
            init = lib.OPENSSL_init_crypto
            init.argtypes = [ctypes.c_uint64, ctypes.c_void_p]
            init(_INIT_LOAD_CRYPTO_STRINGS, None)  # before chroot: its error texts
            get_primary = lib.RAND_DRBG_get0_master
            get_primary.argtypes = []
            self._reseed = lib.RAND_DRBG_reseed
            self._reseed.argtypes = [
                ctypes.c_void_p,
                ctypes.c_void_p,
                ctypes.c_size_t,
                ctypes.c_int,
            ]
        else:
            self.skip_reason = f"{self.version} has no DRBG reseed call jailshim knows"
            return
        get_primary.restype = ctypes.c_void_p
        self._reseed.restype = ctypes.c_int
        lib.RAND_keep_random_devices_open.argtypes = [ctypes.c_int]
        lib.RAND_keep_random_devices_open.restype = None
        self._lib = lib
        # instantiates and seeds, outside the jail
        self._primary = get_primary(None) if self._api == "3" else get_primary()
        if not self._primary:
            self.seed_error = self._errors() or "no error text"

    def _errors(self) -> str:
        lib = self._lib
        if lib is None:
            return ""
        texts, buf = [], ctypes.create_string_buffer(256)
        while code := lib.ERR_get_error():
            lib.ERR_error_string_n(code, buf, len(buf))
            texts.append(buf.value.decode(errors="replace"))
        return "; ".join(texts)

    def _subject(self) -> str:
        if not self._name:
            return self.version
        return f"{self._name} ({self.version}) at {self._path}"

    def reseed(self) -> Finding:
        """Inside the jail: force a reseed of the primary DRBG from the OS entropy source."""
        drbg = "master" if self._api == "1.1.1" else "primary"
        if self.seed_error:
            # issue 23: this was "ok, skipped", and check passed a daemon that cannot start
            return Finding(
                self.check,
                False,
                f"{self._subject()}: no {drbg} DRBG could be seeded even before chroot "
                f"({self.seed_error}): the daemon would not start",
                _SEED_REMEDY,
                whose="probe",
            )
        if self._lib is None or not self._primary:
            return Finding(
                self.check, True, f"skipped: {self.skip_reason}", warning=True, whose="probe"
            )
        self._lib.RAND_keep_random_devices_open(0)
        self._errors()  # start from an empty error queue
        if self._api == "3":
            ok = self._reseed(self._primary, 0, None, 0, None, 0) == 1
        else:
            ok = self._reseed(self._primary, None, 0, 0) == 1
        if ok:
            return Finding(
                self.check,
                True,
                f"{self._subject()}: {drbg} DRBG reseeded in the jail",
                whose="probe",
            )
        return Finding(
            self.check,
            False,
            f"{self._subject()}: reseeding the {drbg} DRBG failed in the jail: "
            f"{self._errors() or 'no error text'}",
            _REMEDY,
            whose="probe",
        )
