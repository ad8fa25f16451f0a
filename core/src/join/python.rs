//! The join in Python: ``JoinTable`` (the state, for the changelog) and ``JoinCore`` (the rules),
//! which ``adaptloop.learners.join`` wraps as ``JoinState`` and ``DelayedJoin``, and the agent
//! calls once per batch.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::entry::{Entry, Value};
use super::event_json;
use super::rules::{
    Error, Input, Join, LabelCheck, Output, Processed, Reason, Record, Refused, Settings, Spec,
    State, COUNTS, MAX_JOINABLE_BYTES,
};

fn value_from(value: &Bound<'_, PyAny>) -> PyResult<Value> {
    if value.is_none() {
        Ok(Value::Nil)
    } else if value.is_instance_of::<PyBool>() {
        Ok(Value::Bool(value.extract::<bool>()?))
    } else if value.is_instance_of::<PyInt>() {
        Ok(Value::Int(value.extract::<i64>()?))
    } else if value.is_instance_of::<PyFloat>() {
        Ok(Value::Float(value.extract::<f64>()?))
    } else if let Ok(text) = value.cast::<PyString>() {
        Ok(Value::Str(Arc::from(text.to_str()?)))
    } else if let Ok(bytes) = value.cast::<PyBytes>() {
        Ok(Value::Bytes(Arc::from(bytes.as_bytes())))
    } else {
        Err(PyTypeError::new_err(format!(
            "a join entry holds no {}",
            value.get_type().name()?
        )))
    }
}

fn entry_from(dict: &Bound<'_, PyDict>) -> PyResult<Entry> {
    let mut entry = Entry::new();
    for (key, value) in dict.iter() {
        entry.fields.push((
            Arc::from(key.extract::<String>()?.as_str()),
            value_from(&value)?,
        ));
    }
    Ok(entry)
}

fn entry_dict<'py>(py: Python<'py>, entry: &Entry) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in &entry.fields {
        let key: &str = key;
        match value {
            Value::Nil => dict.set_item(key, py.None())?,
            Value::Bool(b) => dict.set_item(key, *b)?,
            Value::Int(i) => dict.set_item(key, *i)?,
            Value::Float(f) => dict.set_item(key, *f)?,
            Value::Str(s) => dict.set_item(key, &**s)?,
            Value::Bytes(b) => dict.set_item(key, PyBytes::new(py, b))?,
        }
    }
    Ok(dict)
}

/// The join's entries by decision_id (the Python ``JoinState`` holds one).
#[pyclass(module = "adaptloop._core", name = "JoinTable")]
#[derive(Default)]
pub struct JoinTable {
    state: State,
}

#[pymethods]
impl JoinTable {
    #[new]
    fn new() -> Self {
        JoinTable::default()
    }

    fn __len__(&self) -> usize {
        self.state.entries.len()
    }

    fn __contains__(&self, key: &str) -> bool {
        self.state.entries.contains_key(key)
    }

    fn keys(&self) -> Vec<String> {
        self.state.entries.keys().cloned().collect()
    }

    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyDict>>> {
        self.state
            .get(key)
            .map(|entry| entry_dict(py, entry))
            .transpose()
    }

    /// The partition of ``key``'s entry, if it has one.
    fn partition_of(&self, key: &str) -> Option<i64> {
        self.state.get(key).map(Entry::partition)
    }

    /// Set an entry, noting it as a change of its partition.
    fn set(&mut self, key: &str, entry: &Bound<'_, PyDict>) -> PyResult<()> {
        self.state.put(key, entry_from(entry)?);
        Ok(())
    }

    /// Delete an entry, noting it as a change; whether there was one.
    fn delete(&mut self, key: &str) -> bool {
        self.state.delete(key)
    }

    /// Apply one changelog record without noting it as a change.
    fn restore(&mut self, key: &str, entry: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
        self.state.restore(key, entry.map(entry_from).transpose()?);
        Ok(())
    }

