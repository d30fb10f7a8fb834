"""Read the submitted document from a request: multipart streamed, or JSON (URL or base64).

Multipart uploads are never held in memory: they are hashed, counted, sniffed and scanned for
markers chunk by chunk. A URL input is fetched, streamed the same way, only when its host is a
loopback address (a test's own server: moto's presigned URLs); any other URL is described from
the URL alone — the emulator never reaches out to the network.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import BodyPartReader, web

from docutray_watch.emulator._errors import ApiError
from docutray_watch.emulator._limits import SNIFF_HEAD_SIZE, sniff_content_type
from docutray_watch.emulator._markers import Markers, MarkerScanner, scan_markers

_CHUNK_SIZE = 256 * 1024
_METADATA_LIMIT = 1024 * 1024
# A JSON body may hold base64 (4/3 of the document) plus the metadata and the field names.
_JSON_OVERHEAD = 2 * _METADATA_LIMIT
_INPUT_FIELDS = ("image_url", "image_base64")
_CODE_OPTIONS = "document_type_code_options"
_EXTENSION_TYPES = {
    ".pdf": "application/pdf",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".gif": "image/gif",
    ".bmp": "image/bmp",
    ".webp": "image/webp",
}


@dataclass(frozen=True, slots=True)
class Document:
    """What the emulator keeps of a submitted document."""

    sha256: str
    size: int
    content_type: str
    original_filename: str | None
    metadata: dict[str, Any] | None
    markers: Markers
    code_options: tuple[str, ...] | None = None
    """Identification only: the candidate type codes (``document_type_code_options``)."""


async def read_document(request: web.Request, *, max_size: int) -> Document:
    """Read and check the document of a submission, raising `ApiError` (400/413/415)."""
    if request.content_type == "multipart/form-data":
        return await _read_multipart(request, max_size)
    if request.content_type == "application/json" or request.content_type.endswith("+json"):
        return await _read_json(request, max_size)
    raise ApiError(415, "Send the document as multipart/form-data or application/json", flat=True)


def _too_large(max_size: int) -> ApiError:
    return ApiError(413, f"The document is larger than the {max_size}-byte limit")


def _unsupported_type() -> ApiError:
    return ApiError(
        415, "Unsupported document type: send JPEG, PNG, GIF, BMP, WebP or PDF", flat=True
    )


def _exactly_one_input() -> ApiError:
    return ApiError(400, "Provide exactly one of image, image_url or image_base64")


async def _read_multipart(request: web.Request, max_size: int) -> Document:
    image: tuple[str, int, str, Markers, str | None] | None = None
    metadata: dict[str, Any] | None = None
    code_options: tuple[str, ...] | None = None
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                await part.release()
            elif part.name == "image":
                if image is not None:
                    raise _exactly_one_input()
                image = await _stream_image(part, max_size)
            elif part.name == "document_metadata":
                metadata = _parse_metadata_string(await _read_small_part(part))
            elif part.name == _CODE_OPTIONS:
                code_options = _parse_code_options_string(await _read_small_part(part))
            else:
                await part.release()
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise ApiError(400, f"Malformed multipart body: {exc}") from exc
    if image is None:
        raise _exactly_one_input()
    sha256, size, content_type, markers, filename = image
    return Document(sha256, size, content_type, filename, metadata, markers, code_options)


async def _stream_image(
    part: BodyPartReader, max_size: int
) -> tuple[str, int, str, Markers, str | None]:
    hasher = hashlib.sha256()
    scanner = MarkerScanner()
    head = b""
    size = 0
    while chunk := await part.read_chunk(_CHUNK_SIZE):
        size += len(chunk)
        if size > max_size:
            raise _too_large(max_size)
        hasher.update(chunk)
        scanner.feed(chunk)
        if len(head) < SNIFF_HEAD_SIZE:
            head += chunk[: SNIFF_HEAD_SIZE - len(head)]
    content_type = sniff_content_type(head)
    if content_type is None:
        raise _unsupported_type()
    return hasher.hexdigest(), size, content_type, scanner.finish(), part.filename


async def _read_small_part(part: BodyPartReader) -> bytes:
    data = b""
    while chunk := await part.read_chunk(_CHUNK_SIZE):
        data += chunk
        if len(data) > _METADATA_LIMIT:
            raise ApiError(413, "document_metadata is too large")
    return data


def _parse_metadata_string(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"document_metadata is not valid JSON: {exc}") from exc
    return _check_metadata(value)


def _parse_code_options_string(raw: bytes) -> tuple[str, ...] | None:
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"{_CODE_OPTIONS} is not valid JSON: {exc}") from exc
    return _check_code_options(value)


def _check_code_options(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(code, str) for code in value):
        raise ApiError(400, f"{_CODE_OPTIONS} must be a list of document type codes")
    return tuple(value) or None


def _check_metadata(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "document_metadata must be a JSON object")
    return value


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "The request body is too large")
    body = bytearray()
    async for chunk in request.content.iter_chunked(_CHUNK_SIZE):
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "The request body is too large")
    return bytes(body)


async def _read_json(request: web.Request, max_size: int) -> Document:
    raw = await _read_body(request, max_size * 4 // 3 + _JSON_OVERHEAD)
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise ApiError(400, "The JSON body must be an object")
    given = [name for name in _INPUT_FIELDS if payload.get(name) not in (None, "")]
    if len(given) != 1:
        raise _exactly_one_input()
    raw_metadata = payload.get("document_metadata")
    metadata = None if raw_metadata is None else _check_metadata(raw_metadata)
    declared_type = payload.get("image_content_type")
    if declared_type is not None and not isinstance(declared_type, str):
        raise ApiError(400, "image_content_type must be a string")
    code_options = _check_code_options(payload.get(_CODE_OPTIONS))
    if given == ["image_url"] and is_loopback_url(payload["image_url"]):
        document = await _fetched_document(payload["image_url"], metadata, max_size)
    elif given == ["image_url"]:
        document = _url_document(payload["image_url"], metadata)
    else:
        document = _base64_document(payload["image_base64"], metadata, max_size)
    return dataclasses.replace(document, code_options=code_options)


def is_loopback_url(url: object) -> bool:
    """True for an http(s) URL whose host is localhost or a loopback address."""
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


async def _fetched_document(url: str, metadata: dict[str, Any] | None, max_size: int) -> Document:
    """GET a loopback URL and read the body as an upload would be read (never whole)."""
    hasher = hashlib.sha256()
    scanner = MarkerScanner()
    head = b""
    size = 0
    timeout = aiohttp.ClientTimeout(total=300)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as answer:
            if answer.status != 200:
                raise ApiError(400, f"image_url could not be fetched: HTTP {answer.status}")
            async for chunk in answer.content.iter_chunked(_CHUNK_SIZE):
                size += len(chunk)
                if size > max_size:
                    raise _too_large(max_size)
                hasher.update(chunk)
                scanner.feed(chunk)
                if len(head) < SNIFF_HEAD_SIZE:
                    head += chunk[: SNIFF_HEAD_SIZE - len(head)]
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ApiError(400, f"image_url could not be fetched: {type(exc).__name__}") from exc
    content_type = sniff_content_type(head)
    if content_type is None:
        raise _unsupported_type()
    name = PurePosixPath(urlsplit(url).path).name
    return Document(
        sha256=hasher.hexdigest(),
        size=size,
        content_type=content_type,
        original_filename=name or None,
        metadata=metadata,
        markers=scanner.finish(),
    )


def _url_document(url: object, metadata: dict[str, Any] | None) -> Document:
    """Describe a URL input from the URL alone: the emulator has no network to fetch it."""
    if not isinstance(url, str):
        raise ApiError(400, "image_url must be a string")
    encoded = url.encode()
    name = PurePosixPath(urlsplit(url).path).name
    content_type = _EXTENSION_TYPES.get(PurePosixPath(name).suffix.lower(), "application/pdf")
    return Document(
        sha256=hashlib.sha256(encoded).hexdigest(),
        size=0,
        content_type=content_type,
        original_filename=name or None,
        metadata=metadata,
        markers=scan_markers(encoded),
    )


def _base64_document(encoded: object, metadata: dict[str, Any] | None, max_size: int) -> Document:
    if not isinstance(encoded, str):
        raise ApiError(400, "image_base64 must be a string")
    if encoded.startswith("data:"):
        prefix, comma, encoded = encoded.partition(",")
        if not comma or not prefix.endswith(";base64"):
            raise ApiError(400, "image_base64 has a malformed data URI prefix")
    if len(encoded) // 4 * 3 > max_size + 3:
        raise _too_large(max_size)
    data = _decode_base64(encoded)
    if len(data) > max_size:
        raise _too_large(max_size)
    content_type = sniff_content_type(data[:SNIFF_HEAD_SIZE])
    if content_type is None:
        raise _unsupported_type()
    return Document(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        content_type=content_type,
        original_filename=None,
        metadata=metadata,
        markers=scan_markers(data),
    )


def _decode_base64(encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        pass
    # Tools like `base64` wrap lines; whitespace is harmless, anything else is an error.
    try:
        return base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"image_base64 is not valid base64: {exc}") from exc
