//! One decision's entry in the join's state, and its changelog bytes.
//!
//! An entry is an ordered map of short keys (``pt``, ``st``, ``p``, ``o``, ``dl``, ``h``, ``off``,
//! ``ro``, ``gc``, ``r``) to plain values, kept in the order its keys were first set: the changelog
//! stores it as a MessagePack map in that order, byte for byte what ``msgspec.msgpack`` writes for
//! the same Python dict.

use std::sync::Arc;

pub const PENDING: &str = "pending";
pub const DONE: &str = "done";
pub const EXPIRED: &str = "expired";
pub const LATE: &str = "late";
pub const REJECTED: &str = "rejected";

/// A value of an entry: what a Python ``JoinEntry`` holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    Bytes(Arc<[u8]>),
}

impl Value {
    /// The number this value holds (``None`` for anything else, as Python's ``entry.get(...)`` of a
    /// null).
    pub fn number(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// An entry: its keys in the order they were first set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Entry {
    pub fields: Vec<(Arc<str>, Value)>,
}

impl Entry {
    pub fn new() -> Self {
        Entry {
            fields: Vec::with_capacity(8),
        }
    }

    /// Set ``key`` (in place if present, at the end if new: a Python dict's ``{**entry, key:
    /// value}``).
    pub fn set(&mut self, key: &str, value: Value) {
        for (k, v) in self.fields.iter_mut() {
            if &**k == key {
                *v = value;
                return;
            }
        }
        self.fields.push((Arc::from(key), value));
    }

    /// Remove ``key`` if present (a Python dict's ``pop(key, None)``).
    pub fn remove(&mut self, key: &str) {
        self.fields.retain(|(k, _)| &**k != key);
    }

    /// ``with`` a key set: a builder for new entries.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.set(key, value);
        self
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|(k, _)| &**k == key)
            .map(|(_, v)| v)
    }

    /// The input partition the decision belongs to.
    pub fn partition(&self) -> i64 {
        match self.get("pt") {
            Some(Value::Int(p)) => *p,
            Some(Value::Float(f)) => *f as i64,
            _ => 0,
        }
    }

    pub fn status(&self) -> &str {
        match self.get("st") {
            Some(Value::Str(s)) => s,
            _ => "",
        }
    }

    pub fn is_pending(&self) -> bool {
        self.status() == PENDING
    }

    /// An event's JSON (``p`` or ``o``), if the entry holds it.
    pub fn json(&self, key: &str) -> Option<&Arc<[u8]>> {
        match self.get(key) {
            Some(Value::Bytes(b)) => Some(b),
            _ => None,
        }
    }

    /// A time (``dl`` or ``gc``), if set.
    pub fn time(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::number)
    }

    /// The offset of a waiting outcome (``off``), if known.
    pub fn offset(&self) -> Option<i64> {
        match self.get("off") {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }

    /// Whether the waiting outcome was read from the repartition topic (``ro``).
    pub fn sent_on(&self) -> bool {
        matches!(self.get("ro"), Some(Value::Bool(true)))
    }

    /// The entry as the changelog keeps it (MessagePack, as ``msgspec.msgpack.Encoder().encode``).
    pub fn to_msgpack(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.fields.len() * 8);
        map_header(&mut out, self.fields.len());
        for (key, value) in &self.fields {
            str_bytes(&mut out, key.as_bytes());
            value_bytes(&mut out, value);
        }
        out
    }
}

fn map_header(out: &mut Vec<u8>, n: usize) {
    if n < 16 {
        out.push(0x80 | n as u8);
    } else if n <= 0xffff {
        out.push(0xde);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdf);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
}

fn str_bytes(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xff {
        out.push(0xd9);
        out.push(n as u8);
    } else if n <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s);
}

fn bin_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n <= 0xff {
        out.push(0xc4);
        out.push(n as u8);
    } else if n <= 0xffff {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

fn int_bytes(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        let u = i as u64;
        if u <= 0x7f {
            out.push(u as u8);
        } else if u <= 0xff {
            out.push(0xcc);
            out.push(u as u8);
        } else if u <= 0xffff {
            out.push(0xcd);
            out.extend_from_slice(&(u as u16).to_be_bytes());
        } else if u <= 0xffff_ffff {
            out.push(0xce);
            out.extend_from_slice(&(u as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&u.to_be_bytes());
        }
    } else if i >= -32 {
        out.push(i as i8 as u8);
    } else if i >= i8::MIN as i64 {
        out.push(0xd0);
        out.push(i as i8 as u8);
    } else if i >= i16::MIN as i64 {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= i32::MIN as i64 {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

fn value_bytes(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Nil => out.push(0xc0),
        Value::Bool(false) => out.push(0xc2),
        Value::Bool(true) => out.push(0xc3),
        Value::Int(i) => int_bytes(out, *i),
        Value::Float(f) => {
            out.push(0xcb);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Value::Str(s) => str_bytes(out, s.as_bytes()),
        Value::Bytes(b) => bin_bytes(out, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_entry_encodes_as_msgspec_writes_it() {
        // msgspec.msgpack.Encoder().encode({"pt": 3, "st": "pending", "p": b"{}", "o": None, "dl":
        // 1.5, "h": 60.0})
        let entry = Entry::new()
            .with("pt", Value::Int(3))
            .with("st", Value::Str(PENDING.into()))
            .with("p", Value::Bytes(Arc::from(&b"{}"[..])))
            .with("o", Value::Nil)
            .with("dl", Value::Float(1.5))
            .with("h", Value::Float(60.0));
        let mut expected = vec![0x86, 0xa2, b'p', b't', 3, 0xa2, b's', b't', 0xa7];
        expected.extend_from_slice(b"pending");
        expected.extend_from_slice(&[0xa1, b'p', 0xc4, 2, b'{', b'}', 0xa1, b'o', 0xc0]);
        expected.extend_from_slice(&[0xa2, b'd', b'l', 0xcb]);
        expected.extend_from_slice(&1.5f64.to_bits().to_be_bytes());
        expected.extend_from_slice(&[0xa1, b'h', 0xcb]);
        expected.extend_from_slice(&60.0f64.to_bits().to_be_bytes());
        assert_eq!(entry.to_msgpack(), expected);
    }

    #[test]
    fn setting_a_key_again_keeps_its_place() {
        let mut entry = Entry::new()
            .with("pt", Value::Int(0))
            .with("st", Value::Str(PENDING.into()));
        entry.set("pt", Value::Int(1));
        entry.set("gc", Value::Float(2.0));
        let keys: Vec<&str> = entry.fields.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys, ["pt", "st", "gc"]);
        assert_eq!(entry.partition(), 1);
    }

    #[test]
    fn integers_take_their_smallest_form() {
        for (i, bytes) in [
            (127i64, vec![0x7f]),
            (128, vec![0xcc, 0x80]),
            (65536, vec![0xce, 0, 1, 0, 0]),
            (-1, vec![0xff]),
            (-33, vec![0xd0, 0xdf]),
        ] {
            let mut out = Vec::new();
            int_bytes(&mut out, i);
            assert_eq!(out, bytes, "{i}");
        }
    }
}
