//! A parser of the Prometheus text exposition format (and the OpenMetrics text that
//! prometheus-client writes): sample lines become [`Sample`]s, comments (`# HELP`, `# TYPE`,
//! `# EOF`) and blank lines are skipped, a malformed line is reported and skipped, never fatal.

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// `(line number, reason)` of each line that was skipped as malformed.
    pub malformed: Vec<(usize, String)>,
}

pub fn parse(text: &str) -> Exposition {
    let mut out = Exposition::default();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_sample(line) {
            Ok(sample) => out.samples.push(sample),
            Err(reason) => out.malformed.push((index + 1, reason)),
        }
    }
    out
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let mut cursor = Cursor {
        bytes: line.as_bytes(),
        at: 0,
    };
    let name = cursor.take_while(|b, first| is_name_byte(b, first, true));
    if name.is_empty() {
        return Err("expected a metric name".into());
    }
    if !matches!(cursor.peek(), Some(b'{' | b' ' | b'\t')) {
        return Err(format!("expected labels or a value after {name}"));
    }
    let mut labels = Vec::new();
    cursor.skip_blanks();
    if cursor.peek() == Some(b'{') {
        cursor.at += 1;
        loop {
            cursor.skip_blanks();
            if cursor.eat(b'}') {
                break;
            }
            let label = cursor.take_while(|b, first| is_name_byte(b, first, false));
            if label.is_empty() {
                return Err(format!("expected a label name at column {}", cursor.at + 1));
            }
            cursor.skip_blanks();
            if !cursor.eat(b'=') {
                return Err(format!("expected '=' after label {label}"));
            }
            cursor.skip_blanks();
            let value = cursor.quoted()?;
            labels.push((label, value));
            cursor.skip_blanks();
            if cursor.eat(b',') {
                continue;
            }
            if cursor.eat(b'}') {
                break;
            }
            return Err(format!("expected ',' or '}}' at column {}", cursor.at + 1));
        }
    }
    // Value, then an optional timestamp and (OpenMetrics) an optional exemplar: ignored.
    let rest =
        std::str::from_utf8(&cursor.bytes[cursor.at..]).map_err(|_| "invalid UTF-8".to_string())?;
    let value_text = rest
        .split_ascii_whitespace()
        .next()
        .ok_or("missing value")?;
    let value = parse_value(value_text).ok_or_else(|| format!("invalid value {value_text:?}"))?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Go's `ParseFloat` spellings as used by exporters: decimals, exponents, `+Inf`, `-Inf`, `NaN`.
pub fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if text
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) =>
        {
            text.parse().ok()
        }
        _ => None,
    }
}

