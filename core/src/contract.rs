//! Decoding and validating events with the JSON Schema the pydantic contracts export.

use pyo3::prelude::*;

/// The size limit of one record, as schemas/codec.py's MAX_RECORD_BYTES.
#[pyfunction]
fn ping() -> &'static str {
    "adaptloop._core"
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(ping, m)?)?;
    Ok(())
}
