//! Decoding and validating events with the JSON Schema that the pydantic contracts export.
//!
//! A [`Contract`] is compiled from a schema given as JSON text (schemas/export.py `core_schema`: the topic's
//! exported schema, with the bounds of its times), never from rules written here: this module knows the
//! JSON Schema keywords, not the events. It knows the subset the contracts use (type, const, properties,
//! required, additionalProperties, anyOf, not, minimum, maximum, minLength, maxLength, pattern, format
//! date-time and its bounds formatMinimum / formatExclusiveMaximum); a schema with any other keyword is
//! refused when compiled, so a contract that grows a rule this module cannot check fails at import, never
//! silently.
//!
//! Parsed values are those pydantic makes of the same JSON: a number that an `integer` branch accepts is an
//! `int` (pydantic's smart unions pick the exact type), any other number a `float`; a `date-time` string a
//! `datetime` with its offset (fractions of a second beyond microseconds are dropped, as pydantic drops them).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDateTime, PyDelta, PyDict, PyTuple, PyTzInfo};
use regex_lite::Regex;
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;

pyo3::create_exception!(
    _core,
    ContractError,
    PyValueError,
    "A record broke its contract: args are (kind, path, message). kind: empty, too_large, malformed, \
     missing (a required field is absent), invalid."
);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Null,
    Boolean,
    Integer,
    Number,
    String,
    Object,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Boolean => "boolean",
            Kind::Integer => "integer",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Object => "object",
        }
    }
}

enum Additional {
    Any,
    Forbidden,
    Schema(Box<Schema>),
}

/// One compiled schema node.
struct Schema {
    types: Vec<Kind>,
    constant: Option<Value>,
    properties: Vec<(String, Schema)>,
    required: Vec<String>,
    additional: Additional,
    any_of: Vec<Schema>,
    not: Option<Box<Schema>>,
    minimum: Option<Number>,
    maximum: Option<Number>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<Regex>,
    date_time: bool,
    time_min: Option<(i64, String)>,
    time_max_exclusive: Option<(i64, String)>,
}

/// Keywords that say nothing about validity.
const ANNOTATIONS: &[&str] =
    &["$schema", "$id", "title", "description", "default", "examples", "contentEncoding"];

fn compile(node: &Value) -> Result<Schema, String> {
    let object = node.as_object().ok_or_else(|| format!("a schema must be an object: {node}"))?;
    let mut schema = Schema {
        types: Vec::new(),
        constant: None,
        properties: Vec::new(),
        required: Vec::new(),
        additional: Additional::Any,
        any_of: Vec::new(),
        not: None,
        minimum: None,
        maximum: None,
        min_length: None,
        max_length: None,
        pattern: None,
        date_time: false,
        time_min: None,
        time_max_exclusive: None,
    };
    for (keyword, value) in object {
        match keyword.as_str() {
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(items) => items.iter().collect(),
                    other => vec![other],
                };
                for name in names {
                    schema.types.push(match name.as_str() {
                        Some("null") => Kind::Null,
                        Some("boolean") => Kind::Boolean,
                        Some("integer") => Kind::Integer,
                        Some("number") => Kind::Number,
                        Some("string") => Kind::String,
                        Some("object") => Kind::Object,
                        _ => return Err(format!("unsupported type {name}")),
                    });
                }
            }
            "const" => schema.constant = Some(value.clone()),
            "properties" => {
                let properties = value.as_object().ok_or("properties must be an object")?;
                for (name, sub) in properties {
                    schema.properties.push((name.clone(), compile(sub)?));
                }
            }
            "required" => {
                for name in value.as_array().ok_or("required must be an array")? {
                    schema.required.push(name.as_str().ok_or("required names strings")?.to_owned());
                }
            }
            "additionalProperties" => {
                schema.additional = match value {
                    Value::Bool(true) => Additional::Any,
                    Value::Bool(false) => Additional::Forbidden,
                    sub => Additional::Schema(Box::new(compile(sub)?)),
                }
            }
            "anyOf" => {
                for sub in value.as_array().ok_or("anyOf must be an array")? {
                    schema.any_of.push(compile(sub)?);
                }
            }
            "not" => schema.not = Some(Box::new(compile(value)?)),
            "minimum" => schema.minimum = Some(number(value)?),
            "maximum" => schema.maximum = Some(number(value)?),
            "minLength" => schema.min_length = Some(count(value)?),
            "maxLength" => schema.max_length = Some(count(value)?),
            "pattern" => {
                let text = value.as_str().ok_or("pattern must be a string")?;
                schema.pattern = Some(Regex::new(text).map_err(|e| format!("pattern {text}: {e}"))?);
            }
            "format" => match value.as_str() {
                Some("date-time") => schema.date_time = true,
                _ => return Err(format!("unsupported format {value}")),
            },
            "formatMinimum" => schema.time_min = Some(bound(value)?),
            "formatExclusiveMaximum" => schema.time_max_exclusive = Some(bound(value)?),
            other if ANNOTATIONS.contains(&other) => {}
            other => return Err(format!("unsupported keyword {other:?}")),
        }
    }
    if (schema.time_min.is_some() || schema.time_max_exclusive.is_some()) && !schema.date_time {
        return Err("formatMinimum/formatExclusiveMaximum only bound a date-time".to_owned());
    }
    Ok(schema)
}

