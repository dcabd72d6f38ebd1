"""The README stays current: every setting and every API route is in it."""

from pathlib import Path

from service.core.settings import Settings, setting_names
from service.web.app import create_app

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [env for env, _, _ in setting_names() if f"`{env}`" not in README]
    assert not missing, f"settings missing from README.md: {missing}"


def test_every_api_route_is_documented():
    app = create_app(Settings())
    paths = {r.resource.canonical for r in app.router.routes()
             if r.resource is not None and r.resource.canonical.startswith("/api/v1/")}
    missing = sorted(p for p in paths if p not in README)
    assert not missing, f"routes missing from README.md: {missing}"


def test_readme_names_the_two_commands_and_the_procfile():
    assert "scripts/dev" in README and "scripts/test" in README
    procfile = (Path(__file__).parents[2] / "Procfile").read_text()
    for line in procfile.strip().splitlines():
        assert line in README
