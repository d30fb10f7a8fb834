"""Everything ``Client`` and ``AsyncClient`` share: options, request specs, error mapping, parsing.

The two clients differ only in how they send (``httpx.Client`` vs ``httpx.AsyncClient``); what
a request looks like and what a response means is decided here, once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from docutray_watch._version import __version__
from docutray_watch.client._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    error_class_for_status,
    extract_error_message,
)
from docutray_watch.client._files import (
    FileInput,
    check_content_type,
    prepare_base64,
    prepare_file,
)
from docutray_watch.client._models import PollableStatus
from docutray_watch.client._multipart import MultipartBody
from docutray_watch.client._request import RequestSpec, UploadHints
from docutray_watch.client._retry import RetryInfo, RetryPolicy

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_MAX_RETRY_WAIT",
    "DEFAULT_TIMEOUT",
    "IDENTIFY_ASYNC_PATH",
    "IDENTIFY_PATH",
    "USER_AGENT",
    "BaseClient",
    "ClientOptions",
    "RequestSpec",
    "UploadHints",
    "build_document_request",
    "build_get_status_request",
    "build_http_request",
    "build_identify_request",
    "build_identify_status_request",
    "build_list_document_types_request",
    "build_run_async_request",
    "connection_error",
    "json_object",
    "mask_api_key",
    "parse_status",
    "raise_for_status",
    "redact_request",
    "validate_body",
]

DEFAULT_BASE_URL = "https://app.docutray.com"
DEFAULT_TIMEOUT = httpx.Timeout(connect=5.0, read=60.0, write=60.0, pool=10.0)
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_RETRY_WAIT = 60.0
API_KEY_ENV = "DOCUTRAY_API_KEY"
BASE_URL_ENV = "DOCUTRAY_BASE_URL"
USER_AGENT = f"docutray-watch/{__version__}"

_REDACTED = "[REDACTED]"

# httpx failures that happen before a single byte of the request left this host.
_NOT_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)
# ...and the ones another attempt cannot fix.
_HOPELESS = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.TooManyRedirects)


@dataclass(frozen=True)
class ClientOptions:
    """Resolved client settings; ``api_key`` stays out of the repr."""

    api_key: str = field(repr=False)
    base_url: str
    timeout: httpx.Timeout
    max_retries: int
    max_retry_wait: float


def resolve_options(
    *,
    api_key: str | None,
    base_url: str | None,
    timeout: float | httpx.Timeout | None,
    max_retries: int | None,
    max_retry_wait: float | None,
) -> ClientOptions:
    """Apply environment fallbacks and defaults, and reject unusable values."""
    key = (api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")).strip()
    if not key:
        raise AuthenticationError(
            f"No API key provided: pass api_key=... or set the {API_KEY_ENV} environment variable.",
            status_code=401,
        )
    if not key.isascii() or not key.isprintable() or any(c.isspace() for c in key):
        # an Authorization header with such a key would fail later, and the error could quote it
        raise AuthenticationError(
            "The API key contains whitespace or non-printable characters.", status_code=401
        )
    url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
    retries = DEFAULT_MAX_RETRIES if max_retries is None else max_retries
    if retries < 0:
        raise ValueError("max_retries must be >= 0")
    retry_wait = DEFAULT_MAX_RETRY_WAIT if max_retry_wait is None else max_retry_wait
    if retry_wait < 0:
        raise ValueError("max_retry_wait must be >= 0")
    if timeout is None:
        resolved_timeout = DEFAULT_TIMEOUT
    elif isinstance(timeout, httpx.Timeout):
        resolved_timeout = timeout
    else:
        resolved_timeout = httpx.Timeout(timeout)
    return ClientOptions(
        api_key=key,
        base_url=url,
        timeout=resolved_timeout,
        max_retries=retries,
        max_retry_wait=retry_wait,
    )


def mask_api_key(api_key: str) -> str:
    """The key as a repr shows it: its first five characters then `***`; `***` if that short."""
    return "***" if len(api_key) <= 5 else f"{api_key[:5]}***"


class BaseClient:
    """Settings, retry policy and repr shared by ``Client`` and ``AsyncClient``."""

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout: float | httpx.Timeout | None,
        max_retries: int | None,
        max_retry_wait: float | None,
        on_retry: Callable[[RetryInfo], None] | None,
        retry_filter: Callable[[BaseException], bool] | None = None,
    ) -> None:
        self._options = resolve_options(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
        )
        self._retry_policy = RetryPolicy(
            max_retries=self._options.max_retries,
            max_retry_wait=self._options.max_retry_wait,
            on_retry=on_retry,
            retry_filter=retry_filter,
        )

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._options.base_url

    @property
    def timeout(self) -> httpx.Timeout:
        """The timeouts applied to every request."""
        return self._options.timeout

    @property
    def max_retries(self) -> int:
        """How many times a failed request may be retried (see the POST rule)."""
        return self._options.max_retries

    @property
    def max_retry_wait(self) -> float:
        """The longest ``Retry-After`` the client sleeps through before raising instead."""
        return self._options.max_retry_wait

    def __repr__(self) -> str:
        # As the official SDK: the key's first five characters (a prefix such as `sk_li` tells
        # keys apart; the key itself stays unreadable), `***` alone for a key that short.
        key = mask_api_key(self._options.api_key)
        return f"{type(self).__name__}(api_key={key}, base_url={self.base_url!r})"


def _path_segment(value: str, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return quote(value, safe="")


def build_document_request(
    path: str,
    *,
    file: FileInput | None,
    url: str | None,
    file_base64: str | None,
    content_type: str | None,
    filename: str | None,
    form_fields: Mapping[str, str] | None = None,
    json_fields: Mapping[str, Any] | None = None,
    declare_upload_type: bool = False,
) -> RequestSpec:
    """A POST that sends one document (steps, identify); all local checks happen here.

    Exactly one of ``file``, ``url`` and ``file_base64``. ``form_fields`` go beside the file part
    of a multipart body, ``json_fields`` into a JSON body. ``declare_upload_type`` adds the
    resolved type as the ``image_content_type`` form field (the identify endpoints read it).
    """
    given = [
        name
        for name, value in (("file", file), ("url", url), ("file_base64", file_base64))
        if value is not None
    ]
    if len(given) != 1:
        # The official SDK's wording (its tests match on it), then what was wrong.
        detail = f"only one, got {' and '.join(given)}" if given else "got none"
        raise ValueError(f"Must provide one of: file, url, or file_base64 ({detail})")
    if file is not None:
        source = prepare_file(file, content_type=content_type, filename=filename)
        fields = dict(form_fields or {})
        if declare_upload_type:
            fields = {"image_content_type": source.content_type, **fields}
        return RequestSpec(
            "POST",
            path,
            multipart=MultipartBody(source, fields=fields),
            hints=UploadHints(source.content_type, source.size),
        )
    body: dict[str, Any]
    if url is not None:
        body = {"image_url": url}
        hints = UploadHints()
        if content_type is not None:
            body["image_content_type"] = check_content_type(content_type, document=url)
            hints = UploadHints(body["image_content_type"])
    else:
        assert file_base64 is not None  # exactly one input was checked above
        document = prepare_base64(file_base64, content_type=content_type)
        body = dict(document.fields)
        hints = UploadHints(document.content_type, document.size)
    if json_fields:
        json.dumps(dict(json_fields))  # fail here, not half-way through sending
        body.update(json_fields)
    return RequestSpec("POST", path, json=body, hints=hints)


def build_run_async_request(
    step_id: str,
    *,
    file: FileInput | None = None,
    url: str | None = None,
    file_base64: str | None = None,
    content_type: str | None = None,
    document_metadata: Mapping[str, Any] | None = None,
    filename: str | None = None,
) -> RequestSpec:
    """The POST that starts a step execution."""
    path = f"/api/steps-async/{_path_segment(step_id, 'step_id')}"
    metadata = dict(document_metadata) if document_metadata is not None else None
    form = {} if metadata is None else {"document_metadata": json.dumps(metadata)}
    return build_document_request(
        path,
        file=file,
        url=url,
        file_base64=file_base64,
        content_type=content_type,
        filename=filename,
        form_fields=form,
        json_fields=None if metadata is None else {"document_metadata": metadata},
    )


def build_get_status_request(execution_id: str) -> RequestSpec:
    """The GET that reads an execution's status."""
    return RequestSpec(
        "GET", f"/api/steps-async/status/{_path_segment(execution_id, 'execution_id')}"
    )


