//! adaptloop's compiled per-record core: the Python module `adaptloop._core`.
//!
//! Each module of this crate is one idea and registers its own Python functions in `_core` below.

use pyo3::prelude::*;

mod contract;
mod join;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    contract::register(m)?;
    join::register(m)?;
    Ok(())
}
