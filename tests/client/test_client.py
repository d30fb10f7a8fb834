"""Client and AsyncClient construction: keys, URLs, timeouts, retries, pools, context managers."""

from __future__ import annotations

import inspect

import httpx
import pytest

from docutray_watch import __version__
from docutray_watch.client import (
    DEFAULT_TIMEOUT,
    AsyncClient,
    AuthenticationError,
    Client,
    DocuTrayError,
)

from .conftest import API_KEY, PDF, FakeAPI, FakeTransport, Flavor

_CLIENTS = [Client, AsyncClient]


@pytest.fixture(name="clean_env", autouse=True)
def clean_env_fixture(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start without DocuTray environment variables."""
    monkeypatch.delenv("DOCUTRAY_API_KEY", raising=False)
    monkeypatch.delenv("DOCUTRAY_BASE_URL", raising=False)


class TestConstruction:
    @pytest.mark.parametrize("client_class", _CLIENTS)
    def test_missing_key(self, client_class: type[Client | AsyncClient]) -> None:
        """No key anywhere raises AuthenticationError (a DocuTrayError) naming the variable."""
        with pytest.raises(AuthenticationError, match="DOCUTRAY_API_KEY") as caught:
            client_class()
        assert isinstance(caught.value, DocuTrayError)

    @pytest.mark.parametrize("client_class", _CLIENTS)
    @pytest.mark.parametrize("key", ["", "   ", "two words", "tab\tkey", "nul\x00"])
    def test_unusable_key(self, client_class: type[Client | AsyncClient], key: str) -> None:
        """Blank keys and keys with inner whitespace or control characters are refused."""
        with pytest.raises(AuthenticationError):
            client_class(api_key=key)

    @pytest.mark.parametrize("client_class", _CLIENTS)
    def test_environment_fallbacks(
        self, client_class: type[Client | AsyncClient], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """DOCUTRAY_API_KEY and DOCUTRAY_BASE_URL are used when no argument is given."""
        monkeypatch.setenv("DOCUTRAY_API_KEY", "env-key\n")
        monkeypatch.setenv("DOCUTRAY_BASE_URL", "http://127.0.0.1:9999/")
        client = client_class()
        assert client._options.api_key == "env-key"
        assert client.base_url == "http://127.0.0.1:9999"

    @pytest.mark.parametrize("client_class", _CLIENTS)
    def test_arguments_beat_environment(
        self, client_class: type[Client | AsyncClient], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Explicit arguments win over the environment."""
        monkeypatch.setenv("DOCUTRAY_API_KEY", "env-key")
        monkeypatch.setenv("DOCUTRAY_BASE_URL", "http://127.0.0.1:9999")
        client = client_class(api_key="arg-key", base_url="http://127.0.0.1:1234")
        assert client._options.api_key == "arg-key"
        assert client.base_url == "http://127.0.0.1:1234"

    @pytest.mark.parametrize("client_class", _CLIENTS)
    def test_defaults(self, client_class: type[Client | AsyncClient]) -> None:
        """Default base URL, timeouts (5/60/60/10), 2 retries and a 60 s Retry-After ceiling."""
        client = client_class(api_key=API_KEY)
        assert client.base_url == "https://app.docutray.com"
        assert client.timeout == DEFAULT_TIMEOUT
        assert (client.timeout.connect, client.timeout.read) == (5.0, 60.0)
        assert (client.timeout.write, client.timeout.pool) == (60.0, 10.0)
        assert client.max_retries == 2
        assert client.max_retry_wait == 60.0

    @pytest.mark.parametrize("client_class", _CLIENTS)
    def test_float_timeout(self, client_class: type[Client | AsyncClient]) -> None:
        """A float timeout applies to connect, read, write and pool."""
        client = client_class(api_key=API_KEY, timeout=7.5)
        assert client.timeout == httpx.Timeout(7.5)

    @pytest.mark.parametrize("client_class", _CLIENTS)
    def test_negative_retries(self, client_class: type[Client | AsyncClient]) -> None:
        """max_retries below 0 is a ValueError."""
        with pytest.raises(ValueError, match="max_retries"):
            client_class(api_key=API_KEY, max_retries=-1)

    @pytest.mark.parametrize("client_class", _CLIENTS)
    def test_bad_base_url(self, client_class: type[Client | AsyncClient]) -> None:
        """A base URL without http(s) scheme is a ValueError at construction."""
        with pytest.raises(ValueError, match="base_url"):
            client_class(api_key=API_KEY, base_url="app.docutray.com")

    def test_wrong_pool_type(self) -> None:
        """Each client insists on its own kind of httpx pool."""
        with pytest.raises(TypeError):
            Client(api_key=API_KEY, http_client=httpx.AsyncClient())  # type: ignore[arg-type]
        with httpx.Client() as pool, pytest.raises(TypeError):
            AsyncClient(api_key=API_KEY, http_client=pool)  # type: ignore[arg-type]

    @pytest.mark.parametrize("client_class", _CLIENTS)
    def test_repr_hides_the_key(self, client_class: type[Client | AsyncClient]) -> None:
        """repr() shows the key's first five characters then ***, as the official SDK does."""
        client = client_class(api_key="sk_secret_key_12345", base_url="https://custom.api.com")
        text = repr(client)
        assert text == (
            f"{client_class.__name__}(api_key=sk_se***, base_url='https://custom.api.com')"
        )
        assert "sk_secret" not in text
        assert repr(client._options).count("api_key") == 0

    @pytest.mark.parametrize("client_class", _CLIENTS)
    @pytest.mark.parametrize("key", ["k", "12345"])
    def test_repr_of_a_short_key_is_stars_only(
        self, client_class: type[Client | AsyncClient], key: str
    ) -> None:
        """A key of five characters or fewer shows as *** alone."""
        assert "(api_key=***, base_url=" in repr(client_class(api_key=key))

    def test_same_signature(self) -> None:
        """Client and AsyncClient take the same keyword-only arguments."""
        sync = inspect.signature(Client.__init__).parameters
        asynchronous = inspect.signature(AsyncClient.__init__).parameters
        assert list(sync) == list(asynchronous)
        assert list(sync)[1:6] == ["api_key", "base_url", "timeout", "max_retries", "http_client"]
        assert all(p.kind is p.KEYWORD_ONLY for name, p in sync.items() if name != "self")


class TestOwnPool:
    def test_sync_context_manager_closes_its_pool(self) -> None:
        """``with Client()`` closes the pool it created."""
        with Client(api_key=API_KEY) as client:
            pool = client._http
        assert pool.is_closed

    async def test_async_context_manager_closes_its_pool(self) -> None:
        """``async with AsyncClient()`` closes the pool it created."""
        async with AsyncClient(api_key=API_KEY) as client:
            pool = client._http
        assert pool.is_closed

    def test_close(self) -> None:
        """close() closes an owned pool."""
        client = Client(api_key=API_KEY)
        client.close()
        assert client._http.is_closed


class TestCallerPool:
    async def test_caller_pool_is_used_and_left_open(self, flavor: Flavor, api: FakeAPI) -> None:
        """A caller's pool sends the requests, and closing the client leaves it open."""
        client = flavor.make()
        await flavor.call(client.steps.run_async, "step_1", file=PDF)
        await flavor.call(client.close)
        assert not client._http.is_closed
        assert len(api.seen) == 1

    def test_caller_hooks_and_headers_apply(self, api: FakeAPI) -> None:
        """The caller's event hooks fire; our URL, auth and User-Agent override its defaults."""
        hooked: list[str] = []
        pool = httpx.Client(
            transport=FakeTransport(api),
            base_url="http://elsewhere.invalid",
            headers={"User-Agent": "other", "Authorization": "Bearer other", "X-Trace": "t1"},
            auth=("user", "pass"),
            event_hooks={"request": [lambda request: hooked.append(request.url.host)]},
        )
        with pool, Client(api_key=API_KEY, base_url="http://127.0.0.1:8", http_client=pool) as c:
            c.steps.get_status("exec_1")
        (seen,) = api.seen
        assert hooked == ["127.0.0.1"]
        assert seen.headers["authorization"] == f"Bearer {API_KEY}"
        assert seen.headers["user-agent"] == f"docutray-watch/{__version__}"
        assert seen.headers["x-trace"] == "t1"

    async def test_async_caller_hooks_apply(self, api: FakeAPI) -> None:
        """The async client fires the caller's async event hooks."""
        hooked: list[str] = []

        async def hook(request: httpx.Request) -> None:
            hooked.append(request.method)

        async with httpx.AsyncClient(
            transport=FakeTransport(api), event_hooks={"request": [hook]}
        ) as pool:
            client = AsyncClient(api_key=API_KEY, http_client=pool)
            await client.steps.run_async("step_1", url="https://example.com/a.pdf")
            await client.close()
            assert not pool.is_closed
        assert hooked == ["POST"]
