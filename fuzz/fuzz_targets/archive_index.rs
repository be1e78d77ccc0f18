#![no_main]
//! The outer-archive index, then the docker-archive and OCI-archive readers on top of it:
//! manifest.json, repositories, index.json, configs — whatever the bytes are.
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(index) = strata::image::archive::ArchiveIndex::from_file(common::memfile(data), "fuzz".into()) else {
        return;
    };
    if index.contains("index.json") {
        let _ = strata::image::oci_layout::open_index(&index, None, &Default::default(), "fuzz");
    }
    let _ = strata::image::docker_archive::open_index(index, None, "fuzz");
});
