"""Tests for `docutray_watch.sinks.database` against SQLite files and the test PostgreSQL."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from pydantic import ValidationError
from structlog.testing import capture_logs

from docutray_watch._testkit import make_record
from docutray_watch.config import ConfigError, load_config, parse_config
from docutray_watch.plugins import collect_sink_types, get_plugin_manager
from docutray_watch.records import Identification, ResultRecord, TypeMatch
from docutray_watch.sinks.base import PermanentSinkError, SinkError
from docutray_watch.sinks.database import (
    KEY_COLUMNS,
    DatabaseConfig,
    DatabaseSink,
    _sqltable,
    results_table,
)

MakeSink = Callable[..., DatabaseSink]
PASSWORD = "s3cr3t-pw-never-shown"


@pytest.fixture(name="make_sink")
def make_sink_fixture() -> Iterator[MakeSink]:
    """Build opened database sinks; all are closed afterwards."""
    sinks: list[DatabaseSink] = []

    def make(url: str, table: str, **options: Any) -> DatabaseSink:
        block = {"type": "database", "url": url, "table": table, **options}
        sink = DatabaseSink(
            DatabaseConfig.model_validate(block), pipeline="invoices", sink_id="database"
        )
        sink.open()
        sinks.append(sink)
        return sink

    yield make
    for sink in sinks:
        sink.close()


def _utc(moment: datetime) -> datetime:
    """Timestamps read back from SQLite carry no zone; the sink stores them in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _assert_row_matches(row: Any, record: ResultRecord) -> None:
    document = record.document
    assert (row["pipeline"], row["sha256"], row["step_id"]) == record.key
    assert row["document_name"] == document.name
    assert row["document_path"] == document.path
    assert row["relative_path"] == document.relative_path
    assert row["size"] == document.size
    assert row["content_type"] == document.content_type
    assert row["execution_id"] == record.execution_id
    assert row["status"] == record.status
    assert row["data"] == record.to_dict()["data"]
    assert row["error"] == record.error
    assert row["original_filename"] == record.original_filename
    assert _utc(row["submitted_at"]) == record.submitted_at
    assert _utc(row["completed_at"]) == record.completed_at
    assert _utc(row["request_timestamp"]) == datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
    assert _utc(row["response_timestamp"]) == datetime(2026, 1, 15, 10, 30, 45, tzinfo=UTC)
    assert row["schema_version"] == 1


def _pipeline_config(tmp_path: Path, sink: dict[str, Any]) -> dict[str, Any]:
    return {
        "state_dir": str(tmp_path / "state"),
        "pipelines": [
            {
                "name": "invoices",
                "watch": {"path": str(tmp_path / "inbox")},
                "steps": ["stp_invoice"],
                "sinks": [sink],
            }
        ],
    }


def _config_error(tmp_path: Path, sink: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            _pipeline_config(tmp_path, sink),
            environ={},
        )
    return str(caught.value)


