"""Secret variables and the images each may go to (SECRET_VARIABLES).

`SECRET_VARIABLES` maps a secret variable to the app setting holding its value, in one of two forms:

- `{"___Var": "SETTING_NAME"}`: unbound; any image ALLOWED_IMAGES allows may get it (the first form,
  kept as it was for compatibility);
- `{"___Var": {"setting": "SETTING_NAME", "images": ["myacr.azurecr.io/jobs/etl", "myacr.azurecr.io/jobs/"]}}`:
  bound; only those images get it. Entries follow ALLOWED_IMAGES (loadme.images): a prefix ending in
  `/` or one repository, matched on the normalized repository.

The binding is checked when a run is requested (a `403`), for the timer's runs when settings load,
and again when a step is deployed (the settings may have changed since the request).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from loadme.images import ImagePolicy


class SecretVariables(Mapping[str, str]):
    """Secret variable name -> value, with the images each bound one may go to.

    A read-only mapping of the values (what redaction and the containers use); `repr` shows
    names only.
    """

    def __init__(self, values: Mapping[str, str] | None = None,
                 images: Mapping[str, ImagePolicy] | None = None) -> None:
        self._values = dict(values or {})
        self._images = {name: policy for name, policy in (images or {}).items() if name in self._values}

    def __getitem__(self, name: str) -> str:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"SecretVariables({sorted(self._values)})"

    def images(self, name: str) -> ImagePolicy | None:
        """The images secret `name` is bound to; None when it is unbound (any allowed image)."""
        return self._images.get(name)

    def refusal(self, name: str, image: str) -> str:
        """Why secret `name` may not go to `image` ("" when it may): names the secret, the image and
        the setting to change, never a value."""
        policy = self._images.get(name)
        if policy is None or policy.allows(image):
            return ""
        return (f"secret {name} may not go to image {image!r}: SECRET_VARIABLES binds it to {policy.describe()} "
                "(an operator adds the image to its \"images\" there)")


def parse_entry(var_name: str, entry: Any) -> tuple[str, ImagePolicy | None, list[str]]:
    """One SECRET_VARIABLES entry: its setting name, its images (None: unbound) and every problem."""
    if isinstance(entry, str):
        return entry, None, [] if entry else [f"SECRET_VARIABLES: {var_name}: the setting name is empty"]
    where = f"SECRET_VARIABLES: {var_name}"
    if not isinstance(entry, dict):
        return "", None, [f"{where}: must be a setting name or an object {{\"setting\": NAME, \"images\": [...]}}"]
    problems = []
    unknown = sorted(set(entry) - {"setting", "images"})
    if unknown:
        problems.append(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: setting, images")
    setting = entry.get("setting")
    if not isinstance(setting, str) or not setting:
        problems.append(f"{where}: \"setting\" must name the app setting holding the value")
        setting = ""
    images = entry.get("images")
    if not isinstance(images, list) or not images or not all(isinstance(i, str) and i.strip() for i in images):
        problems.append(f"{where}: \"images\" must be a non-empty JSON array of image entries like ALLOWED_IMAGES' "
                        "(a string entry instead lets every allowed image get it)")
        return setting, None, problems
    return setting, ImagePolicy.from_entries(images), problems


def outside(binding: ImagePolicy, allowed: ImagePolicy) -> list[str]:
    """The binding's entries no allowed image can match (the secret could never go there)."""
    def overlaps(entry: str, other: str) -> bool:
        return (entry == other or (other.endswith("/") and entry.startswith(other))
                or (entry.endswith("/") and other.startswith(entry)))
    return [e for e in binding.entries if not any(overlaps(e, a) for a in allowed.entries)]
