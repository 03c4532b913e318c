//! Tests of the update logic.
