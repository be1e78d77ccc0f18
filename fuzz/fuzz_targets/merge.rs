#![no_main]
//! The merge of fuzzed layers (whiteouts, opaque markers, hardlinks, type changes): an
//! error or a tar that strata's own reader reads back to its end — never a panic or a hang.
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let img = common::image(&common::layers(data));
    let mut out = Vec::new();
    if strata::merge::flatten(&img.layers, &mut out, &Default::default()).is_ok() {
        let mut r = strata::tarstream::TarReader::new(&out[..]);
        loop {
            match r.next_entry() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("strata wrote a tar it cannot read: {e}"),
            }
        }
    }
});
