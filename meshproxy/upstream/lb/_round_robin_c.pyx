# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Smooth weighted round robin in C: the compiled twin of ``_round_robin_py.py``.

Owns only the hot loop. The algorithm, its offset semantics and its input validation are
defined by the Python twin (this module calls its ``validated``, so both reject the same inputs
with the same messages); both must produce identical pick sequences, which the parametrised
test suite and a hypothesis property check. Weights and current weights live in two malloc'd
int64 arrays in scan order (rotated by the offset), freed in ``__dealloc__``.

Bounds: weights are at most 2**32 - 1, so with fewer than 2**30 hosts every current weight
(always within (-total, total]) fits in an int64.
"""

cimport cython
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from meshproxy.upstream.lb._round_robin_py import validated


@cython.final
cdef class RoundRobin:
    cdef Py_ssize_t _n
    cdef Py_ssize_t _start
    cdef Py_ssize_t _next
    cdef bint _equal
    cdef int64_t _total
    cdef int64_t* _weights
    cdef int64_t* _current

    def __cinit__(self):
        self._weights = NULL
        self._current = NULL

    def __init__(self, weights, offset=0):
        cdef Py_ssize_t i, n
        checked, start = validated(weights, offset)
        n = len(checked)
        free(self._weights)  # __init__ may run again on a live object
        free(self._current)
        self._weights = NULL
        self._current = NULL
        self._n = 0
        if n:
            self._weights = <int64_t*>malloc(n * sizeof(int64_t))
            self._current = <int64_t*>malloc(n * sizeof(int64_t))
            if self._weights == NULL or self._current == NULL:
                raise MemoryError()
        self._start = start
        self._next = start
        self._equal = len(set(checked)) <= 1
        self._total = 0
        for i in range(n):
            self._weights[i] = checked[(start + i) % n]
            self._current[i] = 0
            self._total += self._weights[i]
        self._n = n

    def __dealloc__(self):
        free(self._weights)
        free(self._current)

    def __len__(self):
        return self._n

    @cython.boundscheck(False)
    @cython.wraparound(False)
    cpdef Py_ssize_t pick(self) except -1:
        """Return the index of the next host; raise IndexError if there are no hosts."""
        cdef Py_ssize_t n = self._n
        cdef Py_ssize_t i, best, host
        cdef int64_t c, best_current
        cdef int64_t* current = self._current
        cdef int64_t* weights = self._weights
        if self._equal:
            if n == 0:
                raise IndexError("pick from a RoundRobin with no hosts")
            host = self._next
            self._next = host + 1 if host + 1 < n else 0
            return host
        best = 0
        best_current = current[0] + weights[0]
        current[0] = best_current
        for i in range(1, n):
            c = current[i] + weights[i]
            current[i] = c
            if c > best_current:  # strict: the first maximum in scan order wins a tie
                best = i
                best_current = c
        current[best] -= self._total
        host = best + self._start
        return host - n if host >= n else host
