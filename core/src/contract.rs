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
//!
//! Speed (bench/decode_floor.py): a record is parsed into [`Json`], which borrows its strings from the
//! record's bytes and keeps an object's fields in a vector (no map, no hashing); it is validated once
//! quietly, building no message, and only a rejected record is validated again to say why. Patterns that are
//! one character class repeated (the names' `^[A-Za-z0-9_.-]+$`) are matched with a table of the ASCII bytes
//! they take ([`Pattern::Class`]); regex-lite matches the others. The fields of the Python dict are keyed by
//! the schema's property names, made Python strings once, when the schema is compiled; `decode_event` makes
//! the event itself, as `Event.from_valid` makes it.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDateTime, PyDelta, PyDict, PyString, PyTuple, PyTzInfo};
use regex_lite::Regex;
use serde_core::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

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
    /// Each property: its name, the name as a Python string (the key of the decoded dict), its schema.
    properties: Vec<(String, Py<PyString>, Schema)>,
    required: Vec<String>,
    additional: Additional,
    any_of: Vec<Schema>,
    not: Option<Box<Schema>>,
    minimum: Option<Number>,
    maximum: Option<Number>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    pattern: Option<Pattern>,
    date_time: bool,
    time_min: Option<(i64, String)>,
    time_max_exclusive: Option<(i64, String)>,
}

/// Keywords that say nothing about validity.
const ANNOTATIONS: &[&str] =
    &["$schema", "$id", "title", "description", "default", "examples", "contentEncoding"];

