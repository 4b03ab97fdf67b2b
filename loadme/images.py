"""Which container images runs may use (ALLOWED_IMAGES).

An image reference is `[registry/]repository[:tag][@digest]`; Docker Hub's short forms (`python:3.13`,
`user/app`) mean `docker.io/library/python`, `docker.io/user/app`. An allowed entry is either a
prefix ending in `/` (a registry, `myacr.azurecr.io/`, or a path in it, `myacr.azurecr.io/jobs/`) or
one repository (`myacr.azurecr.io/jobs/etl`, any tag or digest of it). Matching is on the
normalized repository, so `myacr.azurecr.io.evil.example/x` never matches `myacr.azurecr.io/`.
"""

from __future__ import annotations

from dataclasses import dataclass

DOCKER_HUB = "docker.io"


def repository(image: str) -> str:
    """The normalized `registry/repository` of an image reference (tag and digest dropped)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name[: len(name) - len(last[-1])] + last[-1].split(":", 1)[0]
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        # No registry in the reference: Docker Hub, official images under library/.
        return f"{DOCKER_HUB}/{name if rest else 'library/' + name}".lower()
    return name.lower()


def normalize_entry(entry: str) -> str:
    """An ALLOWED_IMAGES entry in the form `allows` compares (a prefix keeps its trailing `/`)."""
    if entry.endswith("/"):
        registry_only = "/" not in entry.rstrip("/")
        return entry.lower() if registry_only or "." in entry.split("/", 1)[0] else f"{DOCKER_HUB}/{entry.lower()}"
    return repository(entry)


@dataclass(frozen=True)
class ImagePolicy:
    """The allowed images: prefixes (ending in `/`) and exact repositories."""

    entries: tuple[str, ...]

    @classmethod
    def from_entries(cls, entries: tuple[str, ...] | list[str]) -> ImagePolicy:
        return cls(tuple(normalize_entry(e.strip()) for e in entries if e.strip()))

    def allows(self, image: str) -> bool:
        """True when `image` is in an allowed registry, path or repository."""
        repo = repository(image)
        return any(repo.startswith(entry) if entry.endswith("/") else repo == entry for entry in self.entries)

    def describe(self) -> str:
        return ", ".join(self.entries) or "nothing"
