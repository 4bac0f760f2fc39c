"""The generated sample sets."""

from __future__ import annotations

from curate.samples import varied_name


def test_varied_names_list_in_index_order_whatever_the_kind():
    kinds = ["document" if i % 3 == 0 else "natural" for i in range(30)]
    names = {varied_name(i, kind, 1000 + i, 2000 - i): i for i, kind in enumerate(kinds)}
    assert [names[name] for name in sorted(names)] == list(range(30))
    assert sum(name.endswith(".png") for name in names) == 10  # pages as PNG, photos as JPEG