fn compile(py: Python<'_>, node: &Value) -> Result<Schema, String> {
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
                    let key = PyString::intern(py, name).unbind();
                    schema.properties.push((name.clone(), key, compile(py, sub)?));
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
                    sub => Additional::Schema(Box::new(compile(py, sub)?)),
                }
            }
            "anyOf" => {
                for sub in value.as_array().ok_or("anyOf must be an array")? {
                    schema.any_of.push(compile(py, sub)?);
                }
            }
            "not" => schema.not = Some(Box::new(compile(py, value)?)),
            "minimum" => schema.minimum = Some(number(value)?),
            "maximum" => schema.maximum = Some(number(value)?),
            "minLength" => schema.min_length = Some(count(value)?),
            "maxLength" => schema.max_length = Some(count(value)?),
            "pattern" => {
                let text = value.as_str().ok_or("pattern must be a string")?;
                schema.pattern = Some(Pattern::new(text)?);
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

/// A string pattern: one character class repeated, by a table; any other, by regex-lite.
enum Pattern {
    /// `^[class]+$` (`exactly: None`) or `^[class]{n}$`: `ascii[b]` says whether the ASCII character `b`
    /// is in the class, `other` whether every non-ASCII character is (a negated class of ASCII characters).
    Class { ascii: [bool; 128], other: bool, exactly: Option<usize>, text: String },
    /// [`DATE_TIME_WITH_ZONE`], the pattern of every exported date-time, matched by hand.
    DateTimeWithZone,
    Regex(Regex),
}

/// schemas/export.py's DATE_TIME_WITH_ZONE (a regex-lite search cost a fifth of a decision's decoding).
const DATE_TIME_WITH_ZONE: &str =
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$";

/// Whether ``text`` matches [`DATE_TIME_WITH_ZONE`] (`\d` is an ASCII digit in regex-lite).
fn is_date_time_with_zone(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |from: usize, n: usize| b.get(from..from + n).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let layout = b.len() >= 20
        && digits(0, 4)
        && b[4] == b'-'
        && digits(5, 2)
        && b[7] == b'-'
        && digits(8, 2)
        && matches!(b[10], b'T' | b't')
        && digits(11, 2)
        && b[13] == b':'
        && digits(14, 2)
        && b[16] == b':'
        && digits(17, 2);
    if !layout {
        return false;
    }
    let mut at = 19;
    if b[at] == b'.' {
        let start = at + 1;
        at = start;
        while at < b.len() && b[at].is_ascii_digit() {
            at += 1;
        }
        if at == start {
            return false;
        }
    }
    match &b[at..] {
        b"Z" | b"z" => true,
        zone => zone.len() == 6 && matches!(zone[0], b'+' | b'-') && digits(at + 1, 2) && zone[3] == b':'
            && digits(at + 4, 2),
    }
}

impl Pattern {
    fn new(text: &str) -> Result<Pattern, String> {
        let regex = Regex::new(text).map_err(|e| format!("pattern {text}: {e}"))?;
        if text == DATE_TIME_WITH_ZONE {
            return Ok(Pattern::DateTimeWithZone);
        }
        Ok(Pattern::class(text).unwrap_or(Pattern::Regex(regex)))
    }

    /// The table of a pattern that is one class of ASCII characters (literals, ranges, `\xHH` and escaped
    /// punctuation), possibly negated, repeated `+` or `{n}` between `^` and `$`; None for any other.
    fn class(text: &str) -> Option<Pattern> {
        let body = text.strip_prefix("^[")?;
        let (class, repeat) = body.rsplit_once(']')?;
        let exactly = match repeat {
            "+$" => None,
            _ => Some(repeat.strip_prefix('{')?.strip_suffix("}$")?.parse::<usize>().ok()?),
        };
        let (negated, class) = match class.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, class),
        };
        let b = class.as_bytes();
        let mut members: Vec<u8> = Vec::new();
        let mut at = 0;
        let item = |at: &mut usize| -> Option<u8> {
            let c = *b.get(*at)?;
            if !c.is_ascii() || matches!(c, b'[' | b']' | b'&' | b'~') {
                return None; // nested classes, set operations: regex-lite's
            }
            *at += 1;
            if c != b'\\' {
                return Some(c);
            }
            let e = *b.get(*at)?;
            *at += 1;
            if e == b'x' {
                let hex = std::str::from_utf8(b.get(*at..*at + 2)?).ok()?;
                *at += 2;
                let value = u8::from_str_radix(hex, 16).ok()?;
                return value.is_ascii().then_some(value);
            }
            e.is_ascii_punctuation().then_some(e)
        };
        while at < b.len() {
            let first = item(&mut at)?;
            if b.get(at) == Some(&b'-') && at + 1 < b.len() {
                at += 1;
                let last = item(&mut at)?;
                if last < first {
                    return None;
                }
                members.extend(first..=last);
            } else {
                members.push(first);
            }
        }
        if members.is_empty() {
            return None;
        }
        let mut ascii = [negated; 128];
        for m in members {
            ascii[usize::from(m)] = !negated;
        }
        Some(Pattern::Class { ascii, other: negated, exactly, text: text.to_owned() })
    }

    fn is_match(&self, value: &str) -> bool {
        match self {
            Pattern::Class { ascii, other, exactly, .. } => {
                let bytes = value.as_bytes();
                let taken = |&c: &u8| if c.is_ascii() { ascii[usize::from(c)] } else { *other };
                let count_ok = match exactly {
                    None => !bytes.is_empty(),
                    Some(n) => value.chars().count() == *n,
                };
                count_ok && bytes.iter().all(taken)
            }
            Pattern::DateTimeWithZone => is_date_time_with_zone(value),
            Pattern::Regex(regex) => regex.is_match(value),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Pattern::Class { text, .. } => text,
            Pattern::DateTimeWithZone => DATE_TIME_WITH_ZONE,
            Pattern::Regex(regex) => regex.as_str(),
        }
    }
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

/// A parsed JSON value: strings borrowed from the record where they have no escapes, an object's fields
/// in the order sent (a repeated name keeps its first place and its last value, as serde_json's ordered
/// map keeps it: what pydantic reads too).
enum Json<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

