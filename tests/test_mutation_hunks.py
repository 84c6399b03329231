"""The deliberate breaks of tests/mutations.py still apply: each hunk's text occurs exactly once
in the file it breaks. A refactor that moves that text would otherwise leave `make
test-mutations` failing on a break it can no longer make, not on a test that misses it."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.mutations import MUTATIONS

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_every_break_still_applies(mutation):
    for hunk in mutation.hunks:
        text = (ROOT / hunk.path).read_text(encoding="utf-8")
        assert text.count(hunk.old) == 1, (mutation.name, hunk.path, hunk.old[:80])
        for test in mutation.tests:
            assert (ROOT / test.split("::")[0]).is_file(), (mutation.name, test)
