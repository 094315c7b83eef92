//! Path checks for the part of a request path after a BFF prefix.
//!
//! Browsers normalise dot segments before sending a request, so anything that could climb out
//! of the route's upstream prefix is refused rather than repaired: the upstream only ever sees
//! `<base path><rest>` where `rest` has no `.`/`..` segment (plain, percent-encoded, double
//! encoded, or with `;parameters`), no encoded or literal slash or backslash inside a
//! segment, no empty segment, no control character and no invalid UTF-8.

/// Why a path was refused (the `error_description` of the 400).
pub type Refusal = &'static str;

/// Checks the raw (still percent-encoded) path after the prefix.
pub fn check_rest(rest: &str) -> Result<(), Refusal> {
    if rest.is_empty() {
        return Ok(());
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, raw) in segments.iter().enumerate() {
        if raw.is_empty() {
            // `a//b` or a leading `/`: the upstream might collapse it, or read `//host`.
            if i != last {
                return Err("the path has an empty segment");
            }
            continue;
        }
        check_segment(raw)?;
    }
    Ok(())
}

fn check_segment(raw: &str) -> Result<(), Refusal> {
    if raw.contains('\\') {
        return Err("the path contains a backslash");
    }
    if raw.bytes().any(|b| b <= 0x20 || b >= 0x7f) {
        return Err("the path contains a control, space or non-ASCII character");
    }
    let once = percent_decode(raw)?;
    check_decoded(&once)?;
    // Double encoding (`%252e%252e`, `%252f`): refuse what a second decoding would turn
    // into a dot segment or a separator, whichever upstream might decode twice.
    // (A literal '%' that is no escape after one decoding is fine: nothing more to decode.)
    if once.contains('%')
        && let Ok(twice) = percent_decode(&once)
    {
        check_decoded(&twice)?;
    }
    Ok(())
}

fn check_decoded(segment: &str) -> Result<(), Refusal> {
    if segment.contains(['/', '\\']) {
        return Err("the path contains an encoded slash or backslash");
    }
    if segment.chars().any(char::is_control) {
        return Err("the path contains an encoded control character");
    }
    // `..;jsessionid=x` is `..` to some servers (path parameters).
    let name = segment.split(';').next().unwrap_or("");
    if name == "." || name == ".." {
        return Err("the path contains a '.' or '..' segment");
    }
    Ok(())
}

/// Percent-decodes one segment; malformed escapes and invalid UTF-8 are refused.
fn percent_decode(s: &str) -> Result<String, Refusal> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| (b as char).to_digit(16);
            match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                _ => return Err("the path has a malformed percent escape"),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the path is not valid UTF-8 once decoded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths_pass() {
        for ok in [
            "",
            "users",
            "users/",
            "users/42",
            "a/b/c.json",
            "caf%C3%A9",
            "a%20b",
            "file..txt",
            "...",
            ".hidden",
            "v1.2/x",
            "a;b=c",
            "100%25",
        ] {
            assert_eq!(check_rest(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn escapes_are_refused() {
        for bad in [
            "..",
            "../admin",
            "a/../../etc/passwd",
            "a/..",
            ".",
            "./a",
            "%2e%2e/x",
            "%2E%2E/x",
            ".%2e/x",
            "%2e./x",
            "%2e",
            "a%2f..%2fb",
            "a%2Fb",
            "..%2fx",
            "a%5cb",
            "a%5C..%5Cb",
            "a\\..\\b",
            "..\\x",
            "%252e%252e/x",
            "%252f",
            "..;/x",
            "..;jsessionid=1/x",
            "/etc/passwd",
            "a//b",
            "//evil.example/x",
            "a%00b",
            "a%0d%0ab",
            "%zz",
            "a%2",
            "%c0%ae%c0%ae/x",
            "%ff",
        ] {
            assert!(check_rest(bad).is_err(), "{bad} was accepted");
        }
    }
}
