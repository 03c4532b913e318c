//! Criterion benchmark: rendering a run detail view.
fn main() {}
