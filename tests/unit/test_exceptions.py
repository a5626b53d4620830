"""The error tree: every class documented, every class mapped to one HTTP status."""

from __future__ import annotations

import importlib
import pkgutil
import re

import vidbatch
from vidbatch import exceptions
from vidbatch.api.errors import STATUS_BY_ERROR, status_for


def _all_error_classes() -> set[type[exceptions.VidbatchError]]:
    # Import every module so a class declared outside exceptions.py is found too.
    for info in pkgutil.walk_packages(vidbatch.__path__, "vidbatch."):
        if ".migrations" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found: set[type[exceptions.VidbatchError]] = set()
    todo = [exceptions.VidbatchError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_class_lives_in_the_exceptions_module() -> None:
    elsewhere = {c.__qualname__: c.__module__ for c in _all_error_classes()}
    assert {n: m for n, m in elsewhere.items() if m != "vidbatch.exceptions"} == {}


def test_every_error_class_has_an_http_status() -> None:
    missing = sorted(c.__name__ for c in _all_error_classes() if c not in STATUS_BY_ERROR)
    assert missing == [], f"add these to api/errors.STATUS_BY_ERROR: {missing}"


def test_the_documented_tree_names_exactly_the_classes() -> None:
    doc = exceptions.__doc__ or ""
    tree = doc[doc.index("::") :]
    documented = set(re.findall(r"(?:^|[─ ])([A-Z][A-Za-z]+)\s{2,}", tree, re.MULTILINE))
    assert documented == {c.__name__ for c in _all_error_classes()}


def test_a_subclass_answers_with_its_own_status_not_its_parents() -> None:
    assert status_for(exceptions.BatchAlreadyEnded()) == 400
    assert status_for(exceptions.NothingToRetry()) == 409
    assert status_for(exceptions.TooManyItems()) == 400
    assert status_for(exceptions.InsufficientCredits(10, 5)) == 402
    assert status_for(exceptions.DatabaseUnavailable()) == 503