impl Json<'_> {
    /// As serde_json's value (for the messages that show a value).
    fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.clone()),
            Json::Str(s) => Value::String(s.to_string()),
            Json::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Json::Object(fields) => {
                Value::Object(fields.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect::<Map<_, _>>())
            }
        }
    }

    fn get(&self, name: &str) -> Option<(&str, &Json<'_>)> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == name).map(|(k, v)| (k.as_ref(), v)),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Json<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Json<'de>, E> {
        Ok(Json::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Json<'de>, E> {
        Ok(Json::Number(n.into()))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Json<'de>, E> {
        Ok(Number::from_f64(f).map_or(Json::Null, Json::Number)) // as serde_json's Value reads it
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E>(self, s: String) -> Result<Json<'de>, E> {
        Ok(Json::Str(Cow::Owned(s)))
    }
    fn visit_unit<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json<'de>, E> {
        Ok(Json::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Json<'de>, D::Error> {
        Json::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json<'de>, A::Error> {
        let mut fields: Vec<(Cow<'de, str>, Json<'de>)> = Vec::with_capacity(16);
        while let Some(key) = map.next_key::<Json<'de>>()? {
            let Json::Str(key) = key else { unreachable!("serde_json's keys are strings") };
            fields.push((key, map.next_value()?));
        }
        Ok(Json::Object(first_place_last_value(fields)))
    }
}

/// ``fields`` with each repeated name once: at its first place, with its last value.
fn first_place_last_value<'a>(fields: Vec<(Cow<'a, str>, Json<'a>)>) -> Vec<(Cow<'a, str>, Json<'a>)> {
    let repeated = if fields.len() <= 16 {
        fields.iter().enumerate().any(|(i, (k, _))| fields[..i].iter().any(|(p, _)| p == k))
    } else {
        let mut seen = std::collections::HashSet::with_capacity(fields.len());
        !fields.iter().all(|(k, _)| seen.insert(k.as_ref()))
    };
    if !repeated {
        return fields;
    }
    let mut place: HashMap<String, usize> = HashMap::with_capacity(fields.len());
    let mut out: Vec<(Cow<'a, str>, Json<'a>)> = Vec::with_capacity(fields.len());
    for (key, value) in fields {
        match place.get(key.as_ref()) {
            Some(&at) => out[at].1 = value,
            None => {
                place.insert(key.to_string(), out.len());
                out.push((key, value));
            }
        }
    }
    out
}

/// The key of a field of the decoded dict: a property's name made a Python string when compiled, or the
/// record's own name of a field no property names.
enum Key<'a> {
    Property(&'a str, &'a Py<PyString>),
    Sent(&'a str),
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
    Object(Vec<(Key<'a>, Out<'a>)>),
}

/// Why a value is invalid: where (outermost first, once reversed), and what. A quiet validation (the first,
/// of every record) says neither: only whether; a rejected record is validated again, loud, to say why.
struct Failure {
    quiet: bool,
    path: Vec<String>,
    missing: bool,
    message: String,
}

impl Failure {
    fn new(message: String) -> Self {
        Failure { quiet: false, path: Vec::new(), missing: false, message }
    }
    fn quiet() -> Self {
        Failure { quiet: true, path: Vec::new(), missing: false, message: String::new() }
    }
    fn at(mut self, name: &str) -> Self {
        if !self.quiet {
            self.path.push(name.to_owned());
        }
        self
    }
}

/// A failure whose message is formatted only in a loud validation.
macro_rules! failure {
    ($loud:expr, $($message:tt)*) => {
        if $loud { Failure::new(format!($($message)*)) } else { Failure::quiet() }
    };
}

fn json_type(value: &Json<'_>) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_f64() => "number",
        Json::Number(_) => "integer",
        Json::Str(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
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

fn same(a: &Value, b: &Json<'_>) -> bool {
    match (a, b) {
        (Value::Number(x), Json::Number(y)) => compare(x, y) == Some(Ordering::Equal),
        (Value::Null, Json::Null) => true,
        (Value::Bool(x), Json::Bool(y)) => x == y,
        (Value::String(x), Json::Str(y)) => x == y,
        (Value::Number(_) | Value::Null | Value::Bool(_) | Value::String(_), _) => false,
        _ => *a == b.to_value(),
    }
}

fn validate<'a>(schema: &'a Schema, value: &'a Json<'a>, loud: bool) -> Result<Out<'a>, Failure> {
    if let Some(constant) = &schema.constant {
        if !same(constant, value) {
            return Err(failure!(loud, "expected {constant}, got {}", value.to_value()));
        }
    }
    if let Some(not) = &schema.not {
        if validate(not, value, false).is_ok() {
            return Err(failure!(loud, "{} is not allowed here", value.to_value()));
        }
    }
    if !schema.any_of.is_empty() {
        if schema.types.is_empty() && schema.properties.is_empty() {
            return any_of(&schema.any_of, value, loud); // a union: the value as its branch reads it
        }
        // A rule across fields (the node's own keywords first: their failures say more).
        let own = validate_own(schema, value, loud)?;
        any_of(&schema.any_of, value, loud)?;
        return Ok(own);
    }
    validate_own(schema, value, loud)
}

