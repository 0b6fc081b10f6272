"""The API documentation pages, served with their scripts and styles by Billfold itself (no CDN).

Litestar's render plugins load their UI from a CDN unless told where it is: a page is offered
only when its files are on this machine, in ``billfold/api/static/<ui>/`` (shipped in the
distribution) or, for Swagger UI, from the ``swagger-ui-py`` package.
The assets are served under ``/schema/assets/<ui>/`` by Litestar's static files router; a UI
whose files are missing is not offered at all (a page that cannot load its script would be
blank). ``/schema/openapi.json`` and ``/schema/openapi.yaml`` are always there.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path

from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    RapidocRenderPlugin,
    RedocRenderPlugin,
    ScalarRenderPlugin,
    StoplightRenderPlugin,
    SwaggerRenderPlugin,
    YamlRenderPlugin,
)
from litestar.router import Router
from litestar.static_files import create_static_files_router

STATIC = Path(__file__).parent / "static"
ASSETS_PATH = "/schema/assets"
_NO_FAVICON = ""  # Litestar's default favicon is fetched from a CDN


@dataclasses.dataclass(frozen=True)
class UI:
    """A documentation UI: its page, the files it needs, and its render plugin given their URLs."""

    name: str
    page: str
    files: tuple[str, ...]
    plugin: Callable[[Mapping[str, str]], OpenAPIRenderPlugin]


UIS = (
    UI(
        "swagger-ui",
        "/swagger",
        ("swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"),
        lambda url: SwaggerRenderPlugin(
            js_url=url["swagger-ui-bundle.js"],
            standalone_preset_js_url=url["swagger-ui-standalone-preset.js"],
            css_url=url["swagger-ui.css"],
            favicon=_NO_FAVICON,
        ),
    ),
    UI(
        "redoc",
        "/redoc",
        ("redoc.standalone.js",),
        lambda url: RedocRenderPlugin(
            js_url=url["redoc.standalone.js"], google_fonts=False, favicon=_NO_FAVICON
        ),
    ),
    UI(
        "elements",
        "/elements",
        ("web-components.min.js", "styles.min.css"),
        lambda url: StoplightRenderPlugin(
            js_url=url["web-components.min.js"], css_url=url["styles.min.css"], favicon=_NO_FAVICON
        ),
    ),
    UI(
        "rapidoc",
        "/rapidoc",
        ("rapidoc-min.js",),
        lambda url: RapidocRenderPlugin(js_url=url["rapidoc-min.js"], favicon=_NO_FAVICON),
    ),
    UI(
        "scalar",
        "/scalar",
        ("standalone.js", "style.css"),
        lambda url: ScalarRenderPlugin(
            js_url=url["standalone.js"], css_url=url["style.css"], favicon=_NO_FAVICON
        ),
    ),
)


def _packaged(ui: UI) -> list[Path]:
    """Where an installed PyPI package ships the UI's files: ``swagger-ui-py`` (a dependency of
    Billfold) ships Swagger UI 5, which reads the OpenAPI 3.1 document Litestar writes (Swagger UI
    4, as in ``swagger-ui-bundle``, cannot render 3.1)."""
    if ui.name != "swagger-ui":
        return []
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or spec.origin is None:
        return []
    return [Path(spec.origin).parent / "static"]


def find_assets(static: Path | None = None) -> dict[str, Path]:
    """The folder holding each UI's files, for the UIs whose files are all on this machine
    (``static``: where the shipped ones are, default :data:`STATIC`)."""
    static = STATIC if static is None else static
    found: dict[str, Path] = {}
    for ui in UIS:
        for folder in [static / ui.name, *_packaged(ui)]:
            if all((folder / name).is_file() for name in ui.files):
                found[ui.name] = folder
                break
    return found


def render_plugins(assets: Mapping[str, Path]) -> list[OpenAPIRenderPlugin]:
    """One page per UI whose files are here (the first is ``/schema`` itself), then the schema
    as JSON and YAML. (Never an empty list: Litestar would add its CDN pages.)"""
    plugins: list[OpenAPIRenderPlugin] = []
    for ui in UIS:
        if ui.name in assets:
            urls = {name: f"{ASSETS_PATH}/{ui.name}/{name}" for name in ui.files}
            plugins.append(ui.plugin(urls))
    return [*plugins, JsonRenderPlugin(), YamlRenderPlugin()]


def asset_routers(assets: Mapping[str, Path]) -> list[Router]:
    """The static files routers of the UIs' files (outside the OpenAPI document, cached a day)."""
    return [
        create_static_files_router(
            path=f"{ASSETS_PATH}/{name}",
            directories=[folder],
            name=f"docs-assets-{name}",
            include_in_schema=False,
            cache_control=None,
        )
        for name, folder in assets.items()
    ]


def pages(assets: Mapping[str, Path]) -> list[str]:
    """The documentation pages offered, as paths."""
    return [f"/schema{ui.page}" for ui in UIS if ui.name in assets]