    fn take_changes<'py>(
        &mut self,
        py: Python<'py>,
        partition: i64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let changes = PyDict::new(py);
        for (key, entry) in self.state.take_changes(partition) {
            match entry {
                Some(entry) => changes.set_item(key, entry_dict(py, entry)?)?,
                None => changes.set_item(key, py.None())?,
            }
        }
        Ok(changes)
    }

    /// The changelog records of ``partition``'s changes: (key, MessagePack entry or None) each.
    fn take_change_records<'py>(
        &mut self,
        py: Python<'py>,
        partition: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        let records = PyList::empty(py);
        for (key, entry) in self.state.take_changes(partition) {
            let value = entry.map(|entry| PyBytes::new(py, &entry.to_msgpack()));
            records.append((PyBytes::new(py, key.as_bytes()), value))?;
        }
        Ok(records)
    }

    fn drop_partition(&mut self, partition: i64) {
        self.state.drop_partition(partition);
    }
}

/// The most contract answers a join keeps (labels of classes are few; a regression's are not, and
/// are asked).
const KNOWN_ANSWERS: usize = 4096;

/// A contract's answer for an outcome: the model, the label's JSON, and whether it has a reward
/// (what ``ModelContract.label_problem`` looks at).
type Question = (String, Vec<u8>, bool);

/// The contracts' label check: a Python callable ``(model, label JSON, reward JSON) -> problem or
/// None``, its answers kept (the same label of the same model has the same answer).
struct PyLabelCheck<'a, 'py> {
    check: &'a Bound<'py, PyAny>,
    answers: &'a mut HashMap<Question, Option<String>>,
}

impl LabelCheck for PyLabelCheck<'_, '_> {
    type Error = PyErr;

    fn label_problem(&mut self, model: &str, outcome: &[u8]) -> PyResult<Option<String>> {
        let fields = event_json::fields(outcome);
        let raw = |key: &str| {
            let found = fields
                .iter()
                .find(|(k, _)| &outcome[k.clone()] == key.as_bytes());
            found.map_or(&b"null"[..], |(_, v)| &outcome[v.clone()])
        };
        let (label, reward) = (raw("label"), raw("reward"));
        let question = (model.to_owned(), label.to_vec(), reward != b"null");
        if let Some(answer) = self.answers.get(&question) {
            return Ok(answer.clone());
        }
        let py = self.check.py();
        let answer: Option<String> = self
            .check
            .call1((model, PyBytes::new(py, label), PyBytes::new(py, reward)))?
            .extract()?;
        if self.answers.len() < KNOWN_ANSWERS {
            self.answers.insert(question, answer.clone());
        }
        Ok(answer)
    }
}

fn raised(error: Error<PyErr>) -> PyErr {
    match error {
        Error::Check(error) => error,
        Error::Corrupt(message) => PyValueError::new_err(message),
    }
}

/// ``(examples, rejections)``: each example ``(model, status, JSON)``; each rejection
/// ``(decision_id, outcome JSON, reason, offset, sent_on)`` (decision_id and JSON None: the event
/// being processed), a reason being a text or, for an outcome no prediction came for,
/// ``(decision_id, horizon)``.
fn output<'py>(py: Python<'py>, out: Output) -> PyResult<Bound<'py, PyTuple>> {
    let examples = PyList::empty(py);
    for example in out.examples {
        examples.append((
            example.model,
            example.status,
            PyBytes::new(py, &example.json),
        ))?;
    }
    let rejections = PyList::empty(py);
    for rejection in out.rejections {
        let (key, event) = match rejection.event {
            Refused::Current => (None, None),
            Refused::Outcome(key, json) => (Some(key), Some(PyBytes::new(py, &json))),
        };
        let reason = match rejection.reason {
            Reason::Text(text) => text.into_pyobject(py)?.into_any(),
            Reason::NoPrediction { key, horizon } => (key, horizon).into_pyobject(py)?.into_any(),
        };
        rejections.append((key, event, reason, rejection.offset, rejection.sent_on))?;
    }
    PyTuple::new(py, [examples.into_any(), rejections.into_any()])
}