IDENTIFY_PATH = "/api/identify"
IDENTIFY_ASYNC_PATH = "/api/identify-async"


def _code_options(options: Sequence[str] | None) -> list[str] | None:
    if options is None:
        return None
    if isinstance(options, str) or not all(isinstance(code, str) and code for code in options):
        raise ValueError("document_type_code_options must be a list of non-empty strings")
    # An empty list limits nothing; the official SDK leaves it out too.
    return list(options) or None


def build_identify_request(
    path: str,
    *,
    file: FileInput | None = None,
    url: str | None = None,
    file_base64: str | None = None,
    content_type: str | None = None,
    document_type_code_options: Sequence[str] | None = None,
    filename: str | None = None,
) -> RequestSpec:
    """The POST of an identification (``path`` is ``IDENTIFY_PATH`` or ``IDENTIFY_ASYNC_PATH``).

    The candidates go as a JSON-encoded string in multipart, as a list in JSON.
    """
    options = _code_options(document_type_code_options)
    form = None if options is None else {"document_type_code_options": json.dumps(options)}
    return build_document_request(
        path,
        file=file,
        url=url,
        file_base64=file_base64,
        content_type=content_type,
        filename=filename,
        form_fields=form,
        json_fields=None if options is None else {"document_type_code_options": options},
        declare_upload_type=True,
    )


