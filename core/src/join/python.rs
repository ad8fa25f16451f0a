//! The join in Python: ``JoinTable`` (the state, for the changelog) and ``JoinCore`` (the rules),
//! which ``adaptloop.learners.join`` wraps as ``JoinState`` and ``DelayedJoin``, and the agent
//! calls once per batch.

use std::collections::HashMap;
use std::sync::Arc;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::IntoPyObjectExt;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::contract::Contract;

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

/// A rejection's event and reason as Python takes them: ``(decision_id, outcome JSON, reason)``,
/// decision_id and JSON None for the event being processed, the reason a text or, for an outcome no
/// prediction came for, ``(decision_id, horizon)``.
fn refusal<'py>(
    py: Python<'py>,
    event: Refused,
    reason: Reason,
) -> PyResult<(Option<String>, Option<Bound<'py, PyBytes>>, Bound<'py, PyAny>)> {
    let (key, event) = match event {
        Refused::Current => (None, None),
        Refused::Outcome(key, json) => (Some(key), Some(PyBytes::new(py, &json))),
    };
    let reason = match reason {
        Reason::Text(text) => text.into_pyobject(py)?.into_any(),
        Reason::NoPrediction { key, horizon } => (key, horizon).into_pyobject(py)?.into_any(),
    };
    Ok((key, event, reason))
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
        let (key, event, reason) = refusal(py, rejection.event, rejection.reason)?;
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
    /// The contracts of predictions and outcomes (``process_raw`` decodes with them).
    contracts: Option<(Py<Contract>, Py<Contract>)>,
    /// ``(model, prediction JSON) -> problem or None``: the model contract's words for features
    /// that [`FeatureRules`] found it may refuse.
    feature_problem: Option<Py<PyAny>>,
    /// What each model's contract asks of features (models without rules take any).
    feature_rules: HashMap<String, FeatureRules>,
    /// Each model's name as a record key (made once: every training example is keyed by it).
    model_keys: HashMap<String, Py<PyBytes>>,
}

/// A model contract's rules for features (``ModelContract.numbers_only`` and ``features``): which
/// predictions it may refuse. Only those are asked of the contract itself, which words the
/// problem.
struct FeatureRules {
    numbers_only: bool,
    /// Each declared feature's kind: ``number``, ``category`` or ``flag``.
    kinds: Option<HashMap<String, String>>,
}

impl FeatureRules {
    /// Whether the contract may refuse ``features`` (a JSON object): a value other than a number
    /// or a boolean under ``numbers_only``, a feature not declared, or one of another kind.
    fn may_refuse(&self, features: &[u8]) -> bool {
        for (name, value) in event_json::fields(features) {
            let kind = match features.get(value.start) {
                Some(b'"') => "category",
                Some(b't' | b'f') => "flag",
                Some(b'n') => "null",
                _ => "number",
            };
            if self.numbers_only && !matches!(kind, "number" | "flag") {
                return true;
            }
            if let Some(kinds) = &self.kinds {
                let Some(name) = event_json::string(&features[name.start - 1..name.end + 1]) else {
                    return true;
                };
                match kinds.get(&name) {
                    None => return true,
                    Some(declared) if kind != "null" && declared != kind => return true,
                    Some(_) => {}
                }
            }
        }
        false
    }
}

/// The inputs ``process_raw`` reads: predictions, outcomes, and each one's repartition topic.
const RAW_INPUTS: usize = 4;

