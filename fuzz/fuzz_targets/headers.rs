//! The table contract's `headers` column on any text: a JSON object of strings gives headers,
//! anything else a reason; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match txoutbox_core::headers_from_json(Some(text)) {
            Ok(headers) => {
                let mut names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
                names.sort_unstable();
                names.dedup();
                assert_eq!(names.len(), headers.len(), "one value per name");
            }
            Err(reason) => assert!(!reason.is_empty()),
        }
    }
});
