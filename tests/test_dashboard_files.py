"""The dashboard's files keep to the page's content security policy and never parse data as HTML.

The policy (loadme/static.py) allows only the app's own scripts, styles and API: no inline script or
style, no other origin. The browser test (tests/e2e/test_dashboard.py) runs the page; this checks
the files themselves, in a second.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from loadme.static import DASHBOARD_DIR, dashboard_file

PREFIX = "/api/dashboard/"


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.references: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "style":
            self.problems.append("a <style> element")
        for name, _ in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"attribute {name} on <{tag}>")
        if tag == "script":
            self._in_script = True
            if not names.get("src"):
                self.problems.append("an inline <script>")
        for name in ("src", "href"):
            value = names.get(name) or ""
            if value.startswith(PREFIX):
                self.references.append(value[len(PREFIX):])
            elif re.match(r"(?i)[a-z]+:|//", value):
                self.problems.append(f"{name}={value} leaves the app")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("an inline <script>")


def test_the_page_has_no_inline_script_or_style_and_its_files_are_served() -> None:
    page = _Page()
    page.feed((DASHBOARD_DIR / "index.html").read_text())
    assert page.problems == []
    assert {"app.js", "dashboard.css", "favicon.svg"} <= set(page.references)
    for reference in page.references:
        assert dashboard_file(reference) is not None, reference


def test_scripts_import_only_their_siblings_and_never_parse_html() -> None:
    scripts = sorted(DASHBOARD_DIR.glob("*.js"))
    assert scripts
    for script in scripts:
        text = script.read_text()
        for imported in re.findall(r'from\s+"([^"]+)"', text):
            assert imported.startswith("./") and (DASHBOARD_DIR / imported).is_file(), (script.name, imported)
            assert dashboard_file(imported[2:]) is not None
        for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                          "localStorage", "setAttribute(\"style\"", "style="):
            assert forbidden not in text, (script.name, forbidden)
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert urls == set(), (script.name, urls)


def test_styles_load_nothing_from_elsewhere() -> None:
    for sheet in DASHBOARD_DIR.glob("*.css"):
        text = sheet.read_text()
        assert "@import" not in text and not re.search(r"url\(\s*['\"]?(https?:)?//", text), sheet.name


def test_every_file_in_the_folder_is_of_a_served_type() -> None:
    files = [p for p in DASHBOARD_DIR.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert dashboard_file(str(path.relative_to(DASHBOARD_DIR))) is not None, path.name
