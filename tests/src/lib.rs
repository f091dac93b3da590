//! Harnesses for end-to-end tests.