def build_identify_status_request(identification_id: str) -> RequestSpec:
    """The GET that reads an identification's status."""
    segment = _path_segment(identification_id, "identification_id")
    return RequestSpec("GET", f"{IDENTIFY_ASYNC_PATH}/status/{segment}")


def build_list_document_types_request(
    *, page: int | None = None, limit: int | None = None, search: str | None = None
) -> RequestSpec:
    """The GET of one page of the account's document types."""
    params: dict[str, str | int] = {"page": 1 if page is None else page}
    if params["page"] < 1:  # type: ignore[operator]
        raise ValueError("page must be >= 1")
    if limit is not None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        params["limit"] = limit
    if search is not None:
        params["search"] = search
    return RequestSpec("GET", "/api/document-types", params=params)


def build_http_request(
    http_client: httpx.Client | httpx.AsyncClient,
    options: ClientOptions,
    spec: RequestSpec,
    content: Any = None,
) -> httpx.Request:
    """The httpx request for one attempt; our URL, auth and User-Agent win over the pool's."""
    headers = {
        "Authorization": f"Bearer {options.api_key}",
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
    }
    if spec.multipart is not None:
        headers.update(spec.multipart.headers)
    return http_client.build_request(
        spec.method,
        options.base_url + spec.path,
        headers=headers,
        json=spec.json,
        params=spec.params,
        content=content,
        timeout=options.timeout,
    )


def redact_request(request: httpx.Request) -> None:
    """Blank the Authorization header of a sent request.

    httpx attaches the request to its exceptions and responses; once sent, nothing needs the
    real header, and this keeps it out of anything a caller might log.
    """
    if "authorization" in request.headers:
        request.headers["Authorization"] = _REDACTED


def scrub(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced."""
    return text.replace(secret, _REDACTED) if secret and secret in text else text


def _scrub_json(value: Any, secret: str) -> Any:
    if isinstance(value, str):
        return scrub(value, secret)
    if isinstance(value, dict):
        return {key: _scrub_json(item, secret) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub_json(item, secret) for item in value]
    return value


def raise_for_status(response: httpx.Response, api_key: str) -> None:
    """Raise the typed ``APIError`` for an error response (a server echoing the key is
    scrubbed)."""
    if response.is_success:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text or None
    body = _scrub_json(body, api_key)
    status_code = response.status_code
    raise error_class_for_status(status_code)(
        scrub(extract_error_message(body, status_code), api_key),
        status_code=status_code,
        request_id=response.headers.get("x-request-id"),
        body=body,
        headers=response.headers,
    )


def connection_error(
    exc: httpx.RequestError, spec: RequestSpec, api_key: str
) -> APIConnectionError:
    """The ``APIConnectionError`` (or ``APITimeoutError``) for an httpx failure."""
    sent = not isinstance(exc, _NOT_SENT)
    kind = "Request timed out" if isinstance(exc, httpx.TimeoutException) else "Connection error"
    detail = scrub(str(exc), api_key) or "no detail"
    consequence = (
        "the service may have received the request" if sent else "the request was not sent"
    )
    message = f"{kind} on {spec.method} {spec.path} ({type(exc).__name__}: {detail}); {consequence}"
    error_class = APITimeoutError if isinstance(exc, httpx.TimeoutException) else APIConnectionError
    return error_class(message, request_sent=sent, should_retry=not isinstance(exc, _HOPELESS))


S = TypeVar("S", bound=PollableStatus)
M = TypeVar("M", bound=BaseModel)


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise APIError(
            "The service answered with a body that is not JSON",
            status_code=response.status_code,
            request_id=response.headers.get("x-request-id"),
            body=response.text,
            headers=response.headers,
        ) from None


def validate_body(response: httpx.Response, model: type[M], payload: Any = None) -> M:
    """``model`` from a successful response's JSON body (or from ``payload``, taken from it);
    an unreadable or unexpected body is an ``APIError``."""
    if payload is None:
        payload = _json_body(response)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise APIError(
            f"The service answered with an unexpected body: {exc.error_count()} field error(s)",
            status_code=response.status_code,
            request_id=response.headers.get("x-request-id"),
            body=payload,
            headers=response.headers,
        ) from exc


def parse_status(
    response: httpx.Response, model: type[S], *, resource: object, hints: UploadHints
) -> S:
    """The typed status in a successful response, bound to ``resource`` so it can ``wait()``."""
    status = validate_body(response, model)
    return status._bind(resource, content_type=hints.content_type, size=hints.size)


def json_object(response: httpx.Response) -> dict[str, Any]:
    """A successful response's JSON body, which must be an object."""
    payload = _json_body(response)
    if not isinstance(payload, dict):
        raise APIError(
            "The service answered with JSON that is not an object",
            status_code=response.status_code,
            request_id=response.headers.get("x-request-id"),
            body=payload,
            headers=response.headers,
        )
    return payload