/// A record of a raw batch that Python finishes (rare: a record refused, misplaced or failed).
fn rare<'py>(py: Python<'py>, items: impl IntoPyObject<'py>) -> PyResult<Bound<'py, PyAny>> {
    items.into_bound_py_any(py)
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
            contracts: None,
            feature_problem: None,
            feature_rules: HashMap::new(),
            model_keys: HashMap::new(),
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

    /// The contracts ``process_raw`` decodes predictions and outcomes with (``Contract``s made
    /// with their fields' defaults), and ``feature_problem(model, prediction JSON)``: what the
    /// model's contract says of the prediction's features (asked only where ``set_feature_rules``
    /// says it may refuse them).
    fn use_contracts(
        &mut self,
        predictions: Py<Contract>,
        outcomes: Py<Contract>,
        feature_problem: Py<PyAny>,
    ) {
        self.contracts = Some((predictions, outcomes));
        self.feature_problem = Some(feature_problem);
    }

    /// What ``model``'s contract asks of features: ``(numbers_only, {feature: kind} or None)``;
    /// None: nothing (the model takes any features, or it was retired).
    #[pyo3(signature = (model, rules))]
    fn set_feature_rules(
        &mut self,
        model: String,
        rules: Option<(bool, Option<HashMap<String, String>>)>,
    ) {
        match rules {
            Some((numbers_only, kinds)) if numbers_only || kinds.is_some() => {
                self.feature_rules.insert(model, FeatureRules { numbers_only, kinds });
            }
            _ => {
                self.feature_rules.remove(&model);
            }
        }
    }

    /// A polled batch straight from the consumer: ``messages`` (confluent-kafka ``Message``s)
    /// from ``start``, up to the first that is not a prediction or an outcome (a clock tick, an
    /// error: the caller handles it and calls again after it). ``topics``: the full names of
    /// predictions, outcomes and their repartition topics. Each record is decoded and validated
    /// by its contract (of at most ``max_bytes``), refused if its time is more than
    /// ``max_future`` seconds after ``now``, and joined (``Join::process``: sent on if misplaced,
    /// a record that raises leaving its decision as it was), with no Python object made per record
    /// but the training examples.
    ///
    /// Returns ``(stop, examples, joined, rare, positions)``: where it stopped; each training
    /// example as ``(input partition, model key, JSON)``; ``(model, status, count)`` of the
    /// examples; the records Python finishes, in order, each a tuple whose first item says what
    /// it is: ``(0, i, kind, path, message)`` the contract refused message ``i``,
    /// ``(1, i)`` its time was refused, ``(2, i, home, key)`` to be sent on to partition
    /// ``home``, ``(3, i, exception)`` it raised (its decision left as it was), ``(4, i,
    /// decision_id, outcome JSON, reason, offset, sent_on)`` a rejection as ``on_outcome`` gives
    /// them; and ``(topic, partition, next offset, records)`` of each input partition read.
    #[pyo3(signature = (table, messages, start, topics, partitions, now, max_future, max_bytes))]
    #[allow(clippy::too_many_arguments)]
    fn process_raw<'py>(
        &mut self,
        py: Python<'py>,
        mut table: PyRefMut<'_, JoinTable>,
        messages: &Bound<'py, PyList>,
        start: usize,
        topics: [String; RAW_INPUTS],
        partitions: i64,
        now: f64,
        max_future: f64,
        max_bytes: usize,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let (predictions, outcomes) = self
            .contracts
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("use_contracts first"))?;
        let contracts = [predictions.get(), outcomes.get()];
        let mut rares: Vec<(usize, Bound<'py, PyAny>)> = Vec::new();
        let mut batch = Vec::new();
        let mut indexes = Vec::new(); // the message of each record of the batch
        let mut read: Vec<(usize, i64, i64, usize)> = Vec::new(); // topic, partition, next, count
        let mut stop = start;
        while stop < messages.len() {
            let message = messages.get_item(stop)?;
            if !message.call_method0(intern!(py, "error"))?.is_none() {
                break;
            }
            let topic = message.call_method0(intern!(py, "topic"))?;
            let topic = topic.cast::<PyString>()?.to_str()?;
            let Some(kind) = topics.iter().position(|name| name == topic) else {
                break;
            };
            let partition: i64 = message.call_method0(intern!(py, "partition"))?.extract()?;
            let offset: i64 = message.call_method0(intern!(py, "offset"))?.extract()?;
            let i = stop;
            stop += 1;
            match read.iter_mut().find(|r| r.0 == kind && r.1 == partition) {
                Some(r) => {
                    r.2 = offset + 1;
                    r.3 += 1;
                }
                None => read.push((kind, partition, offset + 1, 1)),
            }
            let value = message.call_method0(intern!(py, "value"))?;
            let data = if value.is_none() {
                None
            } else {
                Some(value.cast::<PyBytes>()?.as_bytes())
            };
            let is_outcome = kind % 2 == 1;
            let sent_on = kind >= 2;
            let json = match contracts[usize::from(is_outcome)].canonical(data, max_bytes, now) {
                Ok(json) => json,
                Err(refusal) => {
                    let path = PyTuple::new(py, &refusal.path)?;
                    rares.push((i, rare(py, (0, i, refusal.kind, path, refusal.message))?));
                    continue;
                }
            };
            let raw = |name: &str| event_json::field(&json, name);
            let key = raw("decision_id").and_then(event_json::string).unwrap_or_default();
            let moment = raw("timestamp").and_then(event_json::timestamp).unwrap_or(now);
            let refused = moment - now > max_future;
            let input = if is_outcome {
                Input::Outcome { key, json: Arc::from(json), offset: Some(offset), sent_on }
            } else {
                let model = raw("model").and_then(event_json::string).unwrap_or_default();
                let mut problem = None;
                if let (false, Some(rules), Some(features)) =
                    (refused, self.feature_rules.get(&model), raw("features"))
                {
                    if json.len() <= MAX_JOINABLE_BYTES && rules.may_refuse(features) {
                        if let Some(check) = &self.feature_problem {
                            problem = check
                                .bind(py)
                                .call1((&model, PyBytes::new(py, &json)))?
                                .extract()?;
                        }
                    }
                }
                Input::Prediction { key, model, json: Arc::from(json), problem }
            };
            batch.push(Record { partition, may_send_on: !sent_on, refused, input });
            indexes.push((i, partition));
        }
        let keys: Vec<String> = batch
            .iter()
            .map(|record| match &record.input {
                Input::Prediction { key, .. } | Input::Outcome { key, .. } => key.clone(),
            })
            .collect();
        let check = self.label_problem.bind(py);
        let results = self.join.process(
            &mut table.state,
            batch,
            partitions,
            &mut PyLabelCheck { check, answers: &mut self.answers },
        );
        let examples = PyList::empty(py);
        let mut joined: Vec<(String, &'static str, usize)> = Vec::new();
        for (n, result) in results.into_iter().enumerate() {
            let (i, partition) = indexes[n];
            match result {
                Processed::SentOn(home) => {
                    rares.push((i, rare(py, (2, i, home, PyBytes::new(py, keys[n].as_bytes())))?))
                }
                Processed::Refused => rares.push((i, rare(py, (1, i))?)),
                Processed::Failed(error) => {
                    rares.push((i, rare(py, (3, i, raised(error).into_value(py)))?))
                }
                Processed::Joined(out) => {
                    for example in out.examples {
                        if !self.model_keys.contains_key(&example.model) {
                            let key = PyBytes::new(py, example.model.as_bytes()).unbind();
                            self.model_keys.insert(example.model.clone(), key);
                        }
                        let key = &self.model_keys[&example.model];
                        examples.append((partition, key.bind(py), PyBytes::new(py, &example.json)))?;
                        match joined.iter_mut().find(|j| j.0 == example.model && j.1 == example.status) {
                            Some(j) => j.2 += 1,
                            None => joined.push((example.model, example.status, 1)),
                        }
                    }
                    for rejection in out.rejections {
                        let (key, event, reason) =
                            refusal(py, rejection.event, rejection.reason)?;
                        rares.push((
                            i,
                            rare(py, (4, i, key, event, reason, rejection.offset, rejection.sent_on))?,
                        ));
                    }
                }
            }
        }
        rares.sort_by_key(|(i, _)| *i); // in the records' order (stable: a record's own in order)
        let rare_list = PyList::new(py, rares.into_iter().map(|(_, item)| item))?;
        let positions = PyList::empty(py);
        for (kind, partition, next, count) in read {
            positions.append((&topics[kind], partition, next, count))?;
        }
        let joined = PyList::new(py, joined)?;
        PyTuple::new(
            py,
            [
                stop.into_pyobject(py)?.into_any(),
                examples.into_any(),
                joined.into_any(),
                rare_list.into_any(),
                positions.into_any(),
            ],
        )
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
