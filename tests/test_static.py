"""The dashboard's files: only what is in its folder, by exact path, with a known type."""

from __future__ import annotations

from pathlib import Path

from loadme.static import dashboard_file


def test_files_are_served_from_the_folder_only(tmp_path: Path) -> None:
    root = tmp_path / "dashboard"
    (root / "js").mkdir(parents=True)
    (root / "index.html").write_text("<h1>runs</h1>")
    (root / "js" / "app.js").write_text("console.log(1)")
    (root / "notes.txt").write_text("not served")
    (tmp_path / "secret.html").write_text("outside")
    index = dashboard_file("", root)
    assert index is not None and index.body == b"<h1>runs</h1>" and index.content_type.startswith("text/html")
    script = dashboard_file("js/app.js", root)
    assert script is not None and script.content_type.startswith("text/javascript")
    for refused in ("../secret.html", "js/../../secret.html", "notes.txt", "js", "missing.html", "/etc/passwd"):
        assert dashboard_file(refused, root) is None, refused
