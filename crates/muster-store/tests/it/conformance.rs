//! The backend-agnostic conformance suite, one test per case, on SQLite.

muster_store::conformance_tests!(crate::fresh_sqlite);
