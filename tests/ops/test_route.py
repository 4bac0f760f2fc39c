from PIL import Image

from curate.ops.route import route_kind
from curate.samples import natural_photo, render_document


def test_rendered_pages_route_to_document_and_photos_to_natural():
    for i in range(4):
        page, _ = render_document(i)
        assert route_kind(page, "auto", 0.55, 0.12) == "document", i
    for i in range(8):
        photo, name = natural_photo(i)
        assert route_kind(photo, "auto", 0.55, 0.12) == "natural", name


def test_source_kind_wins_over_the_heuristic():
    blank = Image.new("RGB", (300, 300), "white")
    assert route_kind(blank, "natural", 0.55, 0.12) == "natural"
    assert route_kind(blank, "auto", 0.55, 0.12) == "document"
