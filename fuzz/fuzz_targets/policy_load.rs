//! Policy files: any text -> a checked policy, or problems that each name the file, a line
//! within it and a message; never a panic. Files in one input are separated by NUL bytes.
#![no_main]

use burstgate::policy::load_files;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The loader reads files as UTF-8; other bytes never reach it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files: Vec<(String, String)> = text
        .split('\0')
        .take(4)
        .enumerate()
        .map(|(i, t)| (format!("{i}.yaml"), t.to_string()))
        .collect();
    let Err(err) = load_files(&files) else {
        return;
    };
    assert!(!err.problems().is_empty(), "an error without problems");
    for p in err.problems() {
        let Some((_, text)) = files.iter().find(|(name, _)| *name == p.file) else {
            panic!("a problem names no given file: {p}");
        };
        if let Some(line) = p.line {
            // YAML breaks lines at CR LF, LF and a lone CR alike.
            let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count();
            assert!((1..=lines).contains(&line), "line {line} of {lines}: {p}");
        }
        assert!(!p.message.is_empty(), "a problem without a message: {p}");
    }
});
