"""OpenSSL functions that ``cryptography``'s binding does not declare, found by symbol table.

Owns TLS 1.3 key update and the peer's signature scheme. ``SSL_key_update``,
``SSL_get_peer_signature_type_nid`` and ``SSL_ctrl`` are public OpenSSL API, linked into
``cryptography``'s ``_rust.abi3.so`` like every other OpenSSL function but hidden from its
dynamic symbol table, and absent from the binding's cffi ``lib``. We read their offsets from
the module's ELF ``.symtab`` once, rebase them on the runtime address of a function the binding
does expose (its cffi wrapper ``_cffi_d_SSL_version``), and check the rebasing on a second one
(``_cffi_d_SSL_get_error``) before any call. A stripped or non-ELF build leaves ``EXTRAS`` None:
key update then reports itself unavailable and the signature scheme as unknown; nothing else
depends on them. Should the binding ever declare these, this module shrinks to three calls.
Must not import asyncio, sockets or the rest of meshproxy.
"""

from __future__ import annotations

import re
import struct
from typing import Any, NamedTuple

import cryptography.hazmat.bindings._rust as _rust

from meshproxy.tls._openssl import ffi, lib
from meshproxy.tls.schemes import SCHEMES

SSL_CTRL_GET_PEER_SIGNATURE_NID = 108
SSL_KEY_UPDATE_REQUESTED = 1


class Extras(NamedTuple):
    key_update: Any  # int (*)(SSL *, int)
    peer_signature_type_nid: Any  # int (*)(const SSL *, int *)
    ssl_ctrl: Any  # long (*)(SSL *, int, long, void *)


def _elf_functions(path: str, names: tuple[str, ...]) -> dict[str, int]:
    """Offsets of the named functions in an ELF64 little-endian file's ``.symtab`` (unique names only)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != b"\x7fELF\x02\x01":
        return {}
    shoff, shentsize, shnum = struct.unpack_from("<Q", data, 0x28)[0], *struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    symtab = next((s for s in sections if s[1] == 2), None)  # SHT_SYMTAB
    if symtab is None:
        return {}
    strtab = sections[symtab[6]]
    strings = data[strtab[4] : strtab[4] + strtab[5]]
    # A name may also end a longer string (tail merging), so every occurrence is a candidate.
    wanted: dict[int, str] = {}
    for name in names:
        for m in re.finditer(re.escape(name.encode()) + b"\x00", strings):
            wanted[m.start()] = name
    found: dict[str, list[int]] = {}
    for st_name, st_info, _other, st_shndx, st_value, _size in struct.iter_unpack(
        "<IBBHQQ", data[symtab[4] : symtab[4] + symtab[5]]
    ):
        symbol = wanted.get(st_name)
        if symbol is not None and st_info & 0xF == 2 and st_shndx != 0:  # STT_FUNC, defined
            found.setdefault(symbol, []).append(st_value)
    return {name: values[0] for name, values in found.items() if len(values) == 1}


def _resolve_extras() -> Extras | None:
    targets = ("SSL_key_update", "SSL_get_peer_signature_type_nid", "SSL_ctrl")
    anchors = ("_cffi_d_SSL_version", "_cffi_d_SSL_get_error")
    try:
        offsets = _elf_functions(_rust.__file__, targets + anchors)
    except (OSError, struct.error, IndexError):
        return None
    if any(name not in offsets for name in targets + anchors):
        return None
    base = int(ffi.cast("uintptr_t", lib.SSL_version)) - offsets[anchors[0]]
    if base + offsets[anchors[1]] != int(ffi.cast("uintptr_t", lib.SSL_get_error)):
        return None
    return Extras(
        ffi.cast("int (*)(SSL *, int)", base + offsets[targets[0]]),
        ffi.cast("int (*)(const SSL *, int *)", base + offsets[targets[1]]),
        ffi.cast("long (*)(SSL *, int, long, void *)", base + offsets[targets[2]]),
    )


EXTRAS = _resolve_extras()


def key_update(ssl: Any) -> bool:
    """Schedule a TLS 1.3 KeyUpdate that asks the peer to update too (False: not available)."""
    if EXTRAS is None:
        return False
    return bool(EXTRAS.key_update(ssl, SSL_KEY_UPDATE_REQUESTED))


def _short_name(nid: int) -> str:
    name = lib.OBJ_nid2sn(nid) if nid else ffi.NULL
    return ffi.string(name).decode() if name != ffi.NULL else ""


def peer_signature_name(ssl: Any) -> str:
    """The scheme of the peer's CertificateVerify; "" when unknown (resumed, or no EXTRAS)."""
    if EXTRAS is None:
        return ""
    nid = ffi.new("int *")
    if not EXTRAS.peer_signature_type_nid(ssl, nid):
        return ""
    md = ffi.new("int *")
    EXTRAS.ssl_ctrl(ssl, SSL_CTRL_GET_PEER_SIGNATURE_NID, 0, md)
    key = (_short_name(nid[0]), _short_name(md[0]))
    return SCHEMES.get(key, "+".join(filter(None, key)).lower())
