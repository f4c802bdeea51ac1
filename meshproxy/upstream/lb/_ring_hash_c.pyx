# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Ring-hash picker and XXH64 in C: the compiled twin of ``_ring_hash_py.py``.

Owns only building the ring's entries and the binary search. Sizing, key order and validation
are the Python twin's :func:`ring_plan`, so both twins build the same ring; XXH64 is
``_native.xxh64``. The ring is one malloc'd array of ``(hash, host)`` pairs sorted by ``qsort``
on the same order as the twin's tuples, then split into a hash array (searched) and a host array
(read once per pick), both freed in ``__dealloc__``.
"""

cimport cython
from libc.stdint cimport int32_t, uint8_t, uint64_t
from libc.stdlib cimport free, malloc, qsort
from libc.string cimport memcpy

from meshproxy.upstream.lb._native cimport request_hash, xxh64

import operator

from meshproxy.upstream.lb._common import MASK64
from meshproxy.upstream.lb._ring_hash_py import MAX_RING_SIZE, ring_plan


ctypedef struct RingEntry:
    uint64_t hash
    Py_ssize_t host


cdef int _compare(const void* a, const void* b) noexcept nogil:
    cdef const RingEntry* x = <const RingEntry*>a
    cdef const RingEntry* y = <const RingEntry*>b
    if x.hash != y.hash:
        return -1 if x.hash < y.hash else 1
    return (x.host > y.host) - (x.host < y.host)


def xxhash64(data, seed=0):
    """XXH64 of ``data`` with ``seed`` (any int; taken modulo 2**64 as the twin does)."""
    if not isinstance(data, bytes):
        raise TypeError(f"xxhash64 hashes bytes, not {type(data).__name__}")
    cdef uint64_t s = <uint64_t>(operator.index(seed) & MASK64)
    cdef const char* p = <bytes>data
    return xxh64(<const uint8_t*>p, len(<bytes>data), s)


cdef Py_ssize_t _decimal(char* out, uint64_t value) noexcept nogil:
    """Write ``value`` in decimal at ``out``; return the number of characters."""
    cdef char digits[24]
    cdef Py_ssize_t n = 0, i
    while True:
        digits[n] = <char>(48 + value % 10)
        n += 1
        value //= 10
        if value == 0:
            break
    for i in range(n):
        out[i] = digits[n - 1 - i]
    return n


@cython.final
cdef class RingHash:
    cdef Py_ssize_t _n
    cdef Py_ssize_t _size
    cdef uint64_t* _hashes
    cdef int32_t* _hosts

    def __cinit__(self):
        self._hashes = NULL
        self._hosts = NULL

    def __init__(self, keys, weights, minimum_ring_size=1024, maximum_ring_size=MAX_RING_SIZE):
        cdef Py_ssize_t size = 0, at = 0, i, count, host, klen, longest = 0
        cdef RingEntry* ring = NULL
        cdef char* buf = NULL
        cdef const char* kp
        plan = ring_plan(keys, weights, minimum_ring_size, maximum_ring_size)
        free(self._hashes)  # __init__ may run again on a live object
        free(self._hosts)
        self._hashes = NULL
        self._hosts = NULL
        self._n = self._size = 0
        for _, key, count in plan:
            size += count
            longest = max(longest, len(key))
        try:
            ring = <RingEntry*>malloc(max(size, 1) * sizeof(RingEntry))
            buf = <char*>malloc(longest + 24)
            self._hashes = <uint64_t*>malloc(max(size, 1) * sizeof(uint64_t))
            self._hosts = <int32_t*>malloc(max(size, 1) * sizeof(int32_t))
            if ring == NULL or buf == NULL or self._hashes == NULL or self._hosts == NULL:
                raise MemoryError()
            for host, key, count in plan:
                kp = key
                klen = len(key)
                memcpy(buf, kp, klen)
                buf[klen] = 95  # "_"
                for i in range(count):
                    ring[at].hash = xxh64(<const uint8_t*>buf, klen + 1 + _decimal(buf + klen + 1, i), 0)
                    ring[at].host = host
                    at += 1
            qsort(ring, size, sizeof(RingEntry), _compare)
            for i in range(size):
                self._hashes[i] = ring[i].hash
                self._hosts[i] = <int32_t>ring[i].host
        finally:
            free(ring)
            free(buf)
        self._size = size
        self._n = len(plan)

    def __dealloc__(self):
        free(self._hashes)
        free(self._hosts)

    def __len__(self):
        return self._n

    @property
    def ring_size(self):
        """Entries on the ring (Envoy's ``size`` gauge)."""
        return self._size

    cpdef Py_ssize_t pick(self, hash) except -1:
        """The host of the first ring entry whose hash is >= ``hash`` (an int in [0, 2**64))."""
        cdef uint64_t h = request_hash(hash)
        cdef Py_ssize_t lo = 0, hi = self._size, mid
        while lo < hi:  # bisect_left
            mid = (lo + hi) >> 1
            if self._hashes[mid] < h:
                lo = mid + 1
            else:
                hi = mid
        return self._hosts[lo] if lo < self._size else self._hosts[0]
