//! The delayed-feedback join (issue 31): its rules, its entries, and their Python classes.

pub mod entry;
pub mod event_json;
mod python;
pub mod rules;

pub use python::register;
