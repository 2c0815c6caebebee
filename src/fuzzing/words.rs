//! Strings the API server would accept where a pod needs them: DNS labels, label values,
//! quantities, paths, and free text where Kubernetes allows any.

use arbitrary::{Arbitrary, Result, Unstructured};

/// A DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Label(pub String);

impl<'a> Arbitrary<'a> for Label {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let len = if u.ratio(1, 16)? {
            u.int_in_range(1..=63)?
        } else {
            u.int_in_range(1..=8)?
        };
        let mut s = String::with_capacity(len);
        for i in 0..len {
            let inner = i > 0 && i + 1 < len;
            let c = if inner && u.ratio(1, 6)? {
                b'-'
            } else {
                *u.choose(ALNUM)?
            };
            s.push(c as char);
        }
        Ok(Label(s))
    }
}

/// Any text: Kubernetes takes any string in annotation values, env values, commands and args.
#[derive(Debug, Clone)]
pub struct Text(pub String);

impl<'a> Arbitrary<'a> for Text {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(1, 4)? {
            return Ok(Text(String::arbitrary(u)?));
        }
        const WORDS: &[&str] = &[
            "",
            "a",
            "$(HOME)",
            "$$(X)",
            "sh",
            "-c",
            "echo hi",
            "[\"/bin/sh\"]",
            "[]",
            "{}",
            "null",
            "|",
            ":",
            "::",
            "=",
            "/",
            "\\",
            "\"",
            "'",
            " ",
            "\n",
            "é",
            "0",
            "-1",
            "true",
        ];
        Ok(Text((*u.choose(WORDS)?).to_string()))
    }
}

/// A Kubernetes quantity the API server parses (`500m`, `1.5Gi`, `2e3`, `128974848`).
#[derive(Debug, Clone)]
pub struct Quantity(pub String);

impl<'a> Arbitrary<'a> for Quantity {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        const SUFFIXES: &[&str] = &[
            "", "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "e3",
            "e-3", "E6", "n", "u",
        ];
        let whole: u64 = if u.ratio(1, 8)? {
            u64::arbitrary(u)?
        } else {
            u.int_in_range(0..=4096)?
        };
        let mut s = whole.to_string();
        if u.ratio(1, 4)? {
            s.push('.');
            s.push_str(&u.int_in_range(0u32..=999)?.to_string());
        }
        s.push_str(u.choose(SUFFIXES)?);
        Ok(Quantity(s))
    }
}

/// An absolute path in a container (`/data`, `/etc/x/y`).
#[derive(Debug, Clone)]
pub struct AbsPath(pub String);

impl<'a> Arbitrary<'a> for AbsPath {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let parts: Vec<Label> = (0..u.int_in_range(1..=3)?)
            .map(|_| Label::arbitrary(u))
            .collect::<Result<_>>()?;
        Ok(AbsPath(format!(
            "/{}",
            parts
                .iter()
                .map(|p| p.0.as_str())
                .collect::<Vec<_>>()
                .join("/")
        )))
    }
}

/// A label value (`[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63, or empty).
#[derive(Debug, Clone)]
pub struct LabelValue(pub String);

impl<'a> Arbitrary<'a> for LabelValue {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        if u.ratio(1, 8)? {
            return Ok(LabelValue(String::new()));
        }
        let Label(mut s) = Label::arbitrary(u)?;
        if s.len() > 2 && u.ratio(1, 4)? {
            let mid = s.len() / 2;
            s.replace_range(mid..=mid, if u.arbitrary()? { "." } else { "_" });
        }
        Ok(LabelValue(s))
    }
}

/// An annotation key: one the gateway or an adapter reads, or any qualified name.
#[derive(Debug, Clone)]
pub struct AnnotationKey(pub String);

impl<'a> Arbitrary<'a> for AnnotationKey {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        const KNOWN: &[&str] = &[
            "burstgate.io/gpu-sku",
            "burstgate.io/max-latency-ms",
            "burstgate.io/objective",
            "burstgate.io/providers",
            "burstgate.io/exit-after",
            "burstgate.io/exit-code",
            "aci.burstgate.io/entrypoint.",
        ];
        let key = if u.arbitrary()? {
            format!("example.com/{}", Label::arbitrary(u)?.0)
        } else {
            (*u.choose(KNOWN)?).to_string()
        };
        Ok(AnnotationKey(key))
    }
}
