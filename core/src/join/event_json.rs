//! The JSON of predictions and outcomes as the join keeps them (orjson's compact output of a
//! validated event), read without parsing: a top-level field's value is a slice of the event's
//! bytes, and a training example is written by splicing those slices, so its bytes are what
//! ``orjson.dumps`` writes for the same values. Times are read and written the way Python's
//! ``datetime`` does (``timestamp()``, ``fromtimestamp(..., UTC)``) so that deadlines and example
//! times agree to the last bit.

use std::ops::Range;

/// The span of the value of each top-level key of a JSON object, in order.
pub fn fields(json: &[u8]) -> Vec<(Range<usize>, Range<usize>)> {
    let mut out = Vec::with_capacity(16);
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return out;
    }
    i += 1;
    loop {
        i = skip_ws(json, i);
        match json.get(i) {
            Some(b'"') => {}
            _ => return out,
        }
        let key_end = skip_string(json, i);
        let key = i + 1..key_end - 1;
        i = skip_ws(json, key_end);
        if json.get(i) != Some(&b':') {
            return out;
        }
        i = skip_ws(json, i + 1);
        let end = skip_value(json, i);
        out.push((key, i..end));
        i = skip_ws(json, end);
        match json.get(i) {
            Some(b',') => i += 1,
            _ => return out,
        }
    }
}

/// The raw value of ``key`` at the top level of ``json`` (``None``: absent), read up to it only.
pub fn field<'a>(json: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let mut i = skip_ws(json, 0);
    if json.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(json, i);
        if json.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(json, i);
        let found = &json[i + 1..key_end - 1] == key.as_bytes();
        i = skip_ws(json, key_end);
        if json.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(json, i + 1);
        let end = skip_value(json, i);
        if found {
            return Some(&json[i..end]);
        }
        i = skip_ws(json, end);
        match json.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

fn skip_ws(json: &[u8], mut i: usize) -> usize {
    while i < json.len() && matches!(json[i], b' ' | b'\n' | b'\r' | b'\t') {
        i += 1;
    }
    i
}

/// The index after the string starting at ``i`` (its opening quote).
fn skip_string(json: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < json.len() {
        match memchr::memchr2(b'"', b'\\', &json[i..]) {
            Some(at) if json[i + at] == b'"' => return i + at + 1,
            Some(at) => i += at + 2, // an escape: the next character is part of it
            None => break,
        }
    }
    json.len()
}