/// The keywords of ``schema`` but its anyOf.
fn validate_own<'a>(schema: &'a Schema, value: &'a Json<'a>, loud: bool) -> Result<Out<'a>, Failure> {
    let kind = match value {
        Json::Null => Some(Kind::Null),
        Json::Bool(_) => Some(Kind::Boolean),
        Json::Number(n) if is_integer(n) && schema.types.contains(&Kind::Integer) => Some(Kind::Integer),
        Json::Number(_) => Some(Kind::Number),
        Json::Str(_) => Some(Kind::String),
        Json::Object(_) => Some(Kind::Object),
        Json::Array(_) => None, // no contract takes an array (the compiler refuses type array)
    };
    if kind.is_none() || (!schema.types.is_empty() && !schema.types.contains(&kind.unwrap())) {
        let expected = || schema.types.iter().map(|k| k.name()).collect::<Vec<_>>().join(" or ");
        return Err(failure!(loud, "expected {}, got {}", expected(), json_type(value)));
    }
    match value {
        Json::Null => Ok(Out::Null),
        Json::Bool(b) => Ok(Out::Bool(*b)),
        Json::Number(n) => {
            if let Some(min) = &schema.minimum {
                if compare(n, min) == Some(Ordering::Less) {
                    return Err(failure!(loud, "{n} is less than the minimum {min}"));
                }
            }
            if let Some(max) = &schema.maximum {
                if compare(n, max) == Some(Ordering::Greater) {
                    return Err(failure!(loud, "{n} is greater than the maximum {max}"));
                }
            }
            Ok(match (kind.unwrap_or(Kind::Number), n.as_i64(), n.as_u64()) {
                (Kind::Integer, Some(i), _) => Out::Int(i),
                (Kind::Integer, None, Some(u)) => Out::UInt(u),
                _ => Out::Float(n.as_f64().unwrap_or(f64::NAN)),
            })
        }
        Json::Str(text) => string(schema, text, loud),
        Json::Object(_) => object(schema, value, loud),
        Json::Array(_) => unreachable!("refused above"),
    }
}

/// The first branch that accepts ``value``; a JSON integer prefers a branch that reads it as an integer
/// (pydantic's smart union: ``1`` stays an int where an int is allowed, even after a float branch).
fn any_of<'a>(branches: &'a [Schema], value: &'a Json<'a>, loud: bool) -> Result<Out<'a>, Failure> {
    let integer = matches!(value, Json::Number(n) if is_integer(n));
    let mut found: Option<Out<'a>> = None;
    let mut failures: Vec<String> = Vec::new();
    let mut named: Vec<String> = Vec::new(); // the fields that branches of a rule across fields failed on
    for branch in branches {
        match validate(branch, value, loud) {
            Ok(out @ (Out::Int(_) | Out::UInt(_))) => return Ok(out),
            Ok(out) => {
                if !integer {
                    return Ok(out);
                }
                found.get_or_insert(out);
            }
            Err(_) if !loud => {}
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
    found.ok_or_else(|| failure!(loud, "{}", union_failure(failures, &named)))
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

fn string<'a>(schema: &Schema, text: &'a str, loud: bool) -> Result<Out<'a>, Failure> {
    if schema.min_length.is_some() || schema.max_length.is_some() {
        let length = text.chars().count();
        if let Some(min) = schema.min_length {
            if length < min {
                return Err(failure!(loud, "{length} characters, fewer than {min}"));
            }
        }
        if let Some(max) = schema.max_length {
            if length > max {
                return Err(failure!(loud, "{length} characters, more than {max}"));
            }
        }
    }
    // A date-time is parsed before its pattern is matched: the parser says what is wrong ("no timezone").
    let time = match schema.date_time {
        true => Some(
            parse_time(text).map_err(|why| failure!(loud, "{text:?} is not a valid date-time: {why}"))?,
        ),
        false => None,
    };
    if let Some(pattern) = &schema.pattern {
        if !pattern.is_match(text) {
            return Err(failure!(loud, "{text:?} does not match {:?}", pattern.as_str()));
        }
    }
    let Some(time) = time else {
        return Ok(Out::Str(text));
    };
    let instant = time.instant();
    if let Some((min, shown)) = &schema.time_min {
        if instant < *min {
            return Err(failure!(loud, "{text:?} is earlier than {shown}"));
        }
    }
    if let Some((max, shown)) = &schema.time_max_exclusive {
        if instant >= *max {
            return Err(failure!(loud, "{text:?} is not before {shown}"));
        }
    }
    Ok(Out::Time(time))
}

