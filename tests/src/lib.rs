//! Privileged integration tests for mountscope live in `tests/`; this library is empty.