class TestDatabaseConfig:
    """Validation of the database sink block."""

    def test_defaults(self, tmp_path: Path) -> None:
        """Only `url` is required; the table defaults to docutray_results and is created."""
        config = DatabaseConfig.model_validate(
            {"type": "database", "url": f"sqlite:///{tmp_path / 'r.db'}"}
        )
        assert (config.table, config.schema_, config.create_table) == (
            "docutray_results",
            None,
            True,
        )

    def test_bad_table_names_yaml_path(self, tmp_path: Path) -> None:
        """A table name that is not an identifier is reported at its YAML path."""
        url = f"sqlite:///{tmp_path / 'r.db'}"
        message = _config_error(
            tmp_path, {"type": "database", "url": url, "table": "results; DROP TABLE x"}
        )
        assert "pipelines[0].sinks[0].table: String should match pattern" in message

    def test_missing_url_names_yaml_path(self, tmp_path: Path) -> None:
        """A block without `url` is reported at pipelines[0].sinks[0].url."""
        assert "pipelines[0].sinks[0].url: Field required" in _config_error(
            tmp_path, {"type": "database"}
        )

    def test_relative_sqlite_path_follows_the_config_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """sqlite:///results.db is results.db next to the config file, not in the working dir."""
        folder = tmp_path / "conf"
        folder.mkdir()
        monkeypatch.chdir(tmp_path)
        data = _pipeline_config(tmp_path, {"type": "database", "url": "sqlite:///db/results.db"})
        config_file = folder / "config.yaml"
        config_file.write_text(yaml.safe_dump(data))
        config = load_config(config_file)
        url = config.pipelines[0].sinks[0].url.get_secret_value()  # type: ignore[attr-defined]
        assert url == f"sqlite:///{folder / 'db' / 'results.db'}"

    @pytest.mark.parametrize(
        "url",
        [
            "sqlite:////abs/results.db",
            "sqlite:///file:results.db?uri=true",
            "postgresql+psycopg://u@localhost/results.db",
        ],
    )
    def test_other_urls_unchanged(self, url: str) -> None:
        """Absolute SQLite paths, SQLite URIs and other databases are not touched."""
        config = DatabaseConfig.model_validate(
            {"type": "database", "url": url}, context={"config_dir": Path("/etc/x")}
        )
        assert config.url.get_secret_value() == url

    def test_schema_key(self, tmp_path: Path) -> None:
        """The YAML key is `schema`."""
        config = DatabaseConfig.model_validate(
            {"type": "database", "url": f"sqlite:///{tmp_path / 'r.db'}", "schema": "main"}
        )
        assert config.schema_ == "main"

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("not a url", "not a database URL"),
            ("nosuchdb://host/db", "unknown database type 'nosuchdb'"),
            ("postgresql+asyncpg://u@h/db", "asyncio driver"),
            ("sqlite://", "in-memory SQLite"),
            ("sqlite:///:memory:", "in-memory SQLite"),
        ],
    )
    def test_unusable_urls(self, url: str, expected: str) -> None:
        """Unusable URLs are rejected with a reason."""
        with pytest.raises(ValidationError, match=expected):
            DatabaseConfig.model_validate({"type": "database", "url": url})

    def test_missing_postgres_driver_names_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without psycopg, a PostgreSQL URL is refused with the extra to install."""
        monkeypatch.setitem(sys.modules, "psycopg", None)
        with pytest.raises(ValidationError, match=r"docutray-watch\[postgres\]"):
            DatabaseConfig.model_validate(
                {"type": "database", "url": "postgresql+psycopg://u@127.0.0.1/db"}
            )

    def test_plain_postgresql_url_uses_psycopg(self) -> None:
        """A plain postgresql:// URL works with psycopg 3 (psycopg2 is not installed here)."""
        config = DatabaseConfig.model_validate(
            {"type": "database", "url": "postgresql://u@127.0.0.1/db"}
        )
        sink = DatabaseSink(config, pipeline="invoices", sink_id="database")
        assert sink.safe_url.startswith("postgresql+psycopg://")

    def test_password_not_in_config_errors(self, tmp_path: Path) -> None:
        """A refused URL is reported at its YAML path without its password."""
        url = f"nosuchdb://postgres:{PASSWORD}@127.0.0.1/test"
        message = _config_error(tmp_path, {"type": "database", "url": url})
        assert "pipelines[0].sinks[0].url: unknown database type 'nosuchdb'" in message
        assert PASSWORD not in message

    def test_password_hidden(self) -> None:
        """The URL's password shows in no repr and in no message the sink builds."""
        url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1/test"
        config = DatabaseConfig.model_validate({"type": "database", "url": url})
        sink = DatabaseSink(config, pipeline="invoices", sink_id="database")
        assert PASSWORD not in repr(config) + repr(sink) + sink.safe_url
        assert "***" in sink.safe_url


