//! Parsing of the human units used in workflow files and settings: durations (`250ms`, `45s`,
//! `1h30m`, or a number of seconds) and sizes (`512Mi`, `2Gi`, `1G`, or a number of bytes);
//! [`HumanDuration`] and [`ByteSize`] carry them in typed settings, read and written as text.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration or size that does not parse; the message says why, for people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnitError(String);

impl UnitError {
    fn new(message: impl Into<String>) -> UnitError {
        UnitError(message.into())
    }
}

/// Parses a duration such as `250ms`, `45s`, `5m`, `1h30m`, `1.5s` or `90` (seconds).
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(UnitError::new("empty duration"));
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return seconds_to_duration(seconds);
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let (number, after) = leading_number(
            rest,
            || format!("invalid duration `{text}`: expected a number before `{rest}`"),
            |bad| format!("invalid duration `{text}`: `{bad}` is not a number"),
        )?;
        rest = after;
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds_per_unit = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => {
                return Err(UnitError::new(format!(
                    "invalid duration `{text}`: missing unit after `{number}` (use ms, s, m, h or d)"
                )))
            }
            other => {
                return Err(UnitError::new(format!(
                    "invalid duration `{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
                )))
            }
        };
        total += number * seconds_per_unit;
    }
    seconds_to_duration(total)
}

/// Splits the number (digits and dots) off the start of `text`: the number and what follows.
/// The errors are worded by the caller: `missing` when no digit starts the text, `not_a_number`
/// with the digits when they do not make a number (`1.2.3`).
fn leading_number(
    text: &str,
    missing: impl FnOnce() -> String,
    not_a_number: impl FnOnce(&str) -> String,
) -> Result<(f64, &str), UnitError> {
    let len = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    if len == 0 {
        return Err(UnitError::new(missing()));
    }
    let (digits, rest) = text.split_at(len);
    let number = digits.parse().map_err(|_| UnitError::new(not_a_number(digits)))?;
    Ok((number, rest))
}

fn seconds_to_duration(seconds: f64) -> Result<Duration, UnitError> {
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(UnitError::new(format!(
            "invalid duration `{seconds}`: must be a non-negative number of seconds"
        )));
    }
    if seconds > 1e9 {
        return Err(UnitError::new(format!(
            "invalid duration: {seconds} seconds is too long"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a size such as `512Mi`, `2Gi`, `1.5G`, `100k` or `1048576` (bytes).
pub fn parse_size(text: &str) -> Result<u64, UnitError> {
    let text = text.trim();
    let (number, unit) = leading_number(
        text,
        || format!("invalid size `{text}`: expected a number such as 512Mi"),
        |bad| format!("invalid size `{text}`: `{bad}` is not a number"),
    )?;
    let multiplier: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "k" | "K" | "KB" => 1e3,
        "M" | "MB" => 1e6,
        "G" | "GB" => 1e9,
        "T" | "TB" => 1e12,
        "Ki" | "KiB" => 1024.0,
        "Mi" | "MiB" => 1024.0 * 1024.0,
        "Gi" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "Ti" | "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(UnitError::new(format!(
                "invalid size `{text}`: unknown unit `{other}` (use Ki, Mi, Gi, Ti, K, M, G, T or bytes)"
            )))
        }
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(UnitError::new(format!("invalid size `{text}`: too large")));
    }
    Ok(bytes.round() as u64)
}

/// Formats a duration compactly for people: `850ms`, `12.3s`, `4m05s`, `2h10m`.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", duration.as_secs_f64())
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// A size in bytes for people: `512 bytes`, `16 KiB`, `1.5 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

/// A duration exactly, in the largest units that lose nothing: `250ms`, `45s`, `1m30s`,
/// `2h`, `1500ms`. What [`parse_duration`] reads back as the same duration.
pub fn format_duration_exact(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let mut seconds = ms / 1000;
    let mut out = String::new();
    for (unit, length) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if seconds >= length {
            out.push_str(&format!("{}{unit}", seconds / length));
            seconds %= length;
        }
    }
    out
}

/// A settings value read by `$parse` (from text, or in a file also a bare number) and written
/// as its text (`Display`).
macro_rules! text_value {
    ($type:ident, $parse:ident) => {
        impl FromStr for $type {
            type Err = UnitError;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                $parse(text).map($type)
            }
        }

        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_text_or_number(deserializer)
            }
        }
    };
}

/// A duration in settings: written and read as text such as `30s` or `1m30s`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration_exact(self.0))
    }
}

text_value!(HumanDuration, parse_duration);

/// A size in settings: written and read as text such as `64Mi` or `1G`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, length) in [("Ti", 1u64 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if self.0 >= length && self.0 % length == 0 {
                return write!(f, "{}{unit}", self.0 / length);
            }
        }
        write!(f, "{}", self.0)
    }
}

text_value!(ByteSize, parse_size);

/// Reads a value given as text (`"30s"`) or as a bare number (`30`), through its `FromStr`.
fn deserialize_text_or_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = UnitError>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Text(String),
        Whole(u64),
        Number(f64),
    }
    let text = match Given::deserialize(deserializer)? {
        Given::Text(text) => text,
        Given::Whole(number) => number.to_string(),
        Given::Number(number) => number.to_string(),
    };
    text.parse().map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("45s"), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(
            parse_duration("5x").unwrap_err().to_string(),
            "invalid duration `5x`: unknown unit `x` (use ms, s, m, h or d)"
        );
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-3").is_err());
        assert!(parse_duration("m5").is_err());
        assert!(parse_duration("1h30").unwrap_err().to_string().contains("missing unit"));
    }

    #[test]
    fn settings_values_round_trip_as_text() {
        for text in ["250ms", "45s", "1m30s", "2h", "1d1h", "1500ms", "0s"] {
            let duration: HumanDuration = text.parse().unwrap();
            assert_eq!(duration.to_string(), text);
        }
        assert_eq!("90".parse::<HumanDuration>().unwrap().to_string(), "1m30s");
        for text in ["64Mi", "1Gi", "1000", "3Ki"] {
            let size: ByteSize = text.parse().unwrap();
            assert_eq!(size.to_string(), text);
        }
        assert_eq!("1G".parse::<ByteSize>().unwrap().to_string(), "1000000000");
        assert!("lots"
            .parse::<ByteSize>()
            .unwrap_err()
            .to_string()
            .starts_with("invalid size `lots`"));
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(format_bytes(512), "512 bytes");
        assert_eq!(format_bytes(16 * 1024), "16 KiB");
        assert_eq!(format_bytes(1024 * 1024), "1 MiB");
        assert_eq!(format_bytes(1024 * 1024 * 3 / 2), "1.5 MiB");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512Mi"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("2Gi"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("1G"), Ok(1_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs")
            .unwrap_err()
            .to_string()
            .contains("unknown unit `parsecs`"));
        assert!(parse_size("Mi").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(format_duration(Duration::from_secs(245)), "4m05s");
        assert_eq!(format_duration(Duration::from_secs(7800)), "2h10m");
    }
}
