//! SPDY/3 header blocks: name/value pairs with 32-bit lengths, compressed with zlib primed by
//! the protocol's dictionary, one compression context per direction for the whole session
//! (each block ends with a sync flush).

use std::sync::LazyLock;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::Error;

/// The SPDY/3 header dictionary (draft 3, section 2.6.10.1): the common header names and words
/// each with a 32-bit length, then common values without. 1423 bytes, Adler-32 `0xe3c6a7c2`,
/// which is the DICTID kubectl's first header block names.
pub static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const VALUES: &[&str] = &[
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivate",
        "max-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    ];
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    VALUES
        .iter()
        .for_each(|v| d.extend_from_slice(v.as_bytes()));
    d
});

/// A decoded header block: lower-case names, each with its values (NUL-separated on the wire).
pub type Headers = Vec<(String, Vec<String>)>;

/// The two compression contexts of a session.
pub struct HeaderCodec {
    inflate: Decompress,
    deflate: Compress,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(&DICTIONARY)
            .expect("a fresh deflate stream takes a dictionary");
        HeaderCodec {
            inflate: Decompress::new(true),
            deflate,
        }
    }
}

impl HeaderCodec {
    /// Inflates and parses the next header block the peer sent.
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, Error> {
        let mut raw = Vec::with_capacity(block.len() * 4 + 64);
        let start = self.inflate.total_in();
        loop {
            let consumed = (self.inflate.total_in() - start) as usize;
            if raw.len() == raw.capacity() {
                raw.reserve(raw.capacity().max(256));
            }
            match self
                .inflate
                .decompress_vec(&block[consumed..], &mut raw, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| Error::Headers(format!("dictionary: {e}")))?;
                }
                Err(e) => return Err(Error::Headers(format!("inflating: {e}"))),
            }
            let done = (self.inflate.total_in() - start) as usize == block.len();
            if done && raw.len() < raw.capacity() {
                break;
            }
        }
        parse(&raw)
    }

    /// Compresses `headers` into the next header block this side sends.
    pub fn encode(&mut self, headers: &[(&str, &str)]) -> Result<Vec<u8>, Error> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (name, value) in headers {
            for part in [name.to_ascii_lowercase().as_str(), value] {
                raw.extend_from_slice(&(part.len() as u32).to_be_bytes());
                raw.extend_from_slice(part.as_bytes());
            }
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let start = self.deflate.total_in();
        loop {
            let consumed = (self.deflate.total_in() - start) as usize;
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let status = self
                .deflate
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Headers(format!("deflating: {e}")))?;
            let done = (self.deflate.total_in() - start) as usize == raw.len();
            if done && out.len() < out.capacity() && status != Status::BufError {
                return Ok(out);
            }
        }
    }
}

/// Parses an inflated block: a count, then length-prefixed names and values.
fn parse(raw: &[u8]) -> Result<Headers, Error> {
    let count = raw
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Error::Headers("the block ends before its count".into()))?;
    let mut at = 4;
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = String::from_utf8_lossy(next_field(raw, &mut at, "name")?).to_ascii_lowercase();
        let value = String::from_utf8_lossy(next_field(raw, &mut at, "value")?).into_owned();
        headers.push((name, value.split('\0').map(str::to_string).collect()));
    }
    Ok(headers)
}

/// The length-prefixed field at `at`, moving `at` past it.
fn next_field<'a>(raw: &'a [u8], at: &mut usize, what: &str) -> Result<&'a [u8], Error> {
    let n = raw
        .get(*at..*at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| Error::Headers(format!("the block ends before a {what} length")))?;
    let bytes = raw
        .get(*at + 4..*at + 4 + n)
        .ok_or_else(|| Error::Headers(format!("the block ends inside a {what}")))?;
    *at += 4 + n;
    Ok(bytes)
}

/// The first value of `name` in `headers`.
pub fn value<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.first())
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::spdy::frame::{Frame, tests::all};

    #[test]
    fn the_dictionary_is_the_one_kubectl_primes_its_headers_with() {
        assert_eq!(DICTIONARY.len(), 1423);
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(c.set_dictionary(&DICTIONARY).unwrap(), 0xe3c6_a7c2);
    }

    #[test]
    fn the_stream_types_kubectl_opens_inflate_from_its_captured_header_blocks() {
        let frames = all(include_bytes!("testdata/kubectl-1.37.1-exec-it-sh.bin"));
        let mut codec = HeaderCodec::default();
        let types: Vec<String> = frames
            .iter()
            .filter_map(|f| match f {
                Frame::SynStream { headers, .. } => Some(headers),
                _ => None,
            })
            .map(|block| {
                let h = codec.decode(block).unwrap();
                value(&h, "streamtype").unwrap().to_string()
            })
            .collect();
        assert_eq!(types, vec!["error", "stdin", "stdout", "resize"]);
    }

    #[test]
    fn blocks_this_side_compresses_inflate_in_order_on_the_other_side() {
        let (mut ours, mut peer) = (HeaderCodec::default(), HeaderCodec::default());
        for (name, value) in [("streamtype", "stdout"), ("X-Note", "a\0b")] {
            let block = ours.encode(&[(name, value)]).unwrap();
            let decoded = peer.decode(&block).unwrap();
            assert_eq!(
                decoded,
                vec![(
                    name.to_ascii_lowercase(),
                    value.split('\0').map(str::to_string).collect()
                )]
            );
        }
        assert_eq!(
            ours.encode(&[]).map(|b| peer.decode(&b).unwrap()).unwrap(),
            vec![]
        );
    }

    #[test]
    fn a_truncated_block_is_an_error_not_a_panic() {
        let err = parse(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).unwrap_err();
        assert!(err.to_string().contains("inside a name"), "{err}");
    }
}