fn skip_value(json: &[u8], i: usize) -> usize {
    match json.get(i) {
        Some(b'"') => skip_string(json, i),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < json.len() {
                match json[j] {
                    b'"' => {
                        j = skip_string(json, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            json.len()
        }
        _ => {
            let mut j = i;
            while j < json.len()
                && !matches!(json[j], b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
            {
                j += 1;
            }
            j
        }
    }
}

/// The text of a JSON string value (with its quotes), unescaped.
pub fn string(raw: &[u8]) -> Option<String> {
    if raw.len() < 2 || raw[0] != b'"' || raw[raw.len() - 1] != b'"' {
        return None;
    }
    let body = &raw[1..raw.len() - 1];
    if !body.contains(&b'\\') {
        return String::from_utf8(body.to_vec()).ok();
    }
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'\\' {
            out.push(body[i]);
            i += 1;
            continue;
        }
        let c = *body.get(i + 1)?;
        i += 2;
        let simple = match c {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        if c != b'u' {
            return None;
        }
        let hex = |at: usize| -> Option<u32> {
            u32::from_str_radix(std::str::from_utf8(body.get(at..at + 4)?).ok()?, 16).ok()
        };
        let mut code = hex(i)?;
        i += 4;
        if (0xd800..0xdc00).contains(&code)
            && body.get(i) == Some(&b'\\')
            && body.get(i + 1) == Some(&b'u')
        {
            let low = hex(i + 2)?;
            if (0xdc00..0xe000).contains(&low) {
                code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
                i += 6;
            }
        }
        let ch = char::from_u32(code)?;
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    String::from_utf8(out).ok()
}

/// ``s`` as orjson writes a string: quoted, with ``"``, ``\`` and control characters escaped.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(b >> 4) as usize]);
                out.push(HEX[(b & 15) as usize]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn digits(raw: &[u8], range: Range<usize>) -> Option<i64> {
    let part = raw.get(range)?;
    if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(part.iter().fold(0i64, |n, d| n * 10 + (d - b'0') as i64))
}

/// Seconds since the epoch of an orjson datetime string (with its quotes), as Python's
/// ``datetime.timestamp()`` gives them: the exact microseconds, divided once.
pub fn timestamp(raw: &[u8]) -> Option<f64> {
    let s = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if s.len() < 19
        || s[4] != b'-'
        || s[7] != b'-'
        || s[10] != b'T'
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (digits(s, 0..4)?, digits(s, 5..7)?, digits(s, 8..10)?);
    let (h, mi, se) = (digits(s, 11..13)?, digits(s, 14..16)?, digits(s, 17..19)?);
    let mut i = 19;
    let mut micros = 0i64;
    if s.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut end = start;
        while end < s.len() && s[end].is_ascii_digit() {
            end += 1;
        }
        let frac = &s[start..end];
        for k in 0..6 {
            micros = micros * 10 + frac.get(k).map_or(0, |d| (d - b'0') as i64);
        }
        i = end;
    }
    let offset = match s.get(i) {
        Some(b'Z') => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(s, i + 1..i + 3)?;
            let om = digits(s, i + 4..i + 6)?;
            let os = if s.get(i + 6) == Some(&b':') {
                digits(s, i + 7..i + 9)?
            } else {
                0
            };
            let total = oh * 3600 + om * 60 + os;
            if sign == b'-' {
                -total
            } else {
                total
            }
        }
        None => 0,
        _ => return None,
    };
    let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    Some((seconds * 1_000_000 + micros) as f64 / 1e6)
}

/// ``datetime.fromtimestamp(seconds, UTC)`` as orjson writes it (microseconds rounded half to even,
/// as CPython rounds them; written only when not zero).
pub fn write_utc(out: &mut Vec<u8>, seconds: f64) {
    let mut whole = seconds.trunc();
    let mut frac = ((seconds - whole) * 1e6).round_ties_even();
    if frac >= 1e6 {
        frac -= 1e6;
        whole += 1.0;
    } else if frac < 0.0 {
        frac += 1e6;
        whole -= 1.0;
    }
    let whole = whole as i64;
    let micros = frac as i64;
    let (days, rest) = (whole.div_euclid(86_400), whole.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let text = format!(
        "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        y,
        m,
        d,
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    out.extend_from_slice(text.as_bytes());
    if micros != 0 {
        out.extend_from_slice(format!(".{micros:06}").as_bytes());
    }
    out.extend_from_slice(b"+00:00\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &[u8] = br#"{"schema_version":1,"timestamp":"2026-01-01T00:00:05.250000+01:00","decision_id":"d\"1","features":{"x":[1,{"y":"}"}]},"prediction":true,"fallback":false}"#;

    #[test]
    fn fields_are_slices_of_the_event() {
        assert_eq!(
            field(EVENT, "features"),
            Some(&br#"{"x":[1,{"y":"}"}]}"#[..])
        );
        assert_eq!(field(EVENT, "prediction"), Some(&b"true"[..]));
        assert_eq!(field(EVENT, "fallback"), Some(&b"false"[..]));
        assert_eq!(field(EVENT, "label"), None);
        assert_eq!(
            string(field(EVENT, "decision_id").unwrap()).as_deref(),
            Some("d\"1")
        );
    }

    #[test]
    fn timestamps_are_pythons() {
        // datetime(2026, 1, 1, 0, 0, 5, 250000, tzinfo=timezone(timedelta(hours=1))).timestamp()
        assert_eq!(
            timestamp(field(EVENT, "timestamp").unwrap()),
            Some(1767222005.25)
        );
        assert_eq!(timestamp(b"\"1970-01-01T00:00:00+00:00\""), Some(0.0));
        let mut out = Vec::new();
        write_utc(&mut out, 1767225605.25);
        assert_eq!(out, b"\"2026-01-01T00:00:05.250000+00:00\"");
        out.clear();
        write_utc(&mut out, 1767225660.0);
        assert_eq!(out, b"\"2026-01-01T00:01:00+00:00\"");
    }

    #[test]
    fn strings_are_escaped_as_orjson_escapes_them() {
        let mut out = Vec::new();
        write_string(&mut out, "a\"b\\c\n\u{1}é/");
        assert_eq!(out, "\"a\\\"b\\\\c\\n\\u0001é/\"".as_bytes());
    }
}