fn missing(name: &str, loud: bool) -> Failure {
    let mut failure = failure!(loud, "a required field is missing").at(name);
    failure.missing = true;
    failure
}

fn object<'a>(schema: &'a Schema, value: &'a Json<'a>, loud: bool) -> Result<Out<'a>, Failure> {
    let Json::Object(fields) = value else { unreachable!("an object") };
    let mut out = Vec::with_capacity(fields.len());
    let mut next = 0; // where the next property's field is when sent in the schema's order (encode's)
    for (name, key, sub) in &schema.properties {
        let found = match fields.get(next) {
            Some((sent, value)) if sent == name => {
                next += 1;
                Some(value)
            }
            _ => value.get(name).map(|(_, value)| value),
        };
        match found {
            Some(value) => {
                out.push((Key::Property(name, key), validate(sub, value, loud).map_err(|f| f.at(name))?))
            }
            None if schema.required.contains(name) => return Err(missing(name, loud)),
            None => {}
        }
    }
    for name in &schema.required {
        if value.get(name).is_none() && !schema.properties.iter().any(|(p, _, _)| p == name) {
            return Err(missing(name, loud));
        }
    }
    if out.len() == fields.len() {
        return Ok(Out::Object(out)); // every field a property's
    }
    for (key, value) in fields {
        if schema.properties.iter().any(|(name, _, _)| name == key) {
            continue;
        }
        match &schema.additional {
            Additional::Any => out.push((Key::Sent(key), plain(value))),
            Additional::Forbidden => {
                return Err(failure!(loud, "no such field").at(key));
            }
            Additional::Schema(sub) => {
                out.push((Key::Sent(key), validate(sub, value, loud).map_err(|f| f.at(key))?))
            }
        }
    }
    Ok(Out::Object(out))
}

/// A value no schema constrains, as pydantic would read it for ``Any`` (not used by the contracts so far).
fn plain<'a>(value: &'a Json<'a>) -> Out<'a> {
    match value {
        Json::Null => Out::Null,
        Json::Bool(b) => Out::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Out::Int(i),
            (None, Some(u)) => Out::UInt(u),
            _ => Out::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::Str(s) => Out::Str(s),
        Json::Object(fields) => {
            Out::Object(fields.iter().map(|(k, v)| (Key::Sent(k.as_ref()), plain(v))).collect())
        }
        Json::Array(_) => Out::Null,
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
                let value = to_python(py, value)?;
                match key {
                    Key::Property(_, name) => dict.set_item(name.bind(py), value)?,
                    Key::Sent(name) => dict.set_item(name, value)?,
                }
            }
            dict.into_any()
        }
    })
}

/// One event's contract, compiled from its JSON Schema.
#[pyclass(frozen, module = "adaptloop._core")]
pub(crate) struct Contract {
    schema: Schema,
    event: Option<EventMaker>,
    /// What [`Contract::canonical`] writes for each property absent from a record (in the schema's
    /// order; None: a required one).
    fills: Vec<Option<Fill>>,
}

/// A default of an event's field, for [`Contract::canonical`]: its JSON, or the time now (the
/// ``default_factory`` of ``timestamp``).
enum Fill {
    Json(Vec<u8>),
    Now,
}

/// A record the contract refuses: the ``(kind, path, message)`` of a ContractError.
pub(crate) struct Refusal {
    pub kind: &'static str,
    pub path: Vec<String>,
    pub message: String,
}

