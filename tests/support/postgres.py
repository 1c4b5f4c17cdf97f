"""`postgres`: a throwaway PostgreSQL cluster for the test session, for any test directory
(`new_database()` gives each test a database of its own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.pg import PostgresCluster

__all__ = ["PostgresCluster", "postgres"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
