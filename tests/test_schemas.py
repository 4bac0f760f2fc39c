from curate.schemas import render_schemas
from tests.conftest import REPO


def test_checked_in_schemas_are_current():
    rendered = render_schemas()
    for name, text in rendered.items():
        path = REPO / "schemas" / name
        assert path.exists(), f"{path} missing: run `curate schema`"
        assert path.read_text() == text, f"{path} is stale: run `curate schema`"
    assert {p.name for p in (REPO / "schemas").glob("*.json")} == set(rendered)
