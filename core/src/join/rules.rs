//! The delayed-feedback join's rules: predictions meet their outcomes by decision_id, within a wait
//! horizon.
//!
//! Time is event time, with one clock per input and partition: a pending prediction expires when
//! the *outcomes* clock of its partition passes its deadline, an outcome waiting for its prediction
//! when the *predictions* clock does, and finished entries are forgotten when both have passed.
//! Every prediction ends exactly once as ``joined``, ``defaulted`` or ``expired`` (an outcome after
//! the horizon adds ``late``); what breaks a model's contract ends ``rejected``. The rules, the
//! entries and the training examples are those of adaptloop's Python join, byte for byte
//! (``learners/join.py`` documents them for its callers).

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;

use super::entry::{Entry, Value, DONE, EXPIRED, LATE, PENDING, REJECTED};
use super::event_json;

pub const PREDICTION_CLOCK: usize = 0;
pub const OUTCOME_CLOCK: usize = 1;
pub const MAX_JOINABLE_BYTES: usize = 990_000;

/// What the join needs of a model's spec.
#[derive(Clone, Debug)]
pub struct Spec {
    /// ``horizon_seconds`` as the spec holds it (an int stays an int in the entries).
    pub horizon: Value,
    /// ``duplicates == "last"``.
    pub last: bool,
    /// ``on_missing == "default"`` with a default: the JSON of ``default_label`` and
    /// ``default_reward``.
    pub default: Option<(Vec<u8>, Vec<u8>)>,
}

/// The join's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub default_horizon: Value,
    pub late_retention: f64,
    pub lateness: f64,
    /// ``outcome_duplicates == "last"``: the latest of repeated outcomes waiting for their
    /// prediction counts.
    pub outcomes_last: bool,
}

/// Why an event is rejected.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    Text(String),
    /// No prediction came within the horizon (the caller words it: it quotes the key as Python's
    /// ``repr``).
    NoPrediction {
        key: String,
        horizon: f64,
    },
}

/// Which event a rejection refuses.
#[derive(Clone, Debug, PartialEq)]
pub enum Refused {
    /// The event being processed.
    Current,
    /// An outcome read earlier, waiting in the state: its decision_id and its JSON.
    Outcome(String, Arc<[u8]>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub event: Refused,
    pub reason: Reason,
    pub offset: Option<i64>,
    pub sent_on: bool,
}

/// A training example: its model (the record's key), its status and its JSON.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub model: String,
    pub status: &'static str,
    pub json: Vec<u8>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    pub examples: Vec<Example>,
    pub rejections: Vec<Rejection>,
}

/// The join's failures: a label check that raised, or an entry that lacks what its status promises.
#[derive(Debug)]
pub enum Error<E> {
    Check(E),
    Corrupt(String),
}

/// The models' contracts: the problem, if any, of an outcome (its JSON) for a model.
pub trait LabelCheck {
    type Error;
    fn label_problem(&mut self, model: &str, outcome: &[u8])
        -> Result<Option<String>, Self::Error>;
}

pub const COUNTS: [&str; 12] = [
    "predictions",
    "outcomes",
    "rejected_predictions",
    "rejected_outcomes",
    "duplicate_predictions",
    "duplicate_outcomes",
    "orphan_outcomes",
    "joined",
    "late",
    "expired",
    "defaulted",
    "rejected",
];
const PREDICTIONS: usize = 0;
const OUTCOMES: usize = 1;
const REJECTED_PREDICTIONS: usize = 2;
const REJECTED_OUTCOMES: usize = 3;
const DUPLICATE_PREDICTIONS: usize = 4;
const DUPLICATE_OUTCOMES: usize = 5;
const ORPHAN_OUTCOMES: usize = 6;
const JOINED: usize = 7;
const LATE_COUNT: usize = 8;
const EXPIRED_COUNT: usize = 9;
const DEFAULTED: usize = 10;
const REJECTED_COUNT: usize = 11;

/// One record of a polled batch.
pub struct Record {
    pub partition: i64,
    pub may_send_on: bool,
    /// Refused before the join (its time, say): only sent on if it is not its decision's partition.
    pub refused: bool,
    pub input: Input,
}

pub enum Input {
    /// ``problem``: what the model's contract says of its features.
    Prediction {
        key: String,
        model: String,
        json: Arc<[u8]>,
        problem: Option<String>,
    },
    /// ``sent_on``: read from the repartition topic; ``offset``: where, for its dead letter.
    Outcome {
        key: String,
        json: Arc<[u8]>,
        offset: Option<i64>,
        sent_on: bool,
    },
}

/// What became of a record of a batch.
pub enum Processed<E> {
    /// Read on another partition than its decision's: to be sent on to this one.
    SentOn(i64),
    /// Refused before the join, and on its decision's partition: the caller dead-letters it.
    Refused,
    Joined(Output),
    Failed(Error<E>),
}

/// Kafka's murmur2 hash of a key, as Java's ``Utils.murmur2`` computes it.
pub fn murmur2(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let chunks = key.chunks_exact(4);
    let rest = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]).wrapping_mul(M);
        k ^= k >> 24;
        h = h.wrapping_mul(M) ^ k.wrapping_mul(M);
    }
    if rest.len() == 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h = (h ^ rest[0] as u32).wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// The partition Java's default partitioner gives a key
