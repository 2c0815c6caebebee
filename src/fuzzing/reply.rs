//! Cloud replies as fuzz input, in an HTTP-like text form that seeds are easy to write in and
//! mutations mostly keep: a first line `<status> [<operation>]`, header lines `name: value`, an
//! empty line, then the body bytes.

/// One reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<'a> {
    /// HTTP status (200 when the first line has no number).
    pub status: u16,
    /// The word after the status, naming which call this answers (empty when absent).
    pub operation: &'a str,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: &'a [u8],
}

/// Splits `data` into a reply; anything after the first empty line (or everything, without
/// one) is the body.
pub fn parse(data: &[u8]) -> Reply<'_> {
    let (head, body) = match find(data, b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (&data[..0], data),
    };
    let head = std::str::from_utf8(head).unwrap_or_default();
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default();
    let mut words = first.split_whitespace();
    let status = words.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let operation = words.next().unwrap_or_default();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Reply {
        status,
        operation,
        headers,
        body,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_status_operation_headers_and_body() {
        let r = parse(b"429 RunTask\nRetry-After: 3\n\n{\"a\":1}");
        assert_eq!(r.status, 429);
        assert_eq!(r.operation, "RunTask");
        assert_eq!(r.headers, vec![("retry-after".into(), "3".into())]);
        assert_eq!(r.body, b"{\"a\":1}");
    }

    #[test]
    fn bytes_without_an_empty_line_are_a_200_body() {
        let r = parse(b"{}");
        assert_eq!((r.status, r.body), (200, &b"{}"[..]));
    }
}