/// A model's spec as the join keeps it, from what ``DelayedJoin`` passes.
fn spec_from(
    horizon: &Bound<'_, PyAny>,
    last: bool,
    label: Option<Vec<u8>>,
    reward: Option<Vec<u8>>,
) -> PyResult<Spec> {
    let default = match (label, reward) {
        (None, None) => None,
        (label, reward) => Some((
            label.unwrap_or_else(|| b"null".to_vec()),
            reward.unwrap_or_else(|| b"null".to_vec()),
        )),
    };
    Ok(Spec {
        horizon: value_from(horizon)?,
        last,
        default,
    })
}

/// The join's rules over a ``JoinTable``.
#[pyclass(module = "adaptloop._core", name = "JoinCore")]
pub struct JoinCore {
    join: Join,
    label_problem: Py<PyAny>,
    answers: HashMap<Question, Option<String>>,
}

#[pymethods]
impl JoinCore {
    /// ``specs``: ``(model, horizon_seconds, duplicates == "last", default label JSON, default
    /// reward JSON)`` each (the defaults None unless the model learns a default when no outcome
    /// comes).
    #[new]
    #[pyo3(signature = (specs, default_horizon, late_retention, lateness, outcomes_last, label_problem))]
    fn new(
        specs: Vec<(
            String,
            Bound<'_, PyAny>,
            bool,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
        )>,
        default_horizon: &Bound<'_, PyAny>,
        late_retention: f64,
        lateness: f64,
        outcomes_last: bool,
        label_problem: Py<PyAny>,
    ) -> PyResult<Self> {
        let mut table = HashMap::new();
        for (model, horizon, last, label, reward) in specs {
            table.insert(model, spec_from(&horizon, last, label, reward)?);
        }
        let settings = Settings {
            default_horizon: value_from(default_horizon)?,
            late_retention,
            lateness,
            outcomes_last,
        };
        Ok(JoinCore {
            join: Join::new(table, settings),
            label_problem,
            answers: HashMap::new(),
        })
    }