/// (``adaptloop.schemas.topics.partition_for``).
pub fn partition_for(key: &[u8], partitions: i64) -> i64 {
    (murmur2(key) & 0x7fff_ffff) as i64 % partitions.max(1)
}

/// The entries by decision_id, noting per partition which keys changed, for the changelog.
#[derive(Default, Debug)]
pub struct State {
    pub entries: HashMap<String, Entry>,
    changed: HashMap<i64, HashSet<String>>,
}

impl State {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    pub fn put(&mut self, key: &str, entry: Entry) {
        self.changed
            .entry(entry.partition())
            .or_default()
            .insert(key.to_owned());
        self.entries.insert(key.to_owned(), entry);
    }

    pub fn delete(&mut self, key: &str) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                self.changed
                    .entry(entry.partition())
                    .or_default()
                    .insert(key.to_owned());
                true
            }
            None => false,
        }
    }

    /// The current entry (``None``: deleted) of every key of ``partition`` changed since the last
    /// call.
    pub fn take_changes(&mut self, partition: i64) -> Vec<(String, Option<&Entry>)> {
        let keys = self.changed.remove(&partition).unwrap_or_default();
        keys.into_iter()
            .map(|key| {
                let entry = self.entries.get(&key);
                (key, entry)
            })
            .collect()
    }

    /// Apply one changelog record without noting it as a change.
    pub fn restore(&mut self, key: &str, entry: Option<Entry>) {
        match entry {
            Some(entry) => {
                self.entries.insert(key.to_owned(), entry);
            }
            None => {
                self.entries.remove(key);
            }
        }
    }

    /// Forget a partition's entries and changes (it moved to another worker).
    pub fn drop_partition(&mut self, partition: i64) {
        self.entries
            .retain(|_, entry| entry.partition() != partition);
        self.changed.remove(&partition);
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct When(f64);

impl Eq for When {}

impl PartialOrd for When {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for When {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.partial_cmp(&other.0).unwrap_or(Ordering::Equal)
    }
}

type Heap = BinaryHeap<Reverse<(When, String)>>;

#[derive(Clone, Copy, PartialEq)]
enum Queue {
    Expire = 0,
    Orphan = 1,
    Gc = 2,
}

/// An event's JSON and where its top-level fields are, read once where an example needs them.
struct EventJson<'a> {
    json: &'a [u8],
    fields: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl<'a> EventJson<'a> {
    fn new(json: &'a [u8]) -> Self {
        EventJson {
            json,
            fields: event_json::fields(json),
        }
    }

    fn raw(&self, key: &str) -> Option<&'a [u8]> {
        let json = self.json;
        self.fields
            .iter()
            .find(|(k, _)| &json[k.clone()] == key.as_bytes())
            .map(|(_, v)| &json[v.clone()])
    }

    fn timestamp<E>(&self) -> Result<f64, Error<E>> {
        self.raw("timestamp")
            .and_then(event_json::timestamp)
            .ok_or_else(|| Error::Corrupt("an event without a readable timestamp".into()))
    }

    fn model(&self) -> String {
        self.raw("model")
            .and_then(event_json::string)
            .unwrap_or_default()
    }
}

fn timestamp_of<E>(json: &[u8]) -> Result<f64, Error<E>> {
    event_json::field(json, "timestamp")
        .and_then(event_json::timestamp)
        .ok_or_else(|| Error::Corrupt("an event without a readable timestamp".into()))
}

/// ``n`` with thousands separators, as Python's ``f"{n:,}"``.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn too_large(json: &[u8], what: &str) -> Option<String> {
    if json.len() <= MAX_JOINABLE_BYTES {
        return None;
    }
    Some(format!(
        "the {what} takes {} bytes as the join writes it, over the {} it can keep in its state and in a \
         training example",
        grouped(json.len()),
        grouped(MAX_JOINABLE_BYTES)
    ))
}

fn truncated(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => text[..at].to_owned(),
        None => text.to_owned(),
    }
}

pub struct Join {
    pub specs: HashMap<String, Spec>,
    pub settings: Settings,
    pub counts: [i64; COUNTS.len()],
    clocks: HashMap<i64, [f64; 2]>,
    queues: HashMap<i64, [Heap; 3]>,
}

impl Join {
    pub fn new(specs: HashMap<String, Spec>, settings: Settings) -> Self {
        Join {
            specs,
            settings,
            counts: [0; COUNTS.len()],
            clocks: HashMap::new(),
            queues: HashMap::new(),
        }
    }

    fn default_horizon(&self) -> f64 {
        self.settings.default_horizon.number().unwrap_or(3600.0)
    }

    // -- inputs ------------------------------------------------------------------------------