impl Refusal {
    fn new(kind: &'static str, path: Vec<String>, message: String) -> Self {
        Refusal { kind, path, message }
    }
}

/// ``value`` as orjson writes a float: the shortest digits that read back the same, plain from
/// 1e-5 to below 1e16, else as ``1.5e+16`` / ``1e-7`` (the differential test checks it against orjson).
pub(crate) fn write_float(out: &mut Vec<u8>, value: f64) {
    if value == 0.0 {
        out.extend_from_slice(if value.is_sign_negative() { b"-0.0" } else { b"0.0" });
        return;
    }
    let mut buffer = zmij::Buffer::new();
    let text = buffer.format_finite(value).as_bytes(); // the shortest digits, in zmij's own layout
    let text = match text.strip_prefix(b"-") {
        Some(rest) => {
            out.push(b'-');
            rest
        }
        None => text,
    };
    let (mantissa, power) = match text.iter().position(|&b| b == b'e' || b == b'E') {
        Some(at) => (&text[..at], exponent_of(&text[at + 1..])),
        None => (text, 0),
    };
    let (whole, fraction) = match mantissa.iter().position(|&b| b == b'.') {
        Some(at) => (&mantissa[..at], &mantissa[at + 1..]),
        None => (mantissa, &[][..]),
    };
    // The significant digits d1 d2 ... and the power of ten of d1.
    let mut all = [0u8; 64];
    let count = whole.len() + fraction.len();
    all[..whole.len()].copy_from_slice(whole);
    all[whole.len()..count].copy_from_slice(fraction);
    let leading = all[..count].iter().take_while(|&&b| b == b'0').count();
    let mut end = count;
    while end > leading + 1 && all[end - 1] == b'0' {
        end -= 1;
    }
    let digits = &all[leading..end];
    let exponent = power + whole.len() as i32 - 1 - leading as i32;
    if !(-5..=15).contains(&exponent) {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        if exponent > 0 {
            out.push(b'+');
        }
        out.extend_from_slice(itoa::Buffer::new().format(exponent).as_bytes());
    } else if exponent < 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-exponent - 1) as usize));
        out.extend_from_slice(digits);
    } else {
        let whole = exponent as usize + 1;
        if digits.len() <= whole {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', whole - digits.len()));
            out.extend_from_slice(b".0");
        } else {
            out.extend_from_slice(&digits[..whole]);
            out.push(b'.');
            out.extend_from_slice(&digits[whole..]);
        }
    }
}

