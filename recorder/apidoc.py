"""``python -m recorder.apidoc``: docs/api.md, the read API's reference, generated from the
app's own OpenAPI schema so that it cannot drift from the code (tests/recorder/test_apidoc.py
fails when the committed page differs from what this prints)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from recorder.access import Access
from recorder.api import build_api
from recorder.app import open_service
from recorder.settings import RecorderSettings
from recorder.tokens import TokenStore
from tssh.identity.netmap import NetmapResolver, parse_netmap

HEADER = """# Recorder API reference

Generated from the recorder's OpenAPI schema by `python -m recorder.apidoc > docs/api.md`;
`tests/recorder/test_apidoc.py` checks that this page matches the code. Who may call what,
and the upload endpoints (`/v2/record`, `/record`, raw ASGI, not in the schema), are in
docs/recorder.md.
"""


NETMAP = ('{"nodes": [{"name": "doc", "id": "nDOC", "addresses": ["127.0.0.1"], '
          '"tags": ["tag:doc"]}]}')


def schema() -> dict[str, Any]:
    """The OpenAPI schema of a recorder's read API (built over a throwaway state dir)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = RecorderSettings(dst=str(Path(tmp) / "store"), state_dir=Path(tmp))
        service = open_service(settings)
        nobody = NetmapResolver(parse_netmap(NETMAP, require_self=False))
        access = Access(nobody, (), {}, TokenStore(Path(tmp) / "tokens.json"))
        return build_api(service, access).openapi()


def _type(param_schema: dict[str, Any]) -> str:
    options = param_schema.get("anyOf", [param_schema])
    names = [o.get("type", "?") for o in options if o.get("type") != "null"]
    text = " or ".join(names) or "?"
    limits = [f"{key} {o[key]}" for o in options for key in ("minimum", "maximum", "maxLength")
              if key in o]
    return text + (f" ({', '.join(limits)})" if limits else "")


def _body(spec: dict[str, Any], op: dict[str, Any]) -> list[str]:
    """The JSON request body's fields, as a table (none: no lines)."""
    ref = (op.get("requestBody", {}).get("content", {}).get("application/json", {})
           .get("schema", {}).get("$ref", ""))
    if not ref:
        return []
    model = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    required = set(model.get("required", ()))
    lines = ["| body field (JSON) | type | required |", "|---|---|---|"]
    for name, field in model.get("properties", {}).items():
        lines.append(f"| `{name}` | {_type(field)} | {'yes' if name in required else 'no'} |")
    return [*lines, ""]


def render(spec: dict[str, Any]) -> str:
    lines = [HEADER]
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            lines += [f"## `{method.upper()} {path}`", ""]
            if op.get("description"):
                lines += [" ".join(op["description"].split()).replace("``", "`"), ""]
            params = op.get("parameters", [])
            if params:
                lines += ["| parameter | in | type | default |", "|---|---|---|---|"]
                for p in params:
                    default = p["schema"].get("default", "required" if p.get("required")
                                                  else "none")
                    lines.append(f"| `{p['name']}` | {p['in']} | {_type(p['schema'])} | "
                                 f"`{default}` |")
                lines.append("")
            lines += _body(spec, op)
            codes = ", ".join(f"`{code}`" for code in op.get("responses", {}))
            lines += [f"Responses: {codes}.", ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(schema()), end="")
