"""Can OpenSSL reseed inside the jail? Asked of the process's own libcrypto through ctypes.

The probe loads libcrypto and instantiates the primary DRBG *before* chroot, as a daemon does,
then, inside the jail and as the daemon's user, closes any device fds OpenSSL kept open and
forces a reseed. That is the moment the seed-story daemon failed, an hour after start-up.
RAND_poll() is not used: on OpenSSL 3.0 it returns 1 even when the reseed failed.
"""

from __future__ import annotations

import ctypes

from jailshim.verify.findings import Finding

__all__ = ["OpenSSLProbe"]

_REMEDY = "provide dev/urandom and dev/random in the jail (`jailshim prepare`)"


_SONAMES = ("libcrypto.so.3", "libcrypto.so.1.1", "libcrypto.so")


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
    """Two halves: ``__init__`` outside the jail, ``reseed`` inside it."""

    def __init__(self) -> None:
        self.skip_reason = ""
        self.version = ""
        self._lib: ctypes.CDLL | None = None
        self._primary: int | None = None
        lib, name = _load_libcrypto()
        if lib is None:
            self.skip_reason = "no libcrypto found on this host"
            return
        try:
            version = lib.OpenSSL_version
            version.restype = ctypes.c_char_p
            version.argtypes = [ctypes.c_int]
            self.version = (version(0) or b"").decode()
            get_primary = lib.RAND_get0_primary
            self._reseed = lib.EVP_RAND_reseed
        except (OSError, AttributeError):
            self.skip_reason = f"{name} is older than OpenSSL 3 (no EVP_RAND_reseed)"
            return
        get_primary.restype = ctypes.c_void_p
        get_primary.argtypes = [ctypes.c_void_p]
        self._reseed.restype = ctypes.c_int
        self._reseed.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
        ]
        lib.RAND_keep_random_devices_open.argtypes = [ctypes.c_int]
        lib.RAND_keep_random_devices_open.restype = None
        lib.ERR_get_error.restype = ctypes.c_ulong
        lib.ERR_error_string_n.argtypes = [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t]
        lib.ERR_error_string_n.restype = None
        self._primary = get_primary(None)  # instantiates and seeds, outside the jail
        self._lib = lib
        if not self._primary:
            self.skip_reason = f"{self.version}: no primary DRBG before chroot ({self._errors()})"

    def _errors(self) -> str:
        lib = self._lib
        if lib is None:
            return ""
        texts, buf = [], ctypes.create_string_buffer(256)
        while code := lib.ERR_get_error():
            lib.ERR_error_string_n(code, buf, len(buf))
            texts.append(buf.value.decode(errors="replace"))
        return "; ".join(texts)

    def reseed(self) -> Finding:
        """Inside the jail: force a reseed of the primary DRBG from the OS entropy source."""
        if self._lib is None or not self._primary:
            return Finding("OpenSSL reseed", True, f"skipped: {self.skip_reason}", warning=True)
        self._lib.RAND_keep_random_devices_open(0)
        self._errors()  # start from an empty error queue
        if self._reseed(self._primary, 0, None, 0, None, 0) == 1:
            return Finding(
                "OpenSSL reseed", True, f"{self.version}: primary DRBG reseeded in the jail"
            )
        return Finding(
            "OpenSSL reseed",
            False,
            f"{self.version}: reseeding the primary DRBG failed in the jail: "
            f"{self._errors() or 'no error text'}",
            _REMEDY,
        )
