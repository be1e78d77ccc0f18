#![no_main]
//! Squash of fuzzed layers (the top ones onto the kept lower ones) to a docker-archive in
//! memory: an error or an archive strata reads back, never a panic. The stream (its layer's
//! size planned from the headers) and a seekable output (its header patched) must agree:
//! both fail, or both give the same bytes.
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let layers = common::layers(data);
    let from = usize::from(data.first().copied().unwrap_or(0)) % layers.len();
    let img = common::image(&layers);
    let target = strata::sink::Target {
        format: strata::sink::Format::DockerArchive,
        path: None,
        force: false,
        compression: strata::compression::Compression::None,
        level: None,
        measure_first: false,
        protect: &[],
        registry: &Default::default(),
    };
    let opts = strata::squash::SquashOptions {
        from,
        created: Some("2020-01-01T00:00:00Z".into()),
        verify: false,
        progress: None,
        cancel: Default::default(),
    };
    let mut out = Vec::new();
    let streamed = strata::sink::write_image_to(&target, &mut out, |w| strata::squash::squash(&img, &opts, w, &[]));
    let mut file = std::io::Cursor::new(Vec::new());
    let seeked = {
        let mut members = strata::sink::members::TarMembers::seekable(&mut file).expect("a cursor seeks");
        let mut w = strata::sink::docker_archive::DockerArchive::new(&mut members);
        strata::squash::squash(&img, &opts, &mut w, &[])
    };
    assert_eq!(streamed.is_ok(), seeked.is_ok(), "stream {:?} vs file {:?}", streamed.as_ref().err(), seeked.as_ref().err());
    if streamed.is_ok() {
        assert!(out == file.into_inner(), "the planned stream differs from the patched file");
        let index = strata::image::archive::ArchiveIndex::from_file(common::memfile(&out), "squashed".into())
            .expect("strata wrote an archive it cannot index");
        strata::image::docker_archive::open_index(index, None, "squashed")
            .expect("strata wrote an image it cannot open");
    }
});
