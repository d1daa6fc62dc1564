"""Answers about shared sets, found again by the identity of the sets they are about."""

from __future__ import annotations

import operator
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, cast

_T = TypeVar("_T")


class Memo:
    """Thousands of proxies ask the same question about the same shared sets after a change
    (are this route table's clusters ACKed? does it name only known clusters?): the first asks,
    the others find the answer by the sets' identities.

    Keeps only weak references to the sets (an answer never keeps an old mesh alive) and forgets
    the oldest answer beyond `size`.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._answers: dict[tuple[int, ...], tuple[tuple[weakref.ref[Any], ...], Any]] = {}

    def get(self, about: tuple[object, ...], compute: Callable[[], _T]) -> _T:
        key = tuple(map(id, about))
        found = self._answers.get(key)
        if found is not None and all(map(operator.is_, (ref() for ref in found[0]), about)):
            return cast(_T, found[1])
        answer = compute()
        self._answers[key] = (tuple(map(weakref.ref, about)), answer)
        if len(self._answers) > self._size:
            del self._answers[next(iter(self._answers))]
        return answer
