# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Weighted random picker in C: the compiled twin of ``_random_lb_py.py``.

Owns only the hot path. The algorithm and its validation are the Python twin's (this module
calls its ``validated``); both produce identical pick sequences for the same seed, which the
parametrised suite and a hypothesis property check. The cumulative weights live in one malloc'd
uint64 array (empty when all weights are equal), freed in ``__dealloc__``.
"""

cimport cython
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc

from meshproxy.upstream.lb._native cimport splitmix64

from meshproxy.upstream.lb._random_lb_py import validated


@cython.final
cdef class RandomLb:
    cdef Py_ssize_t _n
    cdef Py_ssize_t _m  # entries in _cumulative: 0 when all weights are equal
    cdef uint64_t _state
    cdef uint64_t _total
    cdef uint64_t* _cumulative

    def __cinit__(self):
        self._cumulative = NULL

    def __init__(self, weights, seed=0):
        cdef Py_ssize_t i
        cumulative, n, state = validated(weights, seed)
        free(self._cumulative)  # __init__ may run again on a live object
        self._cumulative = NULL
        self._m = 0
        if cumulative:
            self._cumulative = <uint64_t*>malloc(len(cumulative) * sizeof(uint64_t))
            if self._cumulative == NULL:
                raise MemoryError()
            for i in range(len(cumulative)):
                self._cumulative[i] = cumulative[i]
            self._m = len(cumulative)
        self._n = n
        self._state = state
        self._total = self._cumulative[self._m - 1] if self._m else <uint64_t>n

    def __dealloc__(self):
        free(self._cumulative)

    def __len__(self):
        return self._n

    cpdef Py_ssize_t pick(self, hash=0) except -1:
        """Return the index of a host drawn in proportion to its weight."""
        cdef uint64_t r = splitmix64(&self._state)
        cdef uint64_t x
        cdef Py_ssize_t lo, hi, mid
        if self._m == 0:
            return <Py_ssize_t>(r % <uint64_t>self._n)
        x = r % self._total
        lo = 0
        hi = self._m
        while lo < hi:  # bisect_right: the first cumulative weight > x
            mid = (lo + hi) >> 1
            if self._cumulative[mid] <= x:
                lo = mid + 1
            else:
                hi = mid
        return lo
