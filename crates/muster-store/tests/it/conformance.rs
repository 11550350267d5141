//! The backend-agnostic conformance suite, one test per case, on each backend.

mod sqlite {
    muster_store::conformance_tests!(crate::fresh_sqlite);
}

/// On a fresh database of its own per case, on the PostgreSQL server that
/// `MUSTER_TEST_POSTGRES` names (127.0.0.1:5432 unless it says otherwise).
mod postgres {
    muster_store::conformance_tests!(crate::fresh_postgres);
}
