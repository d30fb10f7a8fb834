"""The public surface: ``__all__`` matches the facade, sync and async classes mirror each other."""

from __future__ import annotations

import inspect
import types

import pytest

import docutray_watch.client as facade
from docutray_watch.client import (
    AsyncClient,
    AsyncDocumentTypes,
    AsyncDocumentTypesWithRawResponse,
    AsyncIdentificationStatus,
    AsyncIdentify,
    AsyncIdentifyWithRawResponse,
    AsyncStepExecutionStatus,
    AsyncSteps,
    AsyncStepsWithRawResponse,
    Client,
    DocumentTypes,
    DocumentTypesWithRawResponse,
    IdentificationStatus,
    Identify,
    IdentifyWithRawResponse,
    StepExecutionStatus,
    Steps,
    StepsWithRawResponse,
)


def _public(cls: type) -> set[str]:
    return {name for name in dir(cls) if not name.startswith("_")}


def _instance_public(obj: object) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


class TestExports:
    def test_all_matches_the_facade(self) -> None:
        """``__all__`` lists exactly the public, non-module names the facade defines."""
        exported = {
            name
            for name, value in vars(facade).items()
            if not name.startswith("_") and not isinstance(value, types.ModuleType)
        }
        assert set(facade.__all__) == exported
        assert len(facade.__all__) == len(set(facade.__all__))

    def test_every_name_resolves(self) -> None:
        """Each name in ``__all__`` is importable from the facade."""
        for name in facade.__all__:
            assert getattr(facade, name) is not None

    @pytest.mark.parametrize(
        "name",
        [
            "Client",
            "AsyncClient",
            "StepExecutionStatus",
            "RawResponse",
            "DocuTrayError",
            "APIConnectionError",
            "APITimeoutError",
            "APIError",
            "AuthenticationError",
            "BadRequestError",
            "ConflictError",
            "InternalServerError",
            "NotFoundError",
            "PermissionDeniedError",
            "RateLimitError",
            "UnprocessableEntityError",
            "IdentificationStatus",
            "IdentificationResult",
            "DocumentTypeMatch",
            "DocumentType",
            "Page",
            "AsyncPage",
        ],
    )
    def test_official_sdk_names(self, name: str) -> None:
        """Every name the official SDK exports for this surface is exported here too."""
        assert name in facade.__all__


class TestMirrors:
    def test_clients(self) -> None:
        """Client and AsyncClient expose the same public names (instances included)."""
        assert _public(Client) == _public(AsyncClient)
        sync, asynchronous = Client(api_key="k"), AsyncClient(api_key="k")
        assert _instance_public(sync) == _instance_public(asynchronous)
        sync.close()

    @pytest.mark.parametrize(
        ("sync", "asynchronous", "raw", "async_raw"),
        [
            (Steps, AsyncSteps, StepsWithRawResponse, AsyncStepsWithRawResponse),
            (Identify, AsyncIdentify, IdentifyWithRawResponse, AsyncIdentifyWithRawResponse),
            (
                DocumentTypes,
                AsyncDocumentTypes,
                DocumentTypesWithRawResponse,
                AsyncDocumentTypesWithRawResponse,
            ),
        ],
    )
    def test_resources(self, sync: type, asynchronous: type, raw: type, async_raw: type) -> None:
        """Each sync resource and its async twin, and their raw-response views, mirror each
        other."""
        assert _public(sync) == _public(asynchronous)
        assert _public(raw) == _public(async_raw)
        assert _public(sync) - {"with_raw_response"} == _public(raw)

    def test_identify_has_the_official_names(self) -> None:
        """The identify resource has the official SDK's methods; its status its helpers."""
        assert {"run", "run_async", "get_status", "with_raw_response"} <= _public(Identify)
        assert {"identification_id", "is_complete", "is_success", "is_error", "wait"} <= (
            _public(IdentificationStatus) | set(IdentificationStatus.model_fields)
        )

    @pytest.mark.parametrize(
        ("sync", "asynchronous"),
        [
            (Steps.run_async, AsyncSteps.run_async),
            (Steps.get_status, AsyncSteps.get_status),
            (StepsWithRawResponse.run_async, AsyncStepsWithRawResponse.run_async),
            (StepsWithRawResponse.get_status, AsyncStepsWithRawResponse.get_status),
            (StepExecutionStatus.wait, AsyncStepExecutionStatus.wait),
            (Identify.run, AsyncIdentify.run),
            (Identify.run_async, AsyncIdentify.run_async),
            (Identify.get_status, AsyncIdentify.get_status),
            (IdentifyWithRawResponse.run, AsyncIdentifyWithRawResponse.run),
            (IdentifyWithRawResponse.run_async, AsyncIdentifyWithRawResponse.run_async),
            (IdentifyWithRawResponse.get_status, AsyncIdentifyWithRawResponse.get_status),
            (IdentificationStatus.wait, AsyncIdentificationStatus.wait),
            (DocumentTypes.list, AsyncDocumentTypes.list),
            (DocumentTypesWithRawResponse.list, AsyncDocumentTypesWithRawResponse.list),
        ],
    )
    def test_same_parameters(self, sync: object, asynchronous: object) -> None:
        """Mirrored methods take the same parameters; the async ones are coroutines."""
        assert list(inspect.signature(sync).parameters) == list(  # type: ignore[arg-type]
            inspect.signature(asynchronous).parameters  # type: ignore[arg-type]
        )
        assert inspect.iscoroutinefunction(asynchronous)
        assert not inspect.iscoroutinefunction(sync)

    def test_resources_are_attributes(self) -> None:
        """``client.steps`` is the resource, leaving room for more resources beside it."""
        client = Client(api_key="k")
        assert isinstance(client.steps, Steps)
        assert isinstance(client.steps.with_raw_response, StepsWithRawResponse)
        assert isinstance(client.identify, Identify)
        assert isinstance(client.document_types, DocumentTypes)
        client.close()
