#![no_main]
//! What a Docker engine answers over its socket: the status line and headers (httparse), a
//! chunked or sized body (strata's own chunk decoder), and `docker load`'s message stream.
//! No panic, no unbounded read; and a body that strata chunks itself decodes back to itself.
use libfuzzer_sys::fuzz_target;
use strata::image::docker_daemon::{load_stream_error, read_answer};

const CAP: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    // As the daemon's answer, whole.
    let _ = read_answer(data.to_vec(), CAP);
    let _ = load_stream_error(&String::from_utf8_lossy(data));
    // As a body: cut into chunks whose sizes come from the bytes themselves, in hex of
    // either case, some with extensions — it must come back as it went.
    let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut rest = data;
    let mut i = 0usize;
    while !rest.is_empty() {
        let n = (rest[0] as usize % 7 + 1).min(rest.len());
        let size = if i % 2 == 0 {
            format!("{n:x}")
        } else {
            format!("{n:X};ext=1")
        };
        answer.extend_from_slice(size.as_bytes());
        answer.extend_from_slice(b"\r\n");
        answer.extend_from_slice(&rest[..n]);
        answer.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    answer.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = read_answer(answer, CAP).expect("a well-formed chunked answer reads");
    assert_eq!(status, 200);
    assert_eq!(body, data, "the chunked body decodes to what was chunked");
});
