"""Write fixed copies of openapi-python-client templates for ``--custom-template-path``.

    python sdk/python/patch_templates.py OUT_DIR

The pinned openapi-python-client (0.29.1) generates broken code for two shapes our contract
uses: a required body with several media types (login: form or JSON; product import: CSV or
a JSON array) and a plain-string body sent as raw content (CSV, with ``text/csv`` mapped to
``application/octet-stream`` in sdk/python/config.yaml). Each fix below replaces one exact
template snippet; if a snippet is gone (a release changed the template), this fails and
says which, so the fix is re-checked or dropped instead of silently not applied.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import openapi_python_client

TEMPLATES = Path(openapi_python_client.__file__).parent / "templates"

# (template, broken snippet, fixed snippet, why)
FIXES = [
    (
        "endpoint_macros.py.jinja",
        "{% if not body_required %} | Unset = UNSET{% endif %}",
        "{% if not endpoint.bodies[0].prop.required %} | Unset = UNSET{% endif %}",
        # Upstream issue #1451: `body_required` is never set, so a required multi-media
        # body is annotated `| Unset = UNSET` without importing Unset (NameError on import).
        "required bodies with several media types (issue #1451)",
    ),
    (
        "endpoint_module.py.jinja",
        "    if isinstance(body, {{body.prop.get_type_string(no_optional=True)"
        " | as_unembedded_code }}):",
        "    if isinstance(body, {{body.prop.get_instance_type_string() | as_unembedded_code }}):",
        # The annotation of a JSON array body is `list[Model]`, which isinstance() refuses
        # with a TypeError on every call; the instance type is `list`.
        "isinstance() on a JSON array body",
    ),
    (
        "endpoint_macros.py.jinja",
        '_kwargs["content"] = body.payload',
        '_kwargs["content"] = body'
        '{{ ".payload" if body.prop.get_instance_type_string() == "File" else "" }}',
        # Raw content is only ever a File there; a `type: string` body (CSV) is the str.
        "raw string bodies",
    ),
]


def main(out_dir: str) -> int:
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    texts: dict[str, str] = {}
    for name, broken, fixed, why in FIXES:
        text = texts.get(name) or (TEMPLATES / name).read_text()
        if broken not in text:
            print(
                f"{TEMPLATES / name}: the template no longer has the snippet for the fix of "
                f"{why}; check whether the pinned release fixed it and update {__file__}",
                file=sys.stderr,
            )
            return 1
        texts[name] = text.replace(broken, fixed)
    for name, text in texts.items():
        (target / name).write_text(text)
        shutil.copymode(TEMPLATES / name, target / name)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
