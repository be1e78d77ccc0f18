#![no_main]
//! The raw tar reader: any bytes give entries or an error, never a panic, a hang or a
//! runaway allocation.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = strata::tarstream::TarReader::new(data);
    let mut n = 0;
    while let Ok(Some(h)) = r.next_entry() {
        let _ = (h.mode(), h.uid(), h.gid(), h.mtime(), h.pax_records().len());
        if r.copy_data(&mut std::io::sink()).is_err() {
            break;
        }
        n += 1;
        if n > 100_000 {
            break;
        }
    }
    let _ = r.drain();
});
