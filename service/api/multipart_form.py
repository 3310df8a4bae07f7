"""``multipart/form-data`` request bodies, read once as they arrive, for request validation.

connexion's own multipart validator parses the body with starlette (every file part spooled
to a temporary file, every text part held in memory) only to check the part names, and a
malformed body escapes it as an exception: a 500. :func:`read_form` reads the same stream with
python-multipart's streaming parser and keeps only what validation needs: each part's name,
whether it came with a filename, its size, and the value of a text part the schema describes.
A file part's bytes are not kept: Flask (werkzeug) parses the body again for the handler, from
the copy connexion keeps to replay it, and spools each file part to a temporary file.

A file part may come without a filename (openapi-python-client's ``File`` without
``file_name``, ``curl -F 'file=<products.csv'``); werkzeug then hands it to the handler as
text, decoded with replacement characters. So such a part is decoded here, strictly, in its
charset as it arrives (nothing of it kept): bytes that are not UTF-8 are a 400
``invalid-encoding`` naming the byte and the line, like the CSV import's own check.

Every way a body can be malformed is a 400 (or 415) problem, never an exception:

- no ``boundary`` parameter, or one python-multipart refuses (over 256 characters);
- a part without ``Content-Disposition: form-data; name=...``, headers over python-multipart's
  limits (8 headers per part, 4 KiB per header line), broken framing;
- no closing boundary (a truncated body, or one that is not multipart at all);
- more than :data:`MAX_PARTS` parts (the parse stops at the first one too many);
- a text part over :data:`MAX_TEXT_BYTES`; a part whose ``charset`` is not UTF-8 (415).

The body's own size is bounded before this runs (:mod:`service.api.middleware.body_limit`).
"""

from __future__ import annotations

import codecs
import typing as t
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from service.api.middleware.media_type import charset_accepted
from service.problems import BadRequestProblem, Problem, UnsupportedCharsetProblem, pointer_error
from service.schema_check import EXCERPT_CHARS, NUL, escape_pointer, excerpt

# No form of this API has more than a few parts; a body of thousands is refused at once.
MAX_PARTS = 64
# A text part (not a file) of a form is a short value.
MAX_TEXT_BYTES = 64 * 1024


def is_file_schema(schema: t.Any) -> bool:
    """A property sent as a file part (OpenAPI 3.0: ``type: string`` with ``format: binary``)."""
    return (
        isinstance(schema, dict)
        and schema.get("type") == "string"
        and schema.get("format") in ("binary", "base64")
    )


@dataclass
class Part:
    """What request validation learns of one part; never a file part's bytes."""

    name: str
    filename: str | None
    size: int = 0
    # A text part the schema describes: its value, decoded.
    text: str | None = None


@dataclass
class Form:
    """The parts of a ``multipart/form-data`` body, in order."""

    parts: list[Part] = field(default_factory=list)

    def by_name(self) -> dict[str, list[Part]]:
        found: dict[str, list[Part]] = {}
        for part in self.parts:
            found.setdefault(part.name, []).append(part)
        return found


class _Malformed(Exception):
    """Raised from the parser's callbacks: the body is not a form this API reads."""


def part_pointer(name: str) -> str:
    """The ``errors[]`` pointer naming a part: ``/file``; a very long or odd name as ``""``."""
    if len(name) > EXCERPT_CHARS or NUL in name:
        return ""
    return "/" + escape_pointer(name)


def part_label(name: str) -> str:
    return excerpt(name)


