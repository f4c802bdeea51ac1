# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Weighted round robin in C: the compiled twin of ``_round_robin_py.py``.

Owns only the hot path. The algorithm (Envoy's earliest-deadline-first schedule in exact
arithmetic), its starting state and its input validation are defined by the Python twin (this
module calls its ``validated`` and ``start_turns``); both produce identical pick sequences,
which the parametrised suite and a hypothesis property check.

The schedule is a binary min-heap of one ``Turn`` per host in a malloc'd array, freed in
``__dealloc__``. A host's next deadline is ``epoch + k / weight`` with ``0 <= k < weight``;
two deadlines compare by epoch, then by ``k_a * weight_b`` against ``k_b * weight_a`` (both below
2**64 since weights are below 2**32), then by host index: the same total order as the twin's
``(floor(deadline * 2**64), host)`` keys, so the two heaps pop the same sequence. Per pick: one
sift-down, at most 2 * log2(n) comparisons.
"""

cimport cython
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc

from meshproxy.upstream.lb._round_robin_py import start_turns, validated


ctypedef struct Turn:
    uint64_t epoch  # whole part of the next deadline
    uint64_t k  # the next deadline is epoch + k / weight, 0 <= k < weight
    uint64_t weight
    Py_ssize_t host


cdef inline bint _before(const Turn* a, const Turn* b) noexcept nogil:
    cdef uint64_t x, y
    if a.epoch != b.epoch:
        return a.epoch < b.epoch
    x = a.k * b.weight
    y = b.k * a.weight
    if x != y:
        return x < y
    return a.host < b.host


cdef void _sift_down(Turn* heap, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    cdef Py_ssize_t child
    cdef Turn item = heap[i]
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


@cython.final
cdef class RoundRobin:
    cdef Py_ssize_t _n
    cdef Py_ssize_t _next
    cdef Turn* _heap  # NULL when all weights are equal (the rotation needs no schedule)

    def __cinit__(self):
        self._heap = NULL

    def __init__(self, weights, offset=0):
        cdef Py_ssize_t i, n, left
        cdef uint64_t w, due
        checked, start = validated(weights, offset)
        n = len(checked)
        free(self._heap)  # __init__ may run again on a live object
        self._heap = NULL
        self._n = n
        self._next = start
        if len(set(checked)) <= 1:
            return
        turns, left = start_turns(checked, offset)
        self._heap = <Turn*>malloc(n * sizeof(Turn))
        if self._heap == NULL:
            raise MemoryError()
        for i in range(n):
            w = <uint64_t>checked[i]
            due = <uint64_t>turns[i] + 1  # turns[i] < w, so due <= w < 2**32
            self._heap[i].epoch = due // w
            self._heap[i].k = due % w
            self._heap[i].weight = w
            self._heap[i].host = i
        for i in range(n // 2 - 1, -1, -1):
            _sift_down(self._heap, n, i)
        for i in range(left):
            self.pick()

    def __dealloc__(self):
        free(self._heap)

    def __len__(self):
        return self._n

    cpdef Py_ssize_t pick(self) except -1:
        """Return the index of the next host; raise IndexError if there are no hosts."""
        cdef Py_ssize_t host
        cdef Turn* top = self._heap
        if top != NULL:
            host = top.host
            top.k += 1
            if top.k == top.weight:
                top.k = 0
                top.epoch += 1
            _sift_down(top, self._n, 0)
            return host
        if self._n == 0:
            raise IndexError("pick from a RoundRobin with no hosts")
        host = self._next
        self._next = host + 1 if host + 1 < self._n else 0
        return host