    /// A prediction (its JSON as ``encode`` writes it) read on ``partition``; ``problem``: what its
    /// model's contract says of its features.
    pub fn on_prediction<C: LabelCheck>(
        &mut self,
        state: &mut State,
        key: &str,
        model: &str,
        json: Arc<[u8]>,
        problem: Option<String>,
        partition: i64,
        check: &mut C,
    ) -> Result<Output, Error<C::Error>> {
        self.counts[PREDICTIONS] += 1;
        let spec = self.specs.get(model).cloned();
        let horizon = spec.as_ref().map_or_else(
            || self.settings.default_horizon.clone(),
            |s| s.horizon.clone(),
        );
        let horizon_f = horizon.number().unwrap_or(3600.0);
        if let Some(problem) = too_large(&json, "prediction").or(problem) {
            return self.reject_prediction(state, key, &json, &problem, partition, horizon_f);
        }
        let at = timestamp_of(&json)?;
        let mut out = self.advance(state, partition, at, &[PREDICTION_CLOCK])?;
        let deadline = at + horizon_f;
        let pending = |json: &Arc<[u8]>| {
            Entry::new()
                .with("pt", Value::Int(partition))
                .with("st", Value::Str(PENDING.into()))
                .with("p", Value::Bytes(json.clone()))
                .with("o", Value::Nil)
                .with("dl", Value::Float(deadline))
                .with("h", horizon.clone())
        };
        let Some(entry) = state.get(key).cloned() else {
            state.put(key, pending(&json));
            self.schedule(partition, Queue::Expire, deadline, key);
            return Ok(out);
        };
        if entry.is_pending() && entry.json("p").is_none() {
            let outcome = entry
                .json("o")
                .cloned()
                .ok_or_else(|| Error::Corrupt(format!("entry {key:?} holds neither event")))?;
            if spec.is_some() {
                if let Some(problem) = check.label_problem(model, &outcome).map_err(Error::Check)? {
                    // The outcome that came first breaks the contract: refused; the prediction
                    // waits for a good one.
                    self.counts[REJECTED_OUTCOMES] += 1;
                    out.rejections.push(Rejection {
                        event: Refused::Outcome(key.to_owned(), outcome.clone()),
                        reason: Reason::Text(problem.clone()),
                        offset: entry.offset(),
                        sent_on: entry.sent_on(),
                    });
                    let example = self.rejected(&json, Some(&outcome), &problem)?;
                    out.examples.push(example);
                    state.put(key, pending(&json));
                    self.schedule(partition, Queue::Expire, deadline, key);
                    return Ok(out);
                }
            }
            let mut entry = entry;
            entry.set("p", Value::Bytes(json.clone()));
            entry.set("dl", Value::Float(deadline));
            entry.set("h", horizon.clone());
            if timestamp_of(&outcome)? >= deadline {
                // It came first, but too long after the decision: the same rule as any late
                // outcome.
                let expired = self.expire(state, key, &entry)?;
                out.examples.push(expired);
                let current = state.get(key).cloned().unwrap_or_default();
                let late = self.late(state, key, current, &json, &outcome)?;
                out.examples.push(late);
            } else {
                let joined = self.joined(&EventJson::new(&json), &EventJson::new(&outcome))?;
                out.examples.push(joined);
                self.finish(state, key, &entry, partition)?;
            }
        } else if entry.is_pending() && spec.as_ref().is_some_and(|s| s.last) {
            self.counts[DUPLICATE_PREDICTIONS] += 1;
            let mut entry = entry;
            entry.set("p", Value::Bytes(json.clone()));
            entry.set("dl", Value::Float(deadline));
            entry.set("h", horizon.clone());
            state.put(key, entry);
            self.schedule(partition, Queue::Expire, deadline, key);
        } else {
            self.counts[DUPLICATE_PREDICTIONS] += 1;
        }
        Ok(out)
    }

    /// Refuse a prediction (its outcome, come first, with it); a decision it would open ends
    /// ``rejected``.
    fn reject_prediction<E>(
        &mut self,
        state: &mut State,
        key: &str,
        json: &Arc<[u8]>,
        problem: &str,
        partition: i64,
        horizon: f64,
    ) -> Result<Output, Error<E>> {
        self.counts[REJECTED_PREDICTIONS] += 1;
        let mut out = Output {
            examples: vec![],
            rejections: vec![Rejection {
                event: Refused::Current,
                reason: Reason::Text(problem.to_owned()),
                offset: None,
                sent_on: false,
            }],
        };
        let entry = state.get(key).cloned();
        let opens = match &entry {
            None => true,
            Some(e) => e.is_pending() && e.json("p").is_none(),
        };
        if !opens {
            return Ok(out);
        }
        let example = self.rejected(json, None, problem)?;
        out.examples.push(example);
        if let Some(entry) = entry {
            let outcome = entry
                .json("o")
                .cloned()
                .ok_or_else(|| Error::Corrupt(format!("entry {key:?} holds neither event")))?;
            out.rejections.push(Rejection {
                event: Refused::Outcome(key.to_owned(), outcome),
                reason: Reason::Text(format!("its prediction was rejected: {problem}")),
                offset: entry.offset(),
                sent_on: entry.sent_on(),
            });
        }
        if !self.queues.contains_key(&partition) {
            self.rebuild(state, partition);
        }
        let gc = timestamp_of(json)? + horizon * (1.0 + self.settings.late_retention);
        let rejected = Entry::new()
            .with("pt", Value::Int(partition))
            .with("st", Value::Str(REJECTED.into()))
            .with("dl", Value::Nil)
            .with("gc", Value::Float(gc))
            .with("r", Value::Str(truncated(problem, 500).into()));
        state.put(key, rejected);
        self.schedule(partition, Queue::Gc, gc, key);
        Ok(out)
    }