class TestDatabaseSinkTable:
    """Creating and checking the table."""

    def test_table_created_with_key(self, db: Any, make_sink: MakeSink) -> None:
        """The first delivery creates the table; its primary key is (pipeline, sha256, step_id)."""
        with capture_logs() as logs:
            make_sink(db.url, db.table).deliver(make_record())
        inspector = sa.inspect(db.engine)
        assert inspector.has_table(db.table)
        assert inspector.get_pk_constraint(db.table)["constrained_columns"] == list(KEY_COLUMNS)
        columns = {c["name"] for c in inspector.get_columns(db.table)}
        assert columns == {c.name for c in results_table(db.table).columns}
        assert {
            "event": "sink_table_created",
            "sink": "database",
            "table": db.table,
            "log_level": "info",
        } in logs

    @pytest.mark.postgres
    def test_postgres_column_types(self, postgres_db: Any, make_sink: MakeSink) -> None:
        """On PostgreSQL, data and error are JSONB and timestamps carry a time zone."""
        make_sink(postgres_db.url, postgres_db.table).deliver(make_record())
        query = sa.text(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = :table"
        )
        with postgres_db.engine.connect() as conn:
            types = {name: kind for name, kind in conn.execute(query, {"table": postgres_db.table})}
        assert types["data"] == types["error"] == "jsonb"
        for column in ("submitted_at", "completed_at", "delivered_at", "request_timestamp"):
            assert types[column] == "timestamp with time zone"
        assert types["size"] == "bigint"

    def test_check_creates_no_table(self, db: Any, make_sink: MakeSink) -> None:
        """check() (what `validate` runs) only says the first delivery will create the table."""
        with db.engine.connect() as conn:  # an existing, empty database
            conn.execute(sa.text("SELECT 1"))
        note = make_sink(db.url, db.table).check()
        assert note == f"table {db.table} will be created at the first delivery"
        assert not sa.inspect(db.engine).has_table(db.table)

    def test_check_creates_no_sqlite_file(self, tmp_path: Path, make_sink: MakeSink) -> None:
        """check() on a SQLite file that does not exist yet creates neither it nor its folder."""
        path = tmp_path / "results.db"
        note = make_sink(f"sqlite:///{path}", "results").check()
        assert note == f"{path} will be created at the first delivery"
        assert list(tmp_path.iterdir()) == []

    def test_check_reports_a_missing_sqlite_folder(
        self, tmp_path: Path, make_sink: MakeSink
    ) -> None:
        """check() fails when the SQLite file's folder does not exist (no delivery could work)."""
        sink = make_sink(f"sqlite:///{tmp_path / 'nope' / 'results.db'}", "results")
        with pytest.raises(SinkError, match=r"the folder .*nope does not exist"):
            sink.check()
        assert not (tmp_path / "nope").exists()

    def test_missing_table_without_create(self, db: Any, make_sink: MakeSink) -> None:
        """With create_table: false and no table, check() fails saying so."""
        sink = make_sink(db.url, db.table, create_table=False)
        with pytest.raises(SinkError, match=f"table {db.table} .* does not exist"):
            sink.check()
        assert not sa.inspect(db.engine).has_table(db.table)

    def test_existing_table_without_create(self, db: Any, make_sink: MakeSink) -> None:
        """With create_table: false, a prepared table passes check() and receives rows."""
        results_table(db.table).create(db.engine)
        sink = make_sink(db.url, db.table, create_table=False)
        sink.check()
        sink.deliver(make_record())
        assert len(db.rows()) == 1

    def test_table_without_unique_key(self, db: Any, make_sink: MakeSink) -> None:
        """check() refuses a table lacking a unique key on (pipeline, sha256, step_id)."""
        loose = sa.Table(
            db.table,
            sa.MetaData(),
            *(sa.Column(c.name, c.type) for c in results_table(db.table).columns),
        )
        loose.create(db.engine)
        with pytest.raises(SinkError, match="needs a primary key or unique constraint"):
            make_sink(db.url, db.table).check()

    def test_table_missing_columns(self, db: Any, make_sink: MakeSink) -> None:
        """check() names the columns an existing table lacks."""
        sa.Table(db.table, sa.MetaData(), sa.Column("pipeline", sa.String(64))).create(db.engine)
        with pytest.raises(SinkError, match="lacks the columns sha256, step_id"):
            make_sink(db.url, db.table, create_table=False).check()


