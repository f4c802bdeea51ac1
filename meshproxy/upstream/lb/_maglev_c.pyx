# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Maglev picker in C: the compiled twin of ``_maglev_py.py``.

Owns only the table population loop and the lookup. Validation, population order, offsets and
skips are the Python twin's :func:`validated`; the loop is its ``populate`` in C, so both build
the same table (a test compares them). The table is one malloc'd int32 array of M slots, freed in
``__dealloc__``; the per-host build state is freed before ``__init__`` returns.
"""

cimport cython
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc

from meshproxy.upstream.lb._native cimport request_hash

from meshproxy.upstream.lb._maglev_py import validated


ctypedef struct BuildEntry:
    Py_ssize_t host
    uint64_t offset
    uint64_t skip
    uint64_t next
    int64_t weight
    int64_t target


cdef void _populate(int32_t* table, uint64_t m, BuildEntry* entries, Py_ssize_t n) noexcept nogil:
    cdef int64_t heaviest = 0, iteration = 0
    cdef uint64_t filled = 0, slot, i
    cdef Py_ssize_t k
    cdef BuildEntry* e
    for i in range(m):
        table[i] = -1
    for k in range(n):
        if entries[k].weight > heaviest:
            heaviest = entries[k].weight
    while filled < m:
        iteration += 1
        for k in range(n):
            e = &entries[k]
            if iteration * e.weight < e.target:
                continue
            e.target += heaviest
            slot = (e.offset + e.skip * e.next) % m
            while table[slot] >= 0:
                e.next += 1
                slot = (e.offset + e.skip * e.next) % m
            table[slot] = <int32_t>e.host
            e.next += 1
            filled += 1
            if filled == m:
                break


@cython.final
cdef class Maglev:
    cdef Py_ssize_t _n
    cdef uint64_t _m
    cdef int32_t* _table

    def __cinit__(self):
        self._table = NULL

    def __init__(self, keys, weights, table_size=65537):
        cdef Py_ssize_t k, n
        cdef uint64_t m
        cdef BuildEntry* build = NULL
        entries, size = validated(keys, weights, table_size)
        m = size
        free(self._table)  # __init__ may run again on a live object
        self._table = NULL
        self._n = self._m = 0
        n = len(entries)
        try:
            build = <BuildEntry*>malloc(n * sizeof(BuildEntry))
            self._table = <int32_t*>malloc(m * sizeof(int32_t))
            if build == NULL or self._table == NULL:
                raise MemoryError()
            for k, (host, offset, skip, weight) in enumerate(entries):
                build[k].host = host
                build[k].offset = offset
                build[k].skip = skip
                build[k].next = 0
                build[k].weight = weight
                build[k].target = 0
            with nogil:
                _populate(self._table, m, build, n)
        finally:
            free(build)
        self._m = m
        self._n = n

    def __dealloc__(self):
        free(self._table)

    def __len__(self):
        return self._n

    @property
    def table_size(self):
        return self._m

    cpdef Py_ssize_t pick(self, hash) except -1:
        """The host in slot ``hash % table_size`` (``hash`` an int in [0, 2**64))."""
        return self._table[request_hash(hash) % self._m]