fn number(value: &Value) -> Result<Number, String> {
    value.as_number().cloned().ok_or_else(|| format!("a bound must be a number: {value}"))
}

fn count(value: &Value) -> Result<usize, String> {
    value.as_u64().map(|n| n as usize).ok_or_else(|| format!("a length must be a count: {value}"))
}

/// A time bound: its instant, and its text for the failures it causes.
fn bound(value: &Value) -> Result<(i64, String), String> {
    let text = value.as_str().ok_or("a time bound must be a string")?;
    let instant = parse_time(text).map(|t| t.instant()).map_err(|e| format!("time bound {text}: {e}"))?;
    Ok((instant, text.to_owned()))
}

/// A valid date-time, as its fields and its UTC offset.
struct Time {
    year: i32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    micro: u32,
    offset: i32,
}

impl Time {
    /// Microseconds since 1970-01-01T00:00:00Z.
    fn instant(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day);
        let seconds = days * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
            - i64::from(self.offset);
        seconds * 1_000_000 + i64::from(self.micro)
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// An RFC 3339 date-time (`T` or a space between date and time, as pydantic reads them; the schema's
/// pattern, checked first, decides which shapes a contract takes).
fn parse_time(text: &str) -> Result<Time, &'static str> {
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| -> Result<u32, &'static str> {
        let part = b.get(from..from + n).ok_or("too short")?;
        part.iter().try_fold(0u32, |acc, &c| {
            if c.is_ascii_digit() { Ok(acc * 10 + u32::from(c - b'0')) } else { Err("not a digit") }
        })
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return Err("not a date-time");
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err("no T between date and time");
    }
    let year = digits(0, 4)? as i32;
    let month = digits(5, 2)? as u8;
    let day = digits(8, 2)? as u8;
    let hour = digits(11, 2)? as u8;
    let minute = digits(14, 2)? as u8;
    let second = digits(17, 2)? as u8;
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day == 0 || day > days_in_month(year, month) {
        return Err("day out of range");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("time out of range");
    }
    let mut at = 19;
    let mut micro = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - start < 6 {
                micro = micro * 10 + u32::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err("no digits after the decimal point");
        }
        for _ in (at - start)..6 {
            micro *= 10;
        }
    }
    let offset = match b.get(at..) {
        Some(b"Z") | Some(b"z") => 0,
        Some(zone) if zone.len() == 6 && matches!(zone[0], b'+' | b'-') && zone[3] == b':' => {
            let hours = digits(at + 1, 2)? as i32;
            let minutes = digits(at + 4, 2)? as i32;
            if hours > 23 || minutes > 59 {
                return Err("time zone offset out of range");
            }
            let seconds = hours * 3600 + minutes * 60;
            if zone[0] == b'-' { -seconds } else { seconds }
        }
        _ => return Err("no timezone (Z or an offset such as +01:00)"),
    };
    Ok(Time { year, month, day, hour, minute, second, micro, offset })
}

/// What a valid JSON value becomes in Python.
enum Out<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'a str),
    Time(Time),
    Object(Vec<(&'a str, Out<'a>)>),
}