    /// An outcome read at ``offset`` of ``partition`` (``sent_on``: of the repartition topic).
    pub fn on_outcome<C: LabelCheck>(
        &mut self,
        state: &mut State,
        key: &str,
        json: Arc<[u8]>,
        partition: i64,
        offset: Option<i64>,
        sent_on: bool,
        check: &mut C,
    ) -> Result<Output, Error<C::Error>> {
        self.counts[OUTCOMES] += 1;
        if let Some(problem) = too_large(&json, "outcome") {
            self.counts[REJECTED_OUTCOMES] += 1;
            return Ok(Output {
                examples: vec![],
                rejections: vec![Rejection {
                    event: Refused::Current,
                    reason: Reason::Text(problem),
                    offset: None,
                    sent_on: false,
                }],
            });
        }
        let at = timestamp_of(&json)?;
        let mut out = self.advance(state, partition, at, &[OUTCOME_CLOCK])?;
        let Some(mut entry) = state.get(key).cloned() else {
            let deadline = at + self.default_horizon();
            let mut waiting = Entry::new()
                .with("pt", Value::Int(partition))
                .with("st", Value::Str(PENDING.into()))
                .with("p", Value::Nil)
                .with("o", Value::Bytes(json.clone()))
                .with("dl", Value::Float(deadline))
                .with("h", self.settings.default_horizon.clone())
                .with("off", offset.map_or(Value::Nil, Value::Int));
            if sent_on {
                waiting.set("ro", Value::Bool(true));
            }
            state.put(key, waiting);
            self.schedule(partition, Queue::Orphan, deadline, key);
            return Ok(out);
        };
        if entry.status() == REJECTED {
            self.counts[REJECTED_OUTCOMES] += 1;
            let why = match entry.get("r") {
                Some(Value::Str(r)) => r.to_string(),
                _ => String::new(),
            };
            out.rejections.push(Rejection {
                event: Refused::Current,
                reason: Reason::Text(format!("its prediction was rejected: {why}")),
                offset: None,
                sent_on: false,
            });
            return Ok(out);
        }
        let answerable = entry.is_pending() || entry.status() == EXPIRED;
        if let Some(prediction) = entry.json("p").cloned().filter(|_| answerable) {
            let p = EventJson::new(&prediction);
            let model = p.model();
            let problem = match self.specs.contains_key(&model) {
                true => check.label_problem(&model, &json).map_err(Error::Check)?,
                false => None,
            };
            if let Some(problem) = problem {
                // Refused whenever it comes, within the horizon or after it, as when it comes
                // before its prediction (the same records read in another order end the same): the
                // decision stays as it was, a pending prediction waits for a good outcome.
                self.counts[REJECTED_OUTCOMES] += 1;
                out.rejections.push(Rejection {
                    event: Refused::Current,
                    reason: Reason::Text(problem.clone()),
                    offset: None,
                    sent_on: false,
                });
                let example = self.rejected(&prediction, Some(&json), &problem)?;
                out.examples.push(example);
                return Ok(out);
            }
            if entry.is_pending() {
                let deadline = entry
                    .time("dl")
                    .ok_or_else(|| Error::Corrupt(format!("{key:?} has no deadline")))?;
                // Before the deadline: an outcome at the deadline itself would move the outcomes
                // clock to it, which expires the prediction (with no lateness), so it is late in
                // any order.
                if at < deadline {
                    let joined = self.joined(&p, &EventJson::new(&json))?;
                    out.examples.push(joined);
                    self.finish(state, key, &entry, partition)?;
                    return Ok(out);
                }
                // The outcome is at or past the deadline even if the clock has not caught up yet.
                let expired = self.expire(state, key, &entry)?;
                out.examples.push(expired);
                entry = state.get(key).cloned().unwrap_or_default();
            }
            let late = self.late(state, key, entry, &prediction, &json)?;
            out.examples.push(late);
        } else if entry.is_pending() && entry.json("p").is_none() && self.settings.outcomes_last {
            self.counts[DUPLICATE_OUTCOMES] += 1;
            // With its own provenance: its dead letter (an orphan, or refused with its prediction)
            // names where it was read, not where the outcome it replaces was.
            entry.set("o", Value::Bytes(json.clone()));
            entry.set("off", offset.map_or(Value::Nil, Value::Int));
            entry.remove("ro");
            if sent_on {
                entry.set("ro", Value::Bool(true));
            }
            state.put(key, entry);
        } else {
            self.counts[DUPLICATE_OUTCOMES] += 1;
        }
        Ok(out)
    }

    /// Drop the in-memory clocks and deadline index of a partition this worker no longer owns.
    pub fn forget(&mut self, partition: i64) {
        self.clocks.remove(&partition);
        self.queues.remove(&partition);
    }

    /// The latest time a clock of ``partition`` has reached (None: none has moved yet).
    pub fn latest(&self, partition: i64) -> Option<f64> {
        let clocks = self.clocks.get(&partition)?;
        let latest = clocks[0].max(clocks[1]);
        (latest > f64::NEG_INFINITY).then_some(latest)
    }

    /// Advance clocks of ``partition`` without an event, so an idle partition still expires.
    pub fn tick<E>(
        &mut self,
        state: &mut State,
        partition: i64,
        now: f64,
        clocks: &[usize],
    ) -> Result<Output, Error<E>> {
        self.advance(state, partition, now, clocks)
    }

