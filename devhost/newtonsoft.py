"""What the Functions host's Json.NET does to text it re-parses: the queue output binding's rewrite.

The host hands a queue output value to `FunctionBinding.ReadAsEnumerable`
(Azure/azure-functions-host `src/WebJobs.Script/Binding/FunctionBinding.cs`), which re-parses a
string that looks like JSON (`Utility.IsJson`: trimmed, `{...}` or `[...]`) with `JToken.Parse`
(Newtonsoft.Json 13 defaults: DateParseHandling.DateTime, FloatParseHandling.Double), and writes
each resulting value with `ToString()` (`BindAsyncCollectorAsync<byte[]>`): objects and arrays as
indented JSON, strings raw, numbers and booleans as .NET formats them, dates as `DateTime`.
Azure/azure-functions-host#9581 and Azure/azure-functions-python-worker#1492 show it happening.

`rewrite_json_text` imitates that for a host whose clock is UTC (Azure's): the rules that change a
message are indentation, ISO timestamps with a `+hh:mm` offset converted to UTC and their fractions
cut to significant digits, floats written shortest with `.0`, and `\\u` escapes written raw.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

# Json.NET's date sniffing: an ISO 8601 date-time (a `T` at index 10), 19 to 40 characters.
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?(Z|[+-]\d{2}:\d{2})?$")


def looks_like_json(text: str) -> bool:
    """`Utility.IsJson`: trimmed, it starts and ends with braces or brackets."""
    trimmed = text.strip()
    return (trimmed.startswith("{") and trimmed.endswith("}")) or (trimmed.startswith("[") and trimmed.endswith("]"))


def _date(text: str) -> tuple[datetime, str] | None:
    """A string Json.NET reads as a DateTime, with its kind (utc, offset, unspecified)."""
    if not 19 <= len(text) <= 40:
        return None
    match = _ISO_DATETIME.match(text)
    if not match:
        return None
    zone = match.group(2)
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    kind = "unspecified" if zone is None else ("utc" if zone == "Z" else "offset")
    return (value.astimezone(UTC) if kind == "offset" else value), kind


def _iso(value: datetime, kind: str) -> str:
    """DateTime written by Json.NET (IsoDateTimeConverter: `yyyy-MM-ddTHH:mm:ss.FFFFFFFK`)."""
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{value.microsecond:06d}".rstrip("0")
    if fraction:
        text += "." + fraction
    return text + {"utc": "Z", "offset": "+00:00", "unspecified": ""}[kind]


def _convert(value: Any) -> Any:
    if isinstance(value, str):
        found = _date(value)
        return _Date(*found) if found else value
    if isinstance(value, list):
        return [_convert(v) for v in value]
    if isinstance(value, dict):
        return {k: _convert(v) for k, v in value.items()}
    return value


class _Date:
    def __init__(self, value: datetime, kind: str) -> None:
        self.value, self.kind = value, kind


def _dumps(value: Any, indent: int = 0) -> str:
    """JToken.ToString(): indented two spaces, `": "` between key and value, raw Unicode."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_dumps(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(inner + _dumps(v, indent + 1) for v in value) + "\n" + pad + "]"
    if isinstance(value, _Date):
        return json.dumps(_iso(value.value, value.kind))
    if isinstance(value, float):
        return repr(value) if value != int(value) or abs(value) >= 1e15 else f"{int(value)}.0"
    return json.dumps(value, ensure_ascii=False)


def _element_text(value: Any) -> str:
    """`value.ToString()` of one array element: strings raw, scalars as .NET prints them."""
    if isinstance(value, str):
        return value
    if isinstance(value, _Date):
        return value.value.strftime("%m/%d/%Y %H:%M:%S")  # DateTime.ToString(), invariant culture
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if value != int(value) else str(int(value))
    if isinstance(value, int):
        return str(value)
    return _dumps(value)


def rewrite_json_text(text: str) -> list[str]:
    """The messages the host writes for a JSON-looking string (JToken.Parse, dates parsed).

    Raises ValueError if it is not JSON (the host's JToken.Parse throws and the invocation fails).
    """
    parsed = _convert(json.loads(text))
    if isinstance(parsed, list):
        return [_element_text(item) for item in parsed]
    return [_dumps(parsed)]


def element_texts(values: list[Any]) -> list[str]:
    """The messages for a JSON array the worker sent as TypedData json (ToObject: dates not parsed)."""
    return [_element_text(item) for item in values]