    #[pyo3(signature = (table, key, model, json, problem, partition))]
    fn on_prediction<'py>(
        &mut self,
        py: Python<'py>,
        mut table: PyRefMut<'_, JoinTable>,
        key: &str,
        model: &str,
        json: &[u8],
        problem: Option<String>,
        partition: i64,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let check = self.label_problem.bind(py);
        let out = self
            .join
            .on_prediction(
                &mut table.state,
                key,
                model,
                Arc::from(json),
                problem,
                partition,
                &mut PyLabelCheck {
                    check,
                    answers: &mut self.answers,
                },
            )
            .map_err(raised)?;
        output(py, out)
    }

    #[pyo3(signature = (table, key, json, partition, offset, sent_on))]
    #[allow(clippy::too_many_arguments)]
    fn on_outcome<'py>(
        &mut self,
        py: Python<'py>,
        mut table: PyRefMut<'_, JoinTable>,
        key: &str,
        json: &[u8],
        partition: i64,
        offset: Option<i64>,
        sent_on: bool,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let check = self.label_problem.bind(py);
        let out = self
            .join
            .on_outcome(
                &mut table.state,
                key,
                Arc::from(json),
                partition,
                offset,
                sent_on,
                &mut PyLabelCheck {
                    check,
                    answers: &mut self.answers,
                },
            )
            .map_err(raised)?;
        output(py, out)
    }

    fn tick<'py>(
        &mut self,
        py: Python<'py>,
        mut table: PyRefMut<'_, JoinTable>,
        partition: i64,
        now: f64,
        clocks: Vec<usize>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        if clocks.iter().any(|&clock| clock > 1) {
            return Err(PyValueError::new_err(
                "a join has clocks 0 (predictions) and 1 (outcomes)",
            ));
        }
        let out = self
            .join
            .tick(&mut table.state, partition, now, &clocks)
            .map_err(raised)?;
        output(py, out)
    }

    /// A polled batch, in order. Each record is ``(is_outcome, partition, may_send_on, refused,
    /// decision_id, model, JSON, problem, offset, sent_on)`` (a prediction's ``model`` and
    /// ``problem``, an outcome's ``offset`` and ``sent_on``; the others None or False). For each
    /// record, in order: the partition to send it on to (an int), None (``refused`` and on its
    /// decision's partition), its output (as ``on_prediction`` returns it; ``()`` when it is
    /// empty), or the exception it raised (its decision's entry left as it was).
    fn process<'py>(
        &mut self,
        py: Python<'py>,
        mut table: PyRefMut<'_, JoinTable>,
        records: &Bound<'py, PyList>,
        partitions: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut batch = Vec::with_capacity(records.len());
        for item in records.iter() {
            let (
                is_outcome,
                partition,
                may_send_on,
                refused,
                key,
                model,
                json,
                problem,
                offset,
                sent_on,
            ): (
                bool,
                i64,
                bool,
                bool,
                String,
                Option<String>,
                Bound<'py, PyBytes>,
                Option<String>,
                Option<i64>,
                bool,
            ) = item.extract()?;
            let json: Arc<[u8]> = Arc::from(json.as_bytes());
            let input = if is_outcome {
                Input::Outcome {
                    key,
                    json,
                    offset,
                    sent_on,
                }
            } else {
                Input::Prediction {
                    key,
                    model: model.unwrap_or_default(),
                    json,
                    problem,
                }
            };
            batch.push(Record {
                partition,
                may_send_on,
                refused,
                input,
            });
        }
        let check = self.label_problem.bind(py);
        let results = self.join.process(
            &mut table.state,
            batch,
            partitions,
            &mut PyLabelCheck {
                check,
                answers: &mut self.answers,
            },
        );
        let out = PyList::empty(py);
        for result in results {
            match result {
                Processed::SentOn(home) => out.append(home)?,
                Processed::Refused => out.append(py.None())?,
                // Nothing to send (a prediction waiting for its outcome): the empty tuple, made
                // once by Python.
                Processed::Joined(output_)
                    if output_.examples.is_empty() && output_.rejections.is_empty() =>
                {
                    out.append(PyTuple::empty(py))?
                }
                Processed::Joined(output_) => out.append(output(py, output_)?)?,
                Processed::Failed(error) => out.append(raised(error).into_value(py))?,
            }
        }
        Ok(out)
    }

    /// Join ``model``'s predictions under a new spec from now on (``spec``: as ``new`` takes each,
    /// without the name; None: the model was retired, its predictions are an unknown model's), and
    /// the default horizon, which the models' specs raise. Pending decisions keep their deadlines; the
    /// kept contract answers are forgotten (the model's contract may have changed).
    #[pyo3(signature = (model, spec, default_horizon))]
    fn set_spec(
        &mut self,
        model: String,
        spec: Option<(Bound<'_, PyAny>, bool, Option<Vec<u8>>, Option<Vec<u8>>)>,
        default_horizon: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        match spec {
            Some((horizon, last, label, reward)) => {
                let spec = spec_from(&horizon, last, label, reward)?;
                self.join.specs.insert(model, spec);
            }
            None => {
                self.join.specs.remove(&model);
            }
        }
        self.join.settings.default_horizon = value_from(default_horizon)?;
        self.answers.clear();
        Ok(())
    }

    fn forget(&mut self, partition: i64) {
        self.join.forget(partition);
    }

    fn latest(&self, partition: i64) -> Option<f64> {
        self.join.latest(partition)
    }

    /// The counts so far, by name.
    fn counts(&self) -> HashMap<&'static str, i64> {
        COUNTS
            .iter()
            .zip(self.join.counts)
            .filter(|(_, n)| *n != 0)
            .map(|(name, n)| (*name, n))
            .collect()
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("JOIN_MAX_JOINABLE_BYTES", MAX_JOINABLE_BYTES)?;
    m.add_class::<JoinTable>()?;
    m.add_class::<JoinCore>()?;
    Ok(())
}
