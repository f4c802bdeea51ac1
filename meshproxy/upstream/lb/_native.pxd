# cython: language_level=3
"""C helpers the compiled pickers inline: request-hash conversion, splitmix64 and XXH64.

Header-only (``cdef inline`` bodies, no module of its own). Each function is the C twin of a
Python reference: ``splitmix64`` of ``_common.splitmix64``, ``xxh64`` of
``_ring_hash_py.xxhash64``, ``request_hash`` of ``_common.check_hash``; tests compare their outputs bit for bit. Unsigned 64-bit arithmetic
wraps modulo 2**64, which is exactly what both algorithms specify.
"""

from cpython.long cimport PyLong_AsUnsignedLongLong, PyLong_Check
from cpython.number cimport PyNumber_Index
from libc.stdint cimport uint8_t, uint64_t


cdef inline uint64_t request_hash(object hash) except? 0xFFFFFFFFFFFFFFFFULL:
    """``hash`` as a uint64, as ``_common.check_hash`` takes it: an int (or an object with
    ``__index__``) in [0, 2**64); OverflowError outside, TypeError for anything else."""
    if not PyLong_Check(hash):
        hash = PyNumber_Index(hash)
    return PyLong_AsUnsignedLongLong(hash)


cdef inline uint64_t splitmix64(uint64_t* state) noexcept nogil:
    cdef uint64_t z
    state[0] += 0x9E3779B97F4A7C15ULL
    z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)


cdef inline uint64_t _rotl(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t _read64(const uint8_t* p) noexcept nogil:
    # Little-endian whatever the host order (XXH64 is defined on little-endian words).
    return (<uint64_t>p[0] | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16) | (<uint64_t>p[3] << 24)
            | (<uint64_t>p[4] << 32) | (<uint64_t>p[5] << 40) | (<uint64_t>p[6] << 48)
            | (<uint64_t>p[7] << 56))


cdef inline uint64_t _read32(const uint8_t* p) noexcept nogil:
    return <uint64_t>p[0] | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16) | (<uint64_t>p[3] << 24)


cdef inline uint64_t _round(uint64_t acc, uint64_t lane) noexcept nogil:
    acc += lane * 14029467366897019727ULL
    acc = _rotl(acc, 31)
    return acc * 11400714785074694791ULL


cdef inline uint64_t _merge(uint64_t acc, uint64_t v) noexcept nogil:
    acc ^= _round(0, v)
    return acc * 11400714785074694791ULL + 9650029242287828579ULL


cdef inline uint64_t xxh64(const uint8_t* p, size_t length, uint64_t seed) noexcept nogil:
    """XXH64 of ``length`` bytes at ``p`` (the reference algorithm, xxHash spec section 2)."""
    cdef const uint8_t* end = p + length
    cdef uint64_t h, v1, v2, v3, v4
    if length >= 32:
        v1 = seed + 11400714785074694791ULL + 14029467366897019727ULL
        v2 = seed + 14029467366897019727ULL
        v3 = seed
        v4 = seed - 11400714785074694791ULL
        while p + 32 <= end:
            v1 = _round(v1, _read64(p))
            v2 = _round(v2, _read64(p + 8))
            v3 = _round(v3, _read64(p + 16))
            v4 = _round(v4, _read64(p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge(h, v1)
        h = _merge(h, v2)
        h = _merge(h, v3)
        h = _merge(h, v4)
    else:
        h = seed + 2870177450012600261ULL
    h += <uint64_t>length
    while p + 8 <= end:
        h ^= _round(0, _read64(p))
        h = _rotl(h, 27) * 11400714785074694791ULL + 9650029242287828579ULL
        p += 8
    if p + 4 <= end:
        h ^= _read32(p) * 11400714785074694791ULL
        h = _rotl(h, 23) * 14029467366897019727ULL + 1609587929392839161ULL
        p += 4
    while p < end:
        h ^= p[0] * 2870177450012600261ULL
        h = _rotl(h, 11) * 11400714785074694791ULL
        p += 1
    h ^= h >> 33
    h *= 14029467366897019727ULL
    h ^= h >> 29
    h *= 1609587929392839161ULL
    h ^= h >> 32
    return h