/// Why a value is invalid: where (outermost first, once reversed), and what.
struct Failure {
    path: Vec<String>,
    missing: bool,
    message: String,
}

impl Failure {
    fn new(message: String) -> Self {
        Failure { path: Vec::new(), missing: false, message }
    }
    fn at(mut self, name: &str) -> Self {
        self.path.push(name.to_owned());
        self
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A JSON integer as written (no fraction, no exponent) that fits 64 bits: what pydantic reads as an int.
fn is_integer(n: &Number) -> bool {
    n.is_i64() || n.is_u64()
}

fn compare(a: &Number, b: &Number) -> Option<Ordering> {
    match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
        (Some(x), Some(y), _, _) => Some(x.cmp(&y)),
        (_, _, Some(x), Some(y)) => Some(x.cmp(&y)),
        (None, Some(_), Some(_), None) => Some(Ordering::Greater), // a u64 above i64::MAX, b an i64 < 0 or
        (Some(_), None, None, Some(_)) => Some(Ordering::Less),    // a u64 above i64::MAX: only ints here
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare(x, y) == Some(Ordering::Equal),
        _ => a == b,
    }
}

fn validate<'a>(schema: &Schema, value: &'a Value) -> Result<Out<'a>, Failure> {
    if let Some(constant) = &schema.constant {
        if !same(constant, value) {
            return Err(Failure::new(format!("expected {constant}, got {value}")));
        }
    }
    if let Some(not) = &schema.not {
        if validate(not, value).is_ok() {
            return Err(Failure::new(format!("{value} is not allowed here")));
        }
    }
    if !schema.any_of.is_empty() {
        if schema.types.is_empty() && schema.properties.is_empty() {
            return any_of(&schema.any_of, value); // a union: the value as its branch reads it
        }
        // A rule across fields (the node's own keywords first: their failures say more).
        let own = validate_own(schema, value)?;
        any_of(&schema.any_of, value)?;
        return Ok(own);
    }
    validate_own(schema, value)
}

/// The keywords of ``schema`` but its anyOf.
fn validate_own<'a>(schema: &Schema, value: &'a Value) -> Result<Out<'a>, Failure> {
    let kind = match value {
        Value::Null => Some(Kind::Null),
        Value::Bool(_) => Some(Kind::Boolean),
        Value::Number(n) if is_integer(n) && schema.types.contains(&Kind::Integer) => Some(Kind::Integer),
        Value::Number(_) => Some(Kind::Number),
        Value::String(_) => Some(Kind::String),
        Value::Object(_) => Some(Kind::Object),
        Value::Array(_) => None, // no contract takes an array (the compiler refuses type array)
    };
    if kind.is_none() || (!schema.types.is_empty() && !schema.types.contains(&kind.unwrap())) {
        let expected: Vec<&str> = schema.types.iter().map(|k| k.name()).collect();
        return Err(Failure::new(format!(
            "expected {}, got {}",
            expected.join(" or "),
            json_type(value)
        )));
    }
    match value {
        Value::Null => Ok(Out::Null),
        Value::Bool(b) => Ok(Out::Bool(*b)),
        Value::Number(n) => {
            if let Some(min) = &schema.minimum {
                if compare(n, min) == Some(Ordering::Less) {
                    return Err(Failure::new(format!("{n} is less than the minimum {min}")));
                }
            }
            if let Some(max) = &schema.maximum {
                if compare(n, max) == Some(Ordering::Greater) {
                    return Err(Failure::new(format!("{n} is greater than the maximum {max}")));
                }
            }
            Ok(match (kind.unwrap_or(Kind::Number), n.as_i64(), n.as_u64()) {
                (Kind::Integer, Some(i), _) => Out::Int(i),
                (Kind::Integer, None, Some(u)) => Out::UInt(u),
                _ => Out::Float(n.as_f64().unwrap_or(f64::NAN)),
            })
        }
        Value::String(text) => string(schema, text),
        Value::Object(fields) => object(schema, fields),
        Value::Array(_) => unreachable!("refused above"),
    }
}

