# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Least-request picker in C: the compiled twin of ``_least_request_py.py``.

Owns only the hot path. The algorithm, its validation and the reading of ``rq_active`` are
defined by the Python twin (this module calls its ``validated``; ``_active`` raises the same
errors as its ``active_requests``); both produce identical pick sequences, which the
parametrised suite and a hypothesis property check. The EDF schedule is a binary min-heap of
``(deadline, seq, host)`` in one malloc'd array, ordered exactly as the twin's ``heapq`` tuples
(seq is unique, so the order is total and any correct heap pops the same sequence); the weights
are a second array. Both are freed in ``__dealloc__``.
"""

cimport cython
from cpython.long cimport PyLong_AsLongLong, PyLong_Check
from cpython.number cimport PyNumber_Index
from libc.math cimport pow
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport free, malloc

from meshproxy.upstream.lb._native cimport splitmix64

from meshproxy.upstream.lb._least_request_py import validated


ctypedef struct Entry:
    double deadline
    uint64_t seq
    Py_ssize_t host


cdef inline bint _before(Entry* a, Entry* b) noexcept nogil:
    return a.deadline < b.deadline or (a.deadline == b.deadline and a.seq < b.seq)


cdef void _sift_down(Entry* heap, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    cdef Py_ssize_t child
    cdef Entry item = heap[i]
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and _before(&heap[child + 1], &heap[child]):
            child += 1
        if not _before(&heap[child], &item):
            break
        heap[i] = heap[child]
        i = child
    heap[i] = item


cdef int64_t _active(tuple hosts, Py_ssize_t i) except -1:
    cdef object value = (<object>hosts[i]).rq_active
    if not PyLong_Check(value):
        value = PyNumber_Index(value)  # TypeError, as operator.index in the twin
    cdef int64_t a = PyLong_AsLongLong(value)  # OverflowError outside int64
    if a < 0:
        raise ValueError(f"hosts[{i}].rq_active is {a}; active requests cannot be negative")
    return a


cdef void _replace_top(Entry* heap, Py_ssize_t n) noexcept nogil:
    """Re-seat heap[0] after its deadline grew: Floyd's bottom-up sift (as heapq's): walk the
    smaller children up to a leaf, then sift the item up from there. The item usually belongs
    near the bottom, so this takes about half the comparisons of a top-down sift; with a
    total order (seq is unique) the heap pops the same sequence either way."""
    cdef Entry item = heap[0]
    cdef Py_ssize_t pos = 0
    cdef Py_ssize_t child = 1
    cdef Py_ssize_t parent
    while child < n:
        if child + 1 < n and not _before(&heap[child], &heap[child + 1]):
            child += 1
        heap[pos] = heap[child]
        pos = child
        child = 2 * pos + 1
    while pos > 0:
        parent = (pos - 1) >> 1
        if not _before(&item, &heap[parent]):
            break
        heap[pos] = heap[parent]
        pos = parent
    heap[pos] = item


@cython.final
cdef class LeastRequest:
    cdef Py_ssize_t _n
    cdef Py_ssize_t _choices
    cdef double _bias
    cdef uint64_t _state
    cdef uint64_t _seq
    cdef tuple _hosts
    cdef double* _weights  # NULL when all weights are equal (no schedule)
    cdef Entry* _heap

    def __cinit__(self):
        self._weights = NULL
        self._heap = NULL

    def __init__(self, weights, hosts, choice_count=2, active_request_bias=1.0, seed=0):
        cdef Py_ssize_t i, n, warmup
        checked, hosts_tuple, choices, bias, state = validated(
            weights, hosts, choice_count, active_request_bias, seed
        )
        free(self._weights)  # __init__ may run again on a live object
        free(self._heap)
        self._weights = NULL
        self._heap = NULL
        n = len(checked)
        self._n = n
        self._hosts = hosts_tuple
        self._choices = choices
        self._bias = bias
        self._state = state
        self._seq = n
        if len(set(checked)) == 1:
            return
        self._weights = <double*>malloc(n * sizeof(double))
        self._heap = <Entry*>malloc(n * sizeof(Entry))
        if self._weights == NULL or self._heap == NULL:
            raise MemoryError()
        for i in range(n):
            self._weights[i] = <double><uint64_t>checked[i]
        for i in range(n):
            self._heap[i].deadline = 1.0 / self._effective_weight(i)
            self._heap[i].seq = i
            self._heap[i].host = i
        for i in range(n // 2 - 1, -1, -1):
            _sift_down(self._heap, n, i)
        warmup = <Py_ssize_t>(splitmix64(&self._state) % <uint64_t>n)
        for i in range(warmup):
            self.pick()

    def __dealloc__(self):
        free(self._weights)
        free(self._heap)

    def __len__(self):
        return self._n

    cdef double _effective_weight(self, Py_ssize_t i) except -1.0:
        cdef double load = <double>_active(self._hosts, i) + 1.0
        if self._bias == 1.0:
            return self._weights[i] / load
        return self._weights[i] / pow(load, self._bias)

    cpdef Py_ssize_t pick(self, hash=0) except -1:
        """Return the index of the chosen host."""
        cdef Py_ssize_t n = self._n
        cdef Py_ssize_t c, host, best
        cdef int64_t active, best_active
        cdef uint64_t state
        cdef Entry* top
        if self._heap != NULL:
            top = &self._heap[0]
            best = top.host
            top.deadline = top.deadline + 1.0 / self._effective_weight(best)
            top.seq = self._seq
            self._seq += 1
            _replace_top(self._heap, n)
            return best
        state = self._state  # stored only when the pick succeeds, as in the twin
        best = <Py_ssize_t>(splitmix64(&state) % <uint64_t>n)
        best_active = _active(self._hosts, best)
        for c in range(self._choices - 1):
            host = <Py_ssize_t>(splitmix64(&state) % <uint64_t>n)
            active = _active(self._hosts, host)
            if active < best_active:
                best = host
                best_active = active
        self._state = state
        return best