    /// A polled batch of predictions and outcomes, in order: each record sent on to its decision's
    /// partition (``may_send_on``: read from an input that services write, where a record may be on
    /// another partition than its decision's), joined, or failed; a record that fails leaves its
    /// decision's entry as it was.
    pub fn process<C: LabelCheck>(
        &mut self,
        state: &mut State,
        records: Vec<Record>,
        partitions: i64,
        check: &mut C,
    ) -> Vec<Processed<C::Error>> {
        let mut results = Vec::with_capacity(records.len());
        for record in records {
            let key = match &record.input {
                Input::Prediction { key, .. } | Input::Outcome { key, .. } => key.clone(),
            };
            if record.may_send_on && state.get(&key).map(Entry::partition) != Some(record.partition)
            {
                // Its decision's entry is not here: its key says where its home is.
                let home = partition_for(key.as_bytes(), partitions);
                if home != record.partition {
                    results.push(Processed::SentOn(home));
                    continue;
                }
            }
            if record.refused {
                results.push(Processed::Refused);
                continue;
            }
            let before = state.get(&key).cloned();
            let result = match record.input {
                Input::Prediction {
                    key,
                    model,
                    json,
                    problem,
                } => {
                    self.on_prediction(state, &key, &model, json, problem, record.partition, check)
                }
                Input::Outcome {
                    key,
                    json,
                    offset,
                    sent_on,
                } => self.on_outcome(state, &key, json, record.partition, offset, sent_on, check),
            };
            results.push(match result {
                Ok(out) => Processed::Joined(out),
                Err(error) => {
                    match before {
                        Some(entry) => state.put(&key, entry),
                        None => {
                            state.delete(&key);
                        }
                    }
                    Processed::Failed(error)
                }
            });
        }
        results
    }

    // -- time --------------------------------------------------------------------------------