fn is_name_byte(b: u8, first: bool, colon_allowed: bool) -> bool {
    b.is_ascii_alphabetic()
        || b == b'_'
        || (colon_allowed && b == b':')
        || (!first && b.is_ascii_digit())
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, expected: u8) -> bool {
        let hit = self.peek() == Some(expected);
        if hit {
            self.at += 1;
        }
        hit
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    fn take_while(&mut self, accept: impl Fn(u8, bool) -> bool) -> String {
        let start = self.at;
        while let Some(b) = self.peek() {
            if !accept(b, self.at == start) {
                break;
            }
            self.at += 1;
        }
        // Only ASCII bytes are accepted, so this is valid UTF-8.
        String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned()
    }

    /// A double-quoted label value with the format's escapes `\\`, `\"` and `\n`.
    fn quoted(&mut self) -> Result<String, String> {
        if !self.eat(b'"') {
            return Err(format!("expected '\"' at column {}", self.at + 1));
        }
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => return Err("unterminated label value".into()),
                Some(b'"') => {
                    self.at += 1;
                    break;
                }
                Some(b'\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(b'n') => value.push(b'\n'),
                        Some(b'\\') => value.push(b'\\'),
                        Some(b'"') => value.push(b'"'),
                        // Unknown escapes are kept as written, like Prometheus does.
                        Some(other) => value.extend_from_slice(&[b'\\', other]),
                        None => return Err("unterminated label value".into()),
                    }
                    self.at += 1;
                }
                Some(b) => {
                    value.push(b);
                    self.at += 1;
                }
            }
        }
        String::from_utf8(value).map_err(|_| "label value is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What prometheus-client 0.26 writes for the project's HTTP mode (OpenMetrics text).
    const POD_METRICS: &str = r#"# HELP wasmedge_http_requests Requests answered.
# TYPE wasmedge_http_requests counter
wasmedge_http_requests_total{version="v1",status="200"} 1027
wasmedge_http_requests_total{version="v1",status="500"} 3
# HELP wasmedge_http_request_duration_seconds Request durations.
# TYPE wasmedge_http_request_duration_seconds histogram
wasmedge_http_request_duration_seconds_sum{version="v1"} 5.25
wasmedge_http_request_duration_seconds_count{version="v1"} 1030
wasmedge_http_request_duration_seconds_bucket{le="0.005",version="v1"} 1000
wasmedge_http_request_duration_seconds_bucket{le="+Inf",version="v1"} 1030
# EOF
"#;

    #[test]
    fn reads_counters_and_histograms() {
        let exposition = parse(POD_METRICS);
        assert!(
            exposition.malformed.is_empty(),
            "{:?}",
            exposition.malformed
        );
        assert_eq!(exposition.samples.len(), 6);
        let first = &exposition.samples[0];
        assert_eq!(first.name, "wasmedge_http_requests_total");
        assert_eq!(first.label("version"), Some("v1"));
        assert_eq!(first.label("status"), Some("200"));
        assert_eq!(first.value, 1027.0);
        let inf = &exposition.samples[5];
        assert_eq!(inf.label("le"), Some("+Inf"));
        assert_eq!(inf.value, 1030.0);
    }

    #[test]
    fn escapes_spacing_timestamps_and_special_values() {
        let text = "m{a=\"x\\\"y\\\\z\\nw\" , b = \"\",} 1.5e3 1700000000000\n\
                    m2 +Inf\n\
                    m3{} -Inf\n\
                    m4 NaN # {trace_id=\"1\"} 1.0\n\
                    m5{a=\"{},=\"} 7\n";
        let exposition = parse(text);
        assert!(
            exposition.malformed.is_empty(),
            "{:?}",
            exposition.malformed
        );
        let s = &exposition.samples;
        assert_eq!(
            s[0].labels,
            vec![
                ("a".into(), "x\"y\\z\nw".into()),
                ("b".into(), String::new())
            ]
        );
        assert_eq!(s[0].value, 1500.0);
        assert_eq!(s[1].value, f64::INFINITY);
        assert_eq!(s[2].value, f64::NEG_INFINITY);
        assert!(s[3].value.is_nan());
        assert_eq!(s[4].label("a"), Some("{},="));
    }

    #[test]
    fn malformed_lines_are_skipped_and_reported() {
        let text = "good 1\n{x=\"1\"} 2\nm{x=1} 3\nm{x=\"1\" 4\nm{x=\"open} 5\nm\nm one\n9m 1\nm-1 2\nalso_good{a=\"b\"} 2\n";
        let exposition = parse(text);
        let names: Vec<_> = exposition.samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["good", "also_good"]);
        let lines: Vec<_> = exposition.malformed.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7, 8, 9]);
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
            let _ = parse(&text);
        }

        #[test]
        fn never_panics_on_metric_like_text(text in "[a-z_{}=\",\\\\ #0-9.+\\-\nIinfNa]{0,300}") {
            let _ = parse(&text);
        }

        #[test]
        fn label_values_round_trip(value in "\\PC{0,40}", number in 0u64..1_000_000) {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let exposition = parse(&format!("m{{v=\"{escaped}\"}} {number}\n"));
            prop_assert_eq!(exposition.samples.len(), 1);
            prop_assert_eq!(exposition.samples[0].label("v"), Some(value.as_str()));
            prop_assert_eq!(exposition.samples[0].value, number as f64);
        }
    }
}
