//! Tail sampling: whole traces held until they can be judged, then kept or dropped.
//! `policies.rs` judges a trace by `traces.tail.policies`.

pub mod policies;