def _table_before_identification(db: Any) -> None:
    """Create the table as releases before `identification` did (every column but it)."""
    old = results_table(db.table)
    sa.Table(
        db.table,
        sa.MetaData(),
        *(
            sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in old.columns
            if c.name not in _sqltable.ADDED_COLUMNS
        ),
    ).create(db.engine)


IDENTIFIED = Identification(
    code="invoice",
    name="Invoice",
    confidence=0.87,
    alternatives=[TypeMatch(code="receipt", name="Receipt", confidence=0.1)],
)


class TestDatabaseSinkIdentification:
    """The nullable JSON `identification` column, and tables created before it existed."""

    def test_identification_is_stored_as_json(self, db: Any, make_sink: MakeSink) -> None:
        """A routed document's row holds its identification as a JSON object."""
        make_sink(db.url, db.table).deliver(make_record(identification=IDENTIFIED))
        (row,) = db.rows()
        assert row["identification"] == IDENTIFIED.model_dump(mode="json")

    def test_identification_is_null_without_identify(self, db: Any, make_sink: MakeSink) -> None:
        """A pipeline that does not identify stores SQL NULL, not the JSON value null."""
        make_sink(db.url, db.table).deliver(make_record())
        table = sa.Table(db.table, sa.MetaData(), autoload_with=db.engine)
        with db.engine.connect() as conn:
            nulls = conn.execute(
                sa.select(sa.func.count()).where(table.c.identification.is_(None))
            ).scalar_one()
        assert nulls == 1

    def test_existing_table_gains_the_column(self, db: Any, make_sink: MakeSink) -> None:
        """A table of an older release gets `identification` with ALTER TABLE at the first
        delivery; its old rows keep NULL there."""
        _table_before_identification(db)
        old_row = _sqltable.record_row(make_record(step_id="stp_old"))
        del old_row["identification"]
        with db.engine.begin() as conn:
            conn.execute(sa.Table(db.table, sa.MetaData(), autoload_with=conn).insert(), old_row)
        sink = make_sink(db.url, db.table)
        assert sink.check() == (
            f"table {db.table} lacks the column(s) identification: added (ALTER TABLE) at the "
            "first delivery"
        )
        with capture_logs() as logs:
            sink.deliver(make_record(identification=IDENTIFIED))
        assert {"event": "sink_column_added", "column": "identification"}.items() <= next(
            e for e in logs if e["event"] == "sink_column_added"
        ).items()
        by_step = {row["step_id"]: row for row in db.rows()}
        assert by_step["stp_old"]["identification"] is None
        assert by_step["stp_test"]["identification"]["code"] == "invoice"
        assert make_sink(db.url, db.table).check() is None

    def test_existing_table_without_create_table_gains_it_too(
        self, db: Any, make_sink: MakeSink
    ) -> None:
        """create_table: false still adds the nullable column (check() passes before)."""
        _table_before_identification(db)
        sink = make_sink(db.url, db.table, create_table=False)
        assert sink.check() is not None  # a note, not an error
        sink.deliver(make_record(identification=IDENTIFIED))
        assert db.rows()[0]["identification"]["name"] == "Invoice"

    @pytest.mark.postgres
    def test_added_column_is_jsonb_on_postgres(self, postgres_db: Any, make_sink: MakeSink) -> None:
        """On PostgreSQL the added column has the same type as a created one: jsonb."""
        _table_before_identification(postgres_db)
        make_sink(postgres_db.url, postgres_db.table).deliver(make_record())
        query = sa.text(
            "SELECT data_type FROM information_schema.columns "
            "WHERE table_name = :table AND column_name = 'identification'"
        )
        with postgres_db.engine.connect() as conn:
            assert conn.execute(query, {"table": postgres_db.table}).scalar_one() == "jsonb"

    def test_refused_alter_still_delivers(
        self, db: Any, make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A database that refuses ALTER TABLE (no privilege) gets rows without the column, and
        a warning says why."""
        _table_before_identification(db)
        real_text = sa.text

        def refuse_alter(statement: str) -> Any:
            if statement.startswith("ALTER TABLE"):
                return real_text("ALTER TABLE no_such_table_here ADD COLUMN x INTEGER")
            return real_text(statement)

        monkeypatch.setattr(_sqltable.sa, "text", refuse_alter)
        with capture_logs() as logs:
            make_sink(db.url, db.table).deliver(make_record(identification=IDENTIFIED))
        assert any(e["event"] == "sink_column_not_added" for e in logs)
        assert len(db.rows()) == 1


class TestDatabaseSinkDeliver:
    """Storing result records."""

    def test_row_content(self, db: Any, make_sink: MakeSink) -> None:
        """The stored row holds every field of the record."""
        record = make_record(data={"total": 12.5, "lines": [{"sku": "a"}], "name": "año"})
        receipt = make_sink(db.url, db.table).deliver(record)
        assert receipt == {"database": db.url, "table": db.table}
        rows = db.rows()
        assert len(rows) == 1
        _assert_row_matches(rows[0], record)
        assert rows[0]["error"] is None

    def test_redelivery_updates(self, db: Any, make_sink: MakeSink) -> None:
        """Delivering the same key again updates the one row instead of adding one."""
        sink = make_sink(db.url, db.table)
        sink.deliver(make_record(execution_id="exec_1", data={"v": 1}))
        second = make_record(execution_id="exec_2", data={"v": 2})
        sink.deliver(second)
        rows = db.rows()
        assert len(rows) == 1
        _assert_row_matches(rows[0], second)

    def test_two_steps_two_rows(self, db: Any, make_sink: MakeSink) -> None:
        """Two steps of one document are two rows."""
        sink = make_sink(db.url, db.table)
        sink.deliver(make_record(step_id="stp_a"))
        sink.deliver(make_record(step_id="stp_b"))
        assert sorted(row["step_id"] for row in db.rows()) == ["stp_a", "stp_b"]

    @pytest.mark.parametrize(
        "error", ["processing failed", {"code": "E42", "message": "unreadable", "page": 3}]
    )
    def test_error_record(self, db: Any, make_sink: MakeSink, error: Any) -> None:
        """An ERROR record is stored with its error, a string or an object, and no data."""
        record = make_record(status="ERROR", error=error)
        make_sink(db.url, db.table).deliver(record)
        (row,) = db.rows()
        assert (row["status"], row["error"], row["data"]) == ("ERROR", error, None)

    def test_portable_upsert(
        self, db: Any, make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The update-then-insert fallback (databases without ON CONFLICT) never duplicates."""
        monkeypatch.setattr(_sqltable, "_NATIVE_UPSERTS", {})
        sink = make_sink(db.url, db.table)
        sink.deliver(make_record(execution_id="exec_1"))
        sink.deliver(make_record(execution_id="exec_2"))
        sink.deliver(make_record(step_id="stp_other"))
        assert sorted((r["step_id"], r["execution_id"]) for r in db.rows()) == [
            ("stp_other", "exec_test"),
            ("stp_test", "exec_2"),
        ]

    def test_constraint_violation_is_permanent(self, db: Any, make_sink: MakeSink) -> None:
        """A record the table's own constraints refuse fails for good, not with retries."""
        strict = results_table(db.table)
        strict.append_constraint(sa.CheckConstraint("status = 'SUCCESS'"))
        strict.create(db.engine)
        sink = make_sink(db.url, db.table, create_table=False)
        with pytest.raises(PermanentSinkError, match="breaks a constraint"):
            sink.deliver(make_record(status="ERROR"))
        assert db.rows() == []

    @pytest.mark.postgres
    def test_unstorable_data_is_permanent(self, postgres_db: Any, make_sink: MakeSink) -> None:
        """Data PostgreSQL's JSONB cannot hold (a NUL character) fails for good."""
        sink = make_sink(postgres_db.url, postgres_db.table)
        with pytest.raises(PermanentSinkError, match="refused the record"):
            sink.deliver(make_record(data={"text": "a\x00b"}))

    def test_schema(self, tmp_path: Path, make_sink: MakeSink) -> None:
        """With `schema`, the table is created and written in that schema."""
        url = f"sqlite:///{tmp_path / 'r.db'}"
        sink = make_sink(url, "results", schema="main")
        sink.deliver(make_record())
        assert sink.qualified_table == "main.results"
        assert sa.inspect(sa.create_engine(url)).has_table("results", schema="main")


class TestDatabaseSinkOutage:
    """A database that goes away and comes back."""

    @pytest.mark.postgres
    def test_postgres_down_then_back(
        self, pg_proxy: Any, postgres_db: Any, make_sink: MakeSink
    ) -> None:
        """Delivery fails (retried) while PostgreSQL is down, then lands exactly once."""
        url = f"postgresql+psycopg://postgres@127.0.0.1:{pg_proxy.port}/test"
        sink = make_sink(url, postgres_db.table, connect_timeout=2)
        sink.deliver(make_record(step_id="stp_before"))  # the pool now holds a connection
        record = make_record()
        pg_proxy.down()
        with pytest.raises(SinkError, match="database unavailable") as down:
            sink.deliver(record)
        assert not isinstance(down.value, PermanentSinkError)
        pg_proxy.up()
        sink.deliver(record)  # the engine's retry: the dead pooled connection is replaced
        assert len(postgres_db.rows(step_id="stp_test")) == 1
        assert len(postgres_db.rows()) == 2

    @pytest.mark.postgres
    def test_password_never_in_errors(
        self, pg_proxy: Any, postgres_db: Any, make_sink: MakeSink
    ) -> None:
        """Errors from a URL with a password never contain the password, even in tracebacks."""
        url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{pg_proxy.port}/test"
        sink = make_sink(url, postgres_db.table, connect_timeout=2)
        pg_proxy.down()
        actions: list[Callable[[], object]] = [sink.check, lambda: sink.deliver(make_record())]
        for action in actions:
            with pytest.raises(SinkError) as caught:
                action()
            text = "".join(traceback.format_exception(caught.value))
            assert "postgres:***@127.0.0.1" in str(caught.value)
            assert PASSWORD not in text

    def test_sqlite_unavailable_then_back(self, tmp_path: Path, make_sink: MakeSink) -> None:
        """A SQLite file that cannot be opened is a retried failure; once it can, one row lands."""
        folder = tmp_path / "not-yet"
        sink = make_sink(f"sqlite:///{folder / 'r.db'}", "results")
        record = make_record()
        with pytest.raises(SinkError, match="database unavailable") as down:
            sink.deliver(record)
        assert not isinstance(down.value, PermanentSinkError)
        folder.mkdir()
        sink.deliver(record)
        sink.deliver(record)
        with sa.create_engine(f"sqlite:///{folder / 'r.db'}").connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM results")).scalar() == 1


class TestDatabaseSinkRegistration:
    """The sink registers like a plugin."""

    def test_registered(self) -> None:
        """The built-in plugins provide the `database` sink type."""
        types = collect_sink_types(get_plugin_manager(load_entrypoints=False))
        assert types["database"].sink_class is DatabaseSink
        assert types["database"].plugin == "docutray_watch.sinks.database"