/// The exponent zmij writes after its ``e`` (a sign, then digits).
fn exponent_of(text: &[u8]) -> i32 {
    let (negative, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let value = digits.iter().fold(0i32, |n, d| n * 10 + i32::from(d - b'0'));
    if negative { -value } else { value }
}

/// A time as Python's ``isoformat`` (and orjson) write an aware datetime: microseconds only when not
/// zero, the offset as ``+HH:MM``.
fn write_time(out: &mut Vec<u8>, t: &Time) {
    use std::io::Write;
    let _ = write!(
        out,
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    );
    if t.micro != 0 {
        let _ = write!(out, ".{:06}", t.micro);
    }
    let sign = if t.offset < 0 { '-' } else { '+' };
    let offset = t.offset.unsigned_abs();
    let _ = write!(out, "{sign}{:02}:{:02}\"", offset / 3600, offset % 3600 / 60);
}

/// A valid value as orjson writes what pydantic makes of it (``encode`` of the event).
fn write_out(out: &mut Vec<u8>, value: &Out<'_>) {
    match value {
        Out::Null => out.extend_from_slice(b"null"),
        Out::Bool(true) => out.extend_from_slice(b"true"),
        Out::Bool(false) => out.extend_from_slice(b"false"),
        Out::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Out::UInt(u) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
        Out::Float(f) => write_float(out, *f),
        Out::Str(s) => crate::join::event_json::write_string(out, s),
        Out::Time(t) => write_time(out, t),
        Out::Object(fields) => {
            out.push(b'{');
            for (i, (key, value)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let name = match key {
                    Key::Property(name, _) => *name,
                    Key::Sent(name) => *name,
                };
                crate::join::event_json::write_string(out, name);
                out.push(b':');
                write_out(out, value);
            }
            out.push(b'}');
        }
    }
}

impl Contract {
    /// Parse ``data`` and validate it (quietly first; loud, to say why, only when refused).
    fn checked<'a>(&'a self, value: &'a Json<'a>) -> Result<Out<'a>, Refusal> {
        if let Ok(out) = validate(&self.schema, value, false) {
            return Ok(out);
        }
        match validate(&self.schema, value, true) {
            Ok(out) => Ok(out), // unreachable: the quiet validation said no
            Err(failure) => {
                let mut path = failure.path;
                path.reverse();
                let kind = if failure.missing { "missing" } else { "invalid" };
                Err(Refusal::new(kind, path, failure.message))
            }
        }
    }

    /// The JSON of ``data`` as ``encode`` writes the event pydantic makes of it (every field, in the
    /// declared order, the absent ones with their defaults: ``now``, epoch seconds, for the time),
    /// or why the contract refuses it. The join reads its inputs this way, with no Python object
    /// per record.
    pub(crate) fn canonical(
        &self,
        data: Option<&[u8]>,
        max_bytes: usize,
        now: f64,
    ) -> Result<Vec<u8>, Refusal> {
        let data = data.ok_or_else(|| Refusal::new("empty", vec![], "the record has no value".into()))?;
        let value = parse(data, max_bytes)?;
        let out = self.checked(&value)?;
        let Out::Object(fields) = &out else {
            return Err(Refusal::new("invalid", vec![], "an event is an object".into()));
        };
        let mut json = Vec::with_capacity(data.len() + 64);
        json.push(b'{');
        let mut at = 0;
        for (i, (name, _, _)) in self.schema.properties.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            crate::join::event_json::write_string(&mut json, name);
            json.push(b':');
            match fields.get(at) {
                Some((Key::Property(sent, _), value)) if *sent == name.as_str() => {
                    write_out(&mut json, value);
                    at += 1;
                }
                _ => match self.fills.get(i) {
                    Some(Some(Fill::Json(default))) => json.extend_from_slice(default),
                    Some(Some(Fill::Now)) => crate::join::event_json::write_utc(&mut json, now),
                    _ => {
                        let message = format!("the contract gives {name} no default");
                        return Err(Refusal::new("invalid", vec![name.clone()], message));
                    }
                },
            }
        }
        json.push(b'}');
        Ok(json)
    }
}

/// A record's bytes parsed (not validated), or why they cannot be.
fn parse(data: &[u8], max_bytes: usize) -> Result<Json<'_>, Refusal> {
    if data.len() > max_bytes {
        let message = format!("{} bytes exceeds the {max_bytes}-byte limit", data.len());
        return Err(Refusal::new("too_large", vec![], message));
    }
    serde_json::from_slice(data).map_err(|e| {
        let message = e.to_string();
        if message.starts_with("number out of range") {
            // Valid JSON (any number of digits is), but no float: not a finite number, as pydantic says.
            let message = format!("a number is not finite in a 64-bit float: {message}");
            Refusal::new("invalid", vec![], message)
        } else {
            Refusal::new("malformed", vec![], format!("not valid JSON: {message}"))
        }
    })
}

/// What makes an event of the decoded fields, as ``Event.from_valid`` makes it (schemas/base.py).
struct EventMaker {
    /// The event's class.
    class: Py<PyAny>,
    /// ``fields`` -> every field, the defaults of those absent added (called only when some are absent).
    complete: Py<PyAny>,
    /// ``object.__new__``: an instance without running the model's ``__init__`` (no validation again).
    new: Py<PyAny>,
    /// The names of the slots from_valid sets: ``__dict__``, fields set, extra, private.
    slots: [Py<PyString>; 4],
}

