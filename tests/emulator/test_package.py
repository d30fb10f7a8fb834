"""Tests of the emulator package's facade."""

from __future__ import annotations

import docutray_watch.emulator as emulator_package


class TestFacade:
    def test_exports_the_public_api(self) -> None:
        """The names other modules rely on are exported, and every exported name exists."""
        assert {
            "DEFAULT_API_KEY",
            "EmulatorConfig",
            "EmulatorServer",
            "EmulatorStats",
            "ExecutionStats",
            "MAX_FILE_SIZE",
            "create_app",
            "sniff_content_type",
        } <= set(emulator_package.__all__)
        for name in emulator_package.__all__:
            assert hasattr(emulator_package, name), name