    fn advance<E>(
        &mut self,
        state: &mut State,
        partition: i64,
        timestamp: f64,
        which: &[usize],
    ) -> Result<Output, Error<E>> {
        let mut out = Output::default();
        if !self.queues.contains_key(&partition) {
            self.rebuild(state, partition);
        }
        let clocks = self
            .clocks
            .entry(partition)
            .or_insert([f64::NEG_INFINITY; 2]);
        for &index in which {
            let moved = timestamp - self.settings.lateness;
            if moved > clocks[index] {
                clocks[index] = moved;
            }
        }
        let clocks = *clocks;
        // Predictions expire on the outcomes clock; waiting outcomes on the predictions clock.
        for (queue, clock) in [
            (Queue::Expire, clocks[OUTCOME_CLOCK]),
            (Queue::Orphan, clocks[PREDICTION_CLOCK]),
            (Queue::Gc, clocks[0].min(clocks[1])),
        ] {
            loop {
                let heap =
                    &mut self.queues.get_mut(&partition).expect("rebuilt above")[queue as usize];
                let Some(Reverse((When(when), _))) = heap.peek() else {
                    break;
                };
                if *when > clock {
                    break;
                }
                let Reverse((When(when), key)) = heap.pop().expect("peeked");
                let Some(entry) = state.get(&key) else {
                    continue;
                };
                let time = entry.time(if queue == Queue::Gc { "gc" } else { "dl" });
                if time != Some(when) {
                    continue; // superseded
                }
                match queue {
                    Queue::Expire if entry.is_pending() && entry.json("p").is_some() => {
                        let entry = entry.clone();
                        let expired = self.expire(state, &key, &entry)?;
                        out.examples.push(expired);
                    }
                    Queue::Orphan if entry.is_pending() && entry.json("p").is_none() => {
                        self.counts[ORPHAN_OUTCOMES] += 1;
                        let outcome = entry.json("o").cloned().ok_or_else(|| {
                            Error::Corrupt(format!("entry {key:?} holds neither event"))
                        })?;
                        out.rejections.push(Rejection {
                            event: Refused::Outcome(key.clone(), outcome),
                            reason: Reason::NoPrediction {
                                key: key.clone(),
                                horizon: self.default_horizon(),
                            },
                            offset: entry.offset(),
                            sent_on: entry.sent_on(),
                        });
                        state.delete(&key);
                    }
                    Queue::Gc if !entry.is_pending() => {
                        state.delete(&key); // retention of a finished decision is over
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// After a restart the table is restored from its changelog; rebuild the deadline index from
    /// it.
    fn rebuild(&mut self, state: &State, partition: i64) {
        let mut queues: [Vec<Reverse<(When, String)>>; 3] = [vec![], vec![], vec![]];
        for (key, entry) in &state.entries {
            if entry.partition() != partition {
                continue;
            }
            let (queue, time) = if !entry.is_pending() {
                (Queue::Gc, entry.time("gc"))
            } else if entry.json("p").is_some() {
                (Queue::Expire, entry.time("dl"))
            } else {
                (Queue::Orphan, entry.time("dl"))
            };
            if let Some(time) = time {
                queues[queue as usize].push(Reverse((When(time), key.clone())));
            }
        }
        let [a, b, c] = queues;
        self.queues
            .insert(partition, [Heap::from(a), Heap::from(b), Heap::from(c)]);
    }

    fn schedule(&mut self, partition: i64, queue: Queue, when: f64, key: &str) {
        // Each caller has advanced the partition's clocks (or rebuilt its index) first.
        let heaps = self.queues.entry(partition).or_default();
        heaps[queue as usize].push(Reverse((When(when), key.to_owned())));
    }

    // -- endings -----------------------------------------------------------------------------

    fn joined<E>(&mut self, p: &EventJson, o: &EventJson) -> Result<Example, Error<E>> {
        self.counts[JOINED] += 1;
        let outcome_at = o.raw("timestamp").unwrap_or(b"null");
        let predicted_at = p.raw("timestamp").unwrap_or(b"null");
        // max(prediction.timestamp, outcome.timestamp): the prediction's unless the outcome's is
        // later.
        let later = o.timestamp::<E>()? > p.timestamp::<E>()?;
        let when = if later { outcome_at } else { predicted_at };
        Ok(example(p, Some(o), "joined", when, None))
    }

    fn late<E>(
        &mut self,
        state: &mut State,
        key: &str,
        mut entry: Entry,
        prediction: &[u8],
        outcome: &[u8],
    ) -> Result<Example, Error<E>> {
        self.counts[LATE_COUNT] += 1;
        self.counts[EXPIRED_COUNT] -= 1; // it did get an answer, only too late
        entry.set("st", Value::Str(LATE.into()));
        state.put(key, entry);
        let o = EventJson::new(outcome);
        let when = o.raw("timestamp").unwrap_or(b"null");
        Ok(example(
            &EventJson::new(prediction),
            Some(&o),
            "late",
            when,
            None,
        ))
    }

    fn retained<E>(&self, key: &str, entry: &Entry) -> Result<(f64, f64), Error<E>> {
        let deadline = entry
            .time("dl")
            .ok_or_else(|| Error::Corrupt(format!("{key:?} has no deadline")))?;
        let horizon = entry
            .time("h")
            .ok_or_else(|| Error::Corrupt(format!("{key:?} has no horizon")))?;
        Ok((deadline, deadline + horizon * self.settings.late_retention))
    }

    fn finish<E>(
        &mut self,
        state: &mut State,
        key: &str,
        entry: &Entry,
        partition: i64,
    ) -> Result<(), Error<E>> {
        // Keep a small marker as long as expired entries, so duplicates are recognised, not
        // orphaned.
        let (_, gc) = self.retained(key, entry)?;
        let done = Entry::new()
            .with("pt", Value::Int(partition))
            .with("st", Value::Str(DONE.into()))
            .with("dl", Value::Nil)
            .with("gc", Value::Float(gc));
        state.put(key, done);
        self.schedule(partition, Queue::Gc, gc, key);
        Ok(())
    }

    fn expire<E>(
        &mut self,
        state: &mut State,
        key: &str,
        entry: &Entry,
    ) -> Result<Example, Error<E>> {
        let prediction = entry
            .json("p")
            .cloned()
            .ok_or_else(|| Error::Corrupt(format!("{key:?} has no prediction")))?;
        let p = EventJson::new(&prediction);
        let (deadline, gc) = self.retained(key, entry)?;
        let partition = entry.partition();
        let expired = Entry::new()
            .with(
                "pt",
                entry.get("pt").cloned().unwrap_or(Value::Int(partition)),
            )
            .with("st", Value::Str(EXPIRED.into()))
            .with("p", Value::Bytes(prediction.clone()))
            .with("dl", Value::Nil)
            .with("gc", Value::Float(gc));
        state.put(key, expired);
        self.schedule(partition, Queue::Gc, gc, key);
        self.counts[EXPIRED_COUNT] += 1;
        let mut when = Vec::with_capacity(34);
        event_json::write_utc(&mut when, deadline);
        let default = self
            .specs
            .get(&p.model())
            .and_then(|spec| spec.default.clone());
        if let Some((label, reward)) = default {
            self.counts[DEFAULTED] += 1;
            return Ok(example(
                &p,
                None,
                "defaulted",
                &when,
                Some((&label, &reward)),
            ));
        }
        Ok(example(&p, None, "expired", &when, None))
    }

    /// The record of a decision whose prediction, or an outcome, broke the model's contract.
    fn rejected<E>(
        &mut self,
        prediction: &[u8],
        outcome: Option<&[u8]>,
        reason: &str,
    ) -> Result<Example, Error<E>> {
        self.counts[REJECTED_COUNT] += 1;
        let p = EventJson::new(prediction);
        let o = outcome.map(EventJson::new);
        let when = match &o {
            Some(o) => o.raw("timestamp"),
            None => p.raw("timestamp"),
        }
        .unwrap_or(b"null");
        let mut example = example(&p, o.as_ref(), "rejected", when, None);
        example.json.truncate(example.json.len() - b"null}".len());
        event_json::write_string(&mut example.json, reason);
        example.json.push(b'}');
        Ok(example)
    }
}

/// A training example's JSON, its fields in ``TrainingExample``'s order, each as ``encode`` writes
/// it.
fn example(
    prediction: &EventJson,
    outcome: Option<&EventJson>,
    status: &'static str,
    when: &[u8],
    default: Option<(&[u8], &[u8])>,
) -> Example {
    let of = |key: &str| -> &[u8] { outcome.and_then(|o| o.raw(key)).unwrap_or(b"null") };
    let (label, reward) = match default {
        Some(values) => values,
        None => (of("label"), of("reward")),
    };
    let pf = |key: &str, missing: &'static [u8]| prediction.raw(key).unwrap_or(missing);
    let mut json = Vec::with_capacity(prediction.json.len() + 256);
    json.extend_from_slice(b"{\"schema_version\":1,\"timestamp\":");
    json.extend_from_slice(when);
    for (key, value) in [
        ("model", pf("model", b"null")),
        ("decision_id", pf("decision_id", b"null")),
        ("model_version", pf("model_version", b"null")),
        ("features", pf("features", b"{}")),
        ("prediction", pf("prediction", b"null")),
        ("label", label),
        ("reward", reward),
    ] {
        json.extend_from_slice(b",\"");
        json.extend_from_slice(key.as_bytes());
        json.extend_from_slice(b"\":");
        json.extend_from_slice(value);
    }
    json.extend_from_slice(b",\"status\":\"");
    json.extend_from_slice(status.as_bytes());
    json.extend_from_slice(b"\",\"predicted_at\":");
    json.extend_from_slice(pf("timestamp", b"null"));
    json.extend_from_slice(b",\"outcome_at\":");
    json.extend_from_slice(if outcome.is_some() {
        of("timestamp")
    } else {
        b"null"
    });
    json.extend_from_slice(b",\"fallback\":");
    json.extend_from_slice(pf("fallback", b"false"));
    json.extend_from_slice(b",\"reason\":null}");
    Example {
        model: prediction.model(),
        status,
        json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoProblems;

    impl LabelCheck for NoProblems {
        type Error = ();
        fn label_problem(&mut self, _: &str, _: &[u8]) -> Result<Option<String>, ()> {
            Ok(None)
        }
    }

    fn join(last: bool, default: bool) -> (Join, State) {
        let spec = Spec {
            horizon: Value::Float(60.0),
            last,
            default: default.then(|| (b"false".to_vec(), b"null".to_vec())),
        };
        let settings = Settings {
            default_horizon: Value::Float(3600.0),
            late_retention: 3.0,
            lateness: 0.0,
            outcomes_last: false,
        };
        (
            Join::new(HashMap::from([("m".to_owned(), spec)]), settings),
            State::default(),
        )
    }

    fn prediction(id: &str, second: u32) -> Arc<[u8]> {
        let json = format!(
            "{{\"schema_version\":1,\"timestamp\":\"2026-01-01T00:00:{second:02}+00:00\",\"decision_id\":\"{id}\",\
             \"model\":\"m\",\"model_version\":\"v\",\"features\":{{\"x\":1.0}},\"prediction\":true,\
             \"probabilities\":null,\"score\":null,\"action_probability\":null,\"tenant\":null,\"user_id\":null,\
             \"session_id\":null,\"fallback\":false}}"
        );
        Arc::from(json.into_bytes())
    }

    fn outcome(id: &str, second: u32) -> Arc<[u8]> {
        let json = format!(
            "{{\"schema_version\":1,\"timestamp\":\"2026-01-01T00:00:{second:02}+00:00\",\"decision_id\":\"{id}\",\
             \"label\":false,\"reward\":null,\"source\":\"s\"}}"
        );
        Arc::from(json.into_bytes())
    }

    #[test]
    fn a_prediction_and_its_outcome_join_in_either_order() {
        for outcome_first in [false, true] {
            let (mut join, mut state) = join(false, false);
            let mut out = Output::default();
            let mut steps = vec![0, 1];
            if outcome_first {
                steps.reverse();
            }
            for step in steps {
                let result = if step == 0 {
                    join.on_prediction(
                        &mut state,
                        "d1",
                        "m",
                        prediction("d1", 0),
                        None,
                        0,
                        &mut NoProblems,
                    )
                } else {
                    join.on_outcome(
                        &mut state,
                        "d1",
                        outcome("d1", 5),
                        0,
                        Some(7),
                        false,
                        &mut NoProblems,
                    )
                };
                out.examples.extend(result.unwrap().examples);
            }
            let [example] = &out.examples[..] else {
                panic!("{out:?}")
            };
            assert_eq!(
                String::from_utf8(example.json.clone()).unwrap(),
                "{\"schema_version\":1,\"timestamp\":\"2026-01-01T00:00:05+00:00\",\"model\":\"m\",\
                 \"decision_id\":\"d1\",\"model_version\":\"v\",\"features\":{\"x\":1.0},\"prediction\":true,\
                 \"label\":false,\"reward\":null,\"status\":\"joined\",\"predicted_at\":\
                 \"2026-01-01T00:00:00+00:00\",\"outcome_at\":\"2026-01-01T00:00:05+00:00\",\"fallback\":false,\
                 \"reason\":null}"
            );
            assert_eq!(state.get("d1").unwrap().status(), DONE);
        }
    }

    #[test]
    fn an_unanswered_prediction_expires_on_the_outcomes_clock_or_takes_the_default() {
        for (default, status) in [(false, "expired"), (true, "defaulted")] {
            let (mut join, mut state) = join(false, default);
            join.on_prediction(
                &mut state,
                "d1",
                "m",
                prediction("d1", 0),
                None,
                0,
                &mut NoProblems,
            )
            .unwrap();
            // The predictions clock alone does not expire it.
            assert!(join
                .tick::<()>(&mut state, 0, 1e10, &[PREDICTION_CLOCK])
                .unwrap()
                .examples
                .is_empty());
            let out = join
                .tick::<()>(&mut state, 0, 1767225660.0, &[OUTCOME_CLOCK])
                .unwrap();
            let [example] = &out.examples[..] else {
                panic!("{out:?}")
            };
            assert_eq!(example.status, status);
            let text = String::from_utf8(example.json.clone()).unwrap();
            assert!(
                text.starts_with(
                    "{\"schema_version\":1,\"timestamp\":\"2026-01-01T00:01:00+00:00\""
                ),
                "{text}"
            );
            let label = if default {
                "\"label\":false"
            } else {
                "\"label\":null"
            };
            assert!(text.contains(label), "{text}");
            // A late outcome is recorded as late, and the expired count gives it back.
            let late = join
                .on_outcome(
                    &mut state,
                    "d1",
                    outcome("d1", 59),
                    0,
                    None,
                    false,
                    &mut NoProblems,
                )
                .unwrap();
            assert_eq!(late.examples[0].status, "late");
            assert_eq!(join.counts[EXPIRED_COUNT], 0);
        }
    }

    #[test]
    fn an_outcome_without_prediction_is_rejected_when_the_predictions_clock_passes() {
        let (mut join, mut state) = join(false, false);
        join.on_outcome(
            &mut state,
            "d9",
            outcome("d9", 0),
            2,
            Some(41),
            true,
            &mut NoProblems,
        )
        .unwrap();
        let out = join
            .tick::<()>(&mut state, 2, 1767225600.0 + 3600.0, &[PREDICTION_CLOCK])
            .unwrap();
        assert_eq!(
            out.rejections[..],
            [Rejection {
                event: Refused::Outcome("d9".into(), outcome("d9", 0)),
                reason: Reason::NoPrediction {
                    key: "d9".into(),
                    horizon: 3600.0
                },
                offset: Some(41),
                sent_on: true,
            }]
        );
        assert!(state.get("d9").is_none());
        assert_eq!(state.take_changes(2).len(), 1);
    }

    #[test]
    fn duplicate_predictions_follow_the_models_policy() {
        for (last, feature) in [(false, "0"), (true, "3")] {
            let (mut join, mut state) = join(last, false);
            join.on_prediction(
                &mut state,
                "d1",
                "m",
                prediction("d1", 0),
                None,
                0,
                &mut NoProblems,
            )
            .unwrap();
            join.on_prediction(
                &mut state,
                "d1",
                "m",
                prediction("d1", 3),
                None,
                0,
                &mut NoProblems,
            )
            .unwrap();
            let out = join
                .on_outcome(
                    &mut state,
                    "d1",
                    outcome("d1", 4),
                    0,
                    None,
                    false,
                    &mut NoProblems,
                )
                .unwrap();
            let text = String::from_utf8(out.examples[0].json.clone()).unwrap();
            assert!(
                text.contains(&format!(
                    "\"predicted_at\":\"2026-01-01T00:00:0{feature}+00:00\""
                )),
                "{text}"
            );
            assert_eq!(join.counts[DUPLICATE_PREDICTIONS], 1);
        }
    }

    #[test]
    fn a_rejected_prediction_takes_its_waiting_outcome_with_it() {
        let (mut join, mut state) = join(false, false);
        join.on_outcome(
            &mut state,
            "d1",
            outcome("d1", 1),
            0,
            Some(3),
            false,
            &mut NoProblems,
        )
        .unwrap();
        let out = join
            .on_prediction(
                &mut state,
                "d1",
                "m",
                prediction("d1", 0),
                Some("bad \"x\"".into()),
                0,
                &mut NoProblems,
            )
            .unwrap();
        assert_eq!(out.rejections.len(), 2);
        assert_eq!(
            out.rejections[1].reason,
            Reason::Text("its prediction was rejected: bad \"x\"".into())
        );
        let text = String::from_utf8(out.examples[0].json.clone()).unwrap();
        assert!(
            text.ends_with(
                ",\"status\":\"rejected\",\"predicted_at\":\"2026-01-01T00:00:00+00:00\",\
                                \"outcome_at\":null,\"fallback\":false,\"reason\":\"bad \\\"x\\\"\"}"
            ),
            "{text}"
        );
        assert_eq!(state.get("d1").unwrap().status(), REJECTED);
    }

    #[test]
    fn murmur2_is_kafkas() {
        // adaptloop.schemas.topics.murmur2(b"21") and Java's Utils.murmur2
        assert_eq!(murmur2(b"21"), 3_321_034_988);
    }

    #[test]
    fn a_record_on_another_partition_than_its_decision_is_sent_on() {
        let (mut join, mut state) = join(false, false);
        let home = partition_for(b"d1", 6);
        let other = (home + 1) % 6;
        let record = |partition| Record {
            partition,
            may_send_on: true,
            refused: false,
            input: Input::Prediction {
                key: "d1".into(),
                model: "m".into(),
                json: prediction("d1", 0),
                problem: None,
            },
        };
        let results = join.process(
            &mut state,
            vec![record(other), record(home)],
            6,
            &mut NoProblems,
        );
        assert!(matches!(results[..], [Processed::SentOn(h), Processed::Joined(_)] if h == home));
        assert_eq!(state.get("d1").unwrap().partition(), home);
    }

    #[test]
    fn grouping_is_pythons() {
        assert_eq!(grouped(990_000), "990,000");
        assert_eq!(grouped(1_000_000), "1,000,000");
        assert_eq!(grouped(12), "12");
    }
}