impl EventMaker {
    fn make<'py>(&self, py: Python<'py>, fields: Bound<'py, PyAny>, count: usize) -> PyResult<Bound<'py, PyAny>> {
        let fields = if fields.len()? < count { self.complete.bind(py).call1((fields,))? } else { fields };
        let event = self.new.bind(py).call1((self.class.bind(py),))?;
        // SAFETY: PySet_New takes any iterable (the dict: its keys) and returns a new reference or NULL.
        let fields_set = unsafe { Bound::from_owned_ptr_or_err(py, pyo3::ffi::PySet_New(fields.as_ptr()))? };
        let none = py.None().into_bound(py);
        for (slot, value) in self.slots.iter().zip([&fields, &fields_set, &none, &none]) {
            // object.__setattr__, as from_valid calls it (the model's own __setattr__ refuses: frozen).
            // SAFETY: three valid borrowed references; the call returns -1 with an exception set on failure.
            if unsafe { pyo3::ffi::PyObject_GenericSetAttr(event.as_ptr(), slot.as_ptr(), value.as_ptr()) } < 0 {
                return Err(PyErr::fetch(py));
            }
        }
        Ok(event)
    }
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
    /// ``event`` and ``complete``, if given, are what :meth:`decode_event` makes its events with: the event's
    /// class, and what adds the defaults of absent fields to the decoded ones.
    #[new]
    /// ``defaults``: each field's default as JSON (None: the time now), by name, for
    /// :meth:`canonical`'s fields absent from a record.
    #[pyo3(signature = (schema, event=None, complete=None, defaults=None))]
    fn new(
        py: Python<'_>,
        schema: &str,
        event: Option<Py<PyAny>>,
        complete: Option<Py<PyAny>>,
        defaults: Option<Vec<(String, Option<Vec<u8>>)>>,
    ) -> PyResult<Self> {
        let value: Value = serde_json::from_str(schema)
            .map_err(|e| PyValueError::new_err(format!("the schema is not JSON: {e}")))?;
        let schema = compile(py, &value).map_err(PyValueError::new_err)?;
        let event = match (event, complete) {
            (Some(class), Some(complete)) => Some(EventMaker {
                class,
                complete,
                new: py.import("builtins")?.getattr("object")?.getattr("__new__")?.unbind(),
                slots: ["__dict__", "__pydantic_fields_set__", "__pydantic_extra__", "__pydantic_private__"]
                    .map(|name| PyString::intern(py, name).unbind()),
            }),
            (None, None) => None,
            _ => return Err(PyValueError::new_err("event and complete go together")),
        };
        let defaults = defaults.unwrap_or_default();
        let fills = schema
            .properties
            .iter()
            .map(|(name, _, _)| {
                defaults.iter().find(|(field, _)| field == name).map(|(_, json)| match json {
                    Some(json) => Fill::Json(json.clone()),
                    None => Fill::Now,
                })
            })
            .collect();
        Ok(Contract { schema, event, fills })
    }

    /// The event of the valid record ``data``, made as ``Event.from_valid`` makes it of :meth:`decode`'s
    /// fields (completed first if some are absent), or ContractError(kind, path, message).
    #[pyo3(signature = (data, max_bytes))]
    fn decode_event<'py>(
        &self,
        py: Python<'py>,
        data: Option<&[u8]>,
        max_bytes: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let maker = self.event.as_ref().ok_or_else(|| PyValueError::new_err("no event class given"))?;
        let fields = self.decode(py, data, max_bytes)?;
        maker.make(py, fields, self.schema.properties.len())
    }

    /// The JSON ``encode`` writes of the event of the valid record ``data`` (the join's raw path
    /// keeps these bytes; absent fields with their defaults, ``now`` for the time), or
    /// ContractError(kind, path, message), as :meth:`decode` says it.
    #[pyo3(signature = (data, max_bytes, now))]
    fn encode_valid<'py>(
        &self,
        py: Python<'py>,
        data: Option<&[u8]>,
        max_bytes: usize,
        now: f64,
    ) -> PyResult<Bound<'py, PyBytes>> {
        match self.canonical(data, max_bytes, now) {
            Ok(json) => Ok(PyBytes::new(py, &json)),
            Err(r) => Err(fail(py, r.kind, &r.path, r.message)),
        }
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
        let refused = |r: Refusal| fail(py, r.kind, &r.path, r.message);
        let value = parse(data, max_bytes).map_err(refused)?;
        let out = self.checked(&value).map_err(refused)?;
        to_python(py, out)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Contract>()?;
    m.add("ContractError", m.py().get_type::<ContractError>())?;
    Ok(())
}