/// The first branch that accepts ``value``; a JSON integer prefers a branch that reads it as an integer
/// (pydantic's smart union: ``1`` stays an int where an int is allowed, even after a float branch).
fn any_of<'a>(branches: &[Schema], value: &'a Value) -> Result<Out<'a>, Failure> {
    let integer = matches!(value, Value::Number(n) if is_integer(n));
    let mut found: Option<Out<'a>> = None;
    let mut failures: Vec<String> = Vec::new();
    let mut named: Vec<String> = Vec::new(); // the fields that branches of a rule across fields failed on
    for branch in branches {
        match validate(branch, value) {
            Ok(out @ (Out::Int(_) | Out::UInt(_))) => return Ok(out),
            Ok(out) => {
                if !integer {
                    return Ok(out);
                }
                found.get_or_insert(out);
            }
            Err(mut failure) => {
                failure.path.reverse();
                if let Some(first) = failure.path.first() {
                    if !named.contains(first) {
                        named.push(first.clone());
                    }
                }
                let message = if failure.path.is_empty() {
                    failure.message
                } else {
                    format!("{}: {}", failure.path.join("."), failure.message)
                };
                if !failures.contains(&message) {
                    failures.push(message);
                }
            }
        }
    }
    found.ok_or_else(|| Failure::new(union_failure(failures, &named)))
}

/// Why no branch of a union took a value: a rule across fields (each branch failed on a field: "needs a
/// label or a reward") by the fields, any other by each branch's failure.
fn union_failure(failures: Vec<String>, named: &[String]) -> String {
    if !named.is_empty() && named.len() == failures.len() {
        format!("needs a {}", named.join(" or a "))
    } else {
        failures.join(", or ")
    }
}

fn string<'a>(schema: &Schema, text: &'a str) -> Result<Out<'a>, Failure> {
    if schema.min_length.is_some() || schema.max_length.is_some() {
        let length = text.chars().count();
        if let Some(min) = schema.min_length {
            if length < min {
                return Err(Failure::new(format!("{length} characters, fewer than {min}")));
            }
        }
        if let Some(max) = schema.max_length {
            if length > max {
                return Err(Failure::new(format!("{length} characters, more than {max}")));
            }
        }
    }
    // A date-time is parsed before its pattern is matched: the parser says what is wrong ("no timezone").
    let time = match schema.date_time {
        true => Some(
            parse_time(text)
                .map_err(|why| Failure::new(format!("{text:?} is not a valid date-time: {why}")))?,
        ),
        false => None,
    };
    if let Some(pattern) = &schema.pattern {
        if !pattern.is_match(text) {
            return Err(Failure::new(format!("{text:?} does not match {:?}", pattern.as_str())));
        }
    }
    let Some(time) = time else {
        return Ok(Out::Str(text));
    };
    let instant = time.instant();
    if let Some((min, shown)) = &schema.time_min {
        if instant < *min {
            return Err(Failure::new(format!("{text:?} is earlier than {shown}")));
        }
    }
    if let Some((max, shown)) = &schema.time_max_exclusive {
        if instant >= *max {
            return Err(Failure::new(format!("{text:?} is not before {shown}")));
        }
    }
    Ok(Out::Time(time))
}

fn object<'a>(schema: &Schema, fields: &'a Map<String, Value>) -> Result<Out<'a>, Failure> {
    let mut out = Vec::with_capacity(fields.len());
    for (name, sub) in &schema.properties {
        match fields.get_key_value(name.as_str()) {
            Some((key, value)) => out.push((key.as_str(), validate(sub, value).map_err(|f| f.at(name))?)),
            None if schema.required.contains(name) => {
                let mut failure = Failure::new("a required field is missing".to_owned()).at(name);
                failure.missing = true;
                return Err(failure);
            }
            None => {}
        }
    }
    for name in &schema.required {
        if !fields.contains_key(name) && !schema.properties.iter().any(|(p, _)| p == name) {
            let mut failure = Failure::new("a required field is missing".to_owned()).at(name);
            failure.missing = true;
            return Err(failure);
        }
    }
    for (key, value) in fields {
        if schema.properties.iter().any(|(name, _)| name == key) {
            continue;
        }
        match &schema.additional {
            Additional::Any => out.push((key.as_str(), plain(value))),
            Additional::Forbidden => {
                return Err(Failure::new("no such field".to_owned()).at(key));
            }
            Additional::Schema(sub) => out.push((key.as_str(), validate(sub, value).map_err(|f| f.at(key))?)),
        }
    }
    Ok(Out::Object(out))
}

