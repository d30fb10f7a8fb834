"""Tests of EmulatorConfig."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from docutray_watch.emulator import DEFAULT_API_KEY, MAX_FILE_SIZE, EmulatorConfig


class TestEmulatorConfig:
    def test_defaults(self) -> None:
        """The defaults are the documented ones: default key, any step, 0.2 s, no faults."""
        config = EmulatorConfig()
        assert config.api_key == DEFAULT_API_KEY == "docutray-emulator-key"
        assert config.step_ids is None
        assert config.latency == 0.2
        assert config.max_file_size == MAX_FILE_SIZE
        assert config.error_rate == config.drop_rate == config.rate_limit_rate == 0.0
        assert config.rate_limit_rps is None

    def test_rejects_unknown_fields(self) -> None:
        """A misspelt option is an error, not silently ignored."""
        with pytest.raises(ValidationError):
            EmulatorConfig(eror_rate=0.5)  # type: ignore[call-arg]

    @pytest.mark.parametrize("field", ["error_rate", "server_error_rate", "drop_rate"])
    def test_rejects_rates_above_one(self, field: str) -> None:
        """Rates are probabilities between 0 and 1."""
        with pytest.raises(ValidationError):
            EmulatorConfig.model_validate({field: 1.5})

    def test_with_changes_validates(self) -> None:
        """with_changes applies valid changes and rejects invalid ones."""
        config = EmulatorConfig().with_changes(latency=1.5, step_ids=["a", "b"])
        assert config.latency == 1.5
        assert config.step_ids == frozenset({"a", "b"})
        with pytest.raises(ValidationError):
            config.with_changes(latency=-1)

    def test_repr_hides_the_api_key(self) -> None:
        """The API key never appears in the config's repr."""
        assert "secret-key-123" not in repr(EmulatorConfig(api_key="secret-key-123"))
