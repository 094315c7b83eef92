//! What commands print: aligned tables and sentences for people, one JSON document for
//! scripts (`--json`). Everything goes through [`emit`], so a closed pipe
//! (`latchkey user list | head -1`) ends the process quietly instead of panicking.
use anyhow::{Context, Result};
use std::io::Write;
use time::OffsetDateTime;
use time::macros::format_description;

/// Writes `text` and a newline to stdout.
pub fn emit(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.write_all(b"\n"))
        .and_then(|()| stdout.flush());
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        other => other.context("writing to standard output"),
    }
}

/// Prints one JSON document (indented) on stdout.
pub fn json(value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding JSON output")?;
    emit(&text)
}

/// A note for the person at the terminal, on stderr (never mixed into `--json` output).
pub fn note(text: &str) {
    eprintln!("latchkey: {text}");
}

/// Columns padded to their widest cell, two spaces apart.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                if i + 1 < cells.len() {
                    let pad = widths[i].saturating_sub(cell.chars().count());
                    text.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.trim_end().to_string()
        };
        let mut lines = vec![line(self.headers.clone())];
        for row in &self.rows {
            lines.push(line(row.iter().map(String::as_str).collect()));
        }
        lines.join("\n")
    }
}

/// A timestamp for tables: `2025-06-01 12:00:00Z` (UTC, whole seconds).
pub fn when(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]Z"
        ))
        .unwrap_or_else(|_| t.to_string())
}

/// An optional timestamp for tables; `-` when absent.
pub fn when_opt(t: Option<OffsetDateTime>) -> String {
    t.map_or_else(|| "-".into(), when)
}

/// A timestamp for JSON: RFC 3339, UTC.
pub fn rfc3339(t: OffsetDateTime) -> String {
    latchkey_server::rfc3339(t.to_offset(time::UtcOffset::UTC))
}

pub fn rfc3339_opt(t: Option<OffsetDateTime>) -> serde_json::Value {
    t.map_or(serde_json::Value::Null, |t| rfc3339(t).into())
}

/// `in 2m`, `3h ago`, `now`: the distance from `now`, to the largest whole unit.
pub fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let seconds = (t - now).whole_seconds();
    let abs = seconds.unsigned_abs();
    // Rounded to the nearest unit: a key activating in 119 s reads "in 2m".
    let round = |unit: u64| (abs + unit / 2) / unit;
    let text = match abs {
        0 => return "now".into(),
        1..=89 => format!("{abs}s"),
        90..=5_399 => format!("{}m", round(60)),
        5_400..=129_599 => format!("{}h", round(3600)),
        _ => format!("{}d", round(86_400)),
    };
    if seconds > 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// Cuts `text` to `max` characters, marking the cut with `…`.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn tables_align_and_trim() {
        let mut t = Table::new(&["ID", "NAME", "NOTE"]);
        t.row(vec!["1".into(), "alice".into(), "-".into()]);
        t.row(vec!["22".into(), "bo".into(), "long note".into()]);
        assert_eq!(
            t.render(),
            "ID  NAME   NOTE\n1   alice  -\n22  bo     long note"
        );
    }

    #[test]
    fn times_read_well() {
        let t = datetime!(2025-06-01 12:00:00 UTC);
        assert_eq!(when(t), "2025-06-01 12:00:00Z");
        assert_eq!(relative(t + time::Duration::minutes(2), t), "in 2m");
        assert_eq!(relative(t - time::Duration::hours(3), t), "3h ago");
        assert_eq!(relative(t, t), "now");
        assert_eq!(relative(t + time::Duration::seconds(119), t), "in 2m");
        assert_eq!(relative(t + time::Duration::seconds(30), t), "in 30s");
        assert_eq!(clip("abcdef", 4), "abc…");
    }
}