/// A value no schema constrains, as pydantic would read it for ``Any`` (not used by the contracts so far).
fn plain(value: &Value) -> Out<'_> {
    match value {
        Value::Null => Out::Null,
        Value::Bool(b) => Out::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Out::Int(i),
            (None, Some(u)) => Out::UInt(u),
            _ => Out::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Out::Str(s),
        Value::Object(fields) => Out::Object(fields.iter().map(|(k, v)| (k.as_str(), plain(v))).collect()),
        Value::Array(_) => Out::Null,
    }
}

fn to_python<'py>(py: Python<'py>, out: Out<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match out {
        Out::Null => py.None().into_bound(py),
        Out::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Out::Int(i) => i.into_pyobject(py)?.into_any(),
        Out::UInt(u) => u.into_pyobject(py)?.into_any(),
        Out::Float(f) => f.into_pyobject(py)?.into_any(),
        Out::Str(s) => s.into_pyobject(py)?.into_any(),
        Out::Time(t) => {
            let zone = if t.offset == 0 {
                PyTzInfo::utc(py)?.to_owned()
            } else {
                PyTzInfo::fixed_offset(py, PyDelta::new(py, 0, t.offset, 0, true)?)?
            };
            PyDateTime::new(py, t.year, t.month, t.day, t.hour, t.minute, t.second, t.micro, Some(&zone))?
                .into_any()
        }
        Out::Object(fields) => {
            let dict = PyDict::new(py);
            for (key, value) in fields {
                dict.set_item(key, to_python(py, value)?)?;
            }
            dict.into_any()
        }
    })
}

/// One event's contract, compiled from its JSON Schema.
#[pyclass(frozen, module = "adaptloop._core")]
struct Contract {
    schema: Schema,
}

fn fail(py: Python<'_>, kind: &str, path: &[String], message: String) -> PyErr {
    let path = PyTuple::new(py, path).map(|p| p.unbind());
    match path {
        Ok(path) => ContractError::new_err((kind.to_owned(), path, message)),
        Err(error) => error,
    }
}

#[pymethods]
impl Contract {
    /// Compile ``schema`` (JSON text); ValueError names a keyword or a value this module cannot check.
    #[new]
    fn new(schema: &str) -> PyResult<Self> {
        let value: Value = serde_json::from_str(schema)
            .map_err(|e| PyValueError::new_err(format!("the schema is not JSON: {e}")))?;
        let schema = compile(&value).map_err(PyValueError::new_err)?;
        Ok(Contract { schema })
    }

    /// The fields of the valid record ``data`` (the schema's properties in its order, those absent left
    /// out), or ContractError(kind, path, message).
    #[pyo3(signature = (data, max_bytes))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        data: Option<&[u8]>,
        max_bytes: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let data = data.ok_or_else(|| fail(py, "empty", &[], "the record has no value".to_owned()))?;
        if data.len() > max_bytes {
            let message = format!("{} bytes exceeds the {max_bytes}-byte limit", data.len());
            return Err(fail(py, "too_large", &[], message));
        }
        let value: Value = serde_json::from_slice(data).map_err(|e| {
            let message = e.to_string();
            if message.starts_with("number out of range") {
                // Valid JSON (any number of digits is), but no float: not a finite number, as pydantic says.
                fail(py, "invalid", &[], format!("a number is not finite in a 64-bit float: {message}"))
            } else {
                fail(py, "malformed", &[], format!("not valid JSON: {message}"))
            }
        })?;
        match validate(&self.schema, &value) {
            Ok(out) => to_python(py, out),
            Err(failure) => {
                let mut path = failure.path;
                path.reverse();
                let kind = if failure.missing { "missing" } else { "invalid" };
                Err(fail(py, kind, &path, failure.message))
            }
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Contract>()?;
    m.add("ContractError", m.py().get_type::<ContractError>())?;
    Ok(())
}