class _Reader:
    """python-multipart's callbacks, building a :class:`Form`."""

    def __init__(self, properties: dict[str, t.Any]) -> None:
        self.properties = properties
        self.form = Form()
        self.ended = False
        self._part: Part | None = None
        self._headers: dict[bytes, bytes] = {}
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._text: bytearray | None = None
        self._decoder: codecs.IncrementalDecoder | None = None
        self._charset = "utf-8"
        self._lines = 1

    # -- headers -------------------------------------------------------------------------------

    def on_part_begin(self) -> None:
        if len(self.form.parts) >= MAX_PARTS:
            raise _Malformed(f"The form has more than {MAX_PARTS} parts.")
        self._headers = {}
        self._part = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[bytes(self._header_name).strip().lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise _Malformed(
                'Each part needs a "Content-Disposition: form-data; name=..." header; part '
                f"{len(self.form.parts) + 1} has none."
            )
        name = options[b"name"].decode("utf-8", "replace")
        filename = options.get(b"filename")
        part = Part(name, None if filename is None else filename.decode("utf-8", "replace"))
        _, type_options = parse_options_header(self._headers.get(b"content-type"))
        declared = type_options.get(b"charset", b"utf-8").decode("latin-1")
        if not charset_accepted(declared):
            raise UnsupportedCharsetProblem(declared, what=f"The part {part_label(name)} is")
        # werkzeug decodes a text part in its charset: US-ASCII as ASCII, else UTF-8.
        self._charset = "ascii" if declared.strip('"').lower() == "us-ascii" else "utf-8"
        schema = self.properties.get(name)
        is_file = is_file_schema(schema)
        self._text = bytearray() if schema is not None and not is_file else None
        # A file part without a filename reaches the handler as text: decode it now, strictly.
        self._decoder = (
            codecs.getincrementaldecoder(self._charset)("strict")
            if is_file and part.filename is None
            else None
        )
        self._lines = 1
        self._part = part

    # -- data ----------------------------------------------------------------------------------

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part is None:  # data before a part's headers ended: python-multipart never does
            raise _Malformed("A part's data came before its headers.")
        chunk = data[start:end]
        if self._decoder is not None:
            self._decode(part, chunk, final=False)
        if self._text is not None:
            if len(self._text) + len(chunk) > MAX_TEXT_BYTES:
                raise _Malformed(
                    f"The part {part_label(part.name)} is longer than {MAX_TEXT_BYTES} bytes."
                )
            self._text += chunk
        part.size += len(chunk)

    def _decode(self, part: Part, chunk: bytes, *, final: bool) -> None:
        assert self._decoder is not None
        try:
            self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            # The decoder still holds the (at most 3) bytes of a character the last chunk
            # began; the error's position counts from them.
            buffered = len(self._decoder.getstate()[0])
            offset = part.size - buffered + exc.start
            line = self._lines + chunk.count(b"\n", 0, max(exc.start - buffered, 0))
            raise InvalidPartEncodingProblem(part.name, offset, line) from exc
        self._lines += chunk.count(b"\n")

    def on_part_end(self) -> None:
        part = self._part
        if part is None:
            raise _Malformed("A part ended before its headers.")
        if self._decoder is not None:
            self._decode(part, b"", final=True)
        if self._text is not None:
            try:
                part.text = self._text.decode(self._charset)
            except UnicodeDecodeError as exc:
                line = self._text.count(b"\n", 0, exc.start) + 1
                raise InvalidPartEncodingProblem(part.name, exc.start, line) from exc
        self.form.parts.append(part)
        self._part = None
        self._text = None
        self._decoder = None

    def on_end(self) -> None:
        self.ended = True


class InvalidPartEncodingProblem(Problem):
    """400: a part read as text holds bytes that are not UTF-8."""

    def __init__(self, name: str, offset: int, line: int) -> None:
        super().__init__(
            400,
            "invalid-encoding",
            f"The part {part_label(name)} is not valid UTF-8: byte {offset} (line {line}) "
            "cannot be decoded. Save the file as UTF-8.",
            title="Invalid request",
            errors=[pointer_error(part_pointer(name), f"Byte {offset} is not valid UTF-8.")],
        )


def malformed(detail: str) -> BadRequestProblem:
    """400: the body is not a form; ``detail`` a sentence saying why."""
    return BadRequestProblem(
        f"The multipart/form-data body is malformed: {detail[:1].lower()}{detail[1:]}",
        errors=[pointer_error("", detail)],
    )


async def read_form(
    content_type: str, stream: AsyncIterator[bytes], properties: dict[str, t.Any]
) -> Form:
    """The parts of the body ``stream`` yields, as they arrive; a problem if it is not a form.

    ``properties`` are the body schema's: a text part they name is decoded and kept (for the
    schema check), a part they name as a file (``format: binary``) only counted, any other part
    only named.
    """
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise malformed("The Content-Type names no boundary (multipart/form-data; boundary=...).")
    reader = _Reader(properties)
    try:
        parser = MultipartParser(boundary, t.cast(t.Any, _callbacks(reader)))
        async for chunk in stream:
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except _Malformed as exc:
        raise malformed(str(exc)) from None
    except FormParserError as exc:
        raise malformed(f"The parser stopped: {_parser_message(exc)}.") from None
    if not reader.ended:
        raise malformed(
            "The body ends before its closing boundary (--boundary--): it is truncated, or "
            "not multipart/form-data."
        )
    return reader.form


def _callbacks(reader: _Reader) -> dict[str, t.Callable[..., None]]:
    names = (
        "on_part_begin",
        "on_part_data",
        "on_part_end",
        "on_header_field",
        "on_header_value",
        "on_header_end",
        "on_headers_finished",
        "on_end",
    )
    return {name: getattr(reader, name) for name in names}


def _parser_message(exc: FormParserError) -> str:
    text = str(exc).rstrip(".") or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"
