//! One module per subcommand; `main.rs` only parses arguments and calls these.

pub mod build;
pub mod extract;
pub mod flatten;
pub mod progress;
pub mod squash;

use std::io::IsTerminal;
use std::path::Path;
use strata::compression::Compression;
use strata::sink::Format;

/// No output given and stdout a terminal: a tar there helps nobody.
pub fn refuse_terminal(output: Option<&Path>) -> strata::Result<()> {
    if output.is_none() && std::io::stdout().is_terminal() {
        return Err(strata::Error::Usage(
            "refusing to write a tar to a terminal; use -o FILE (or -o - to insist)".into(),
        ));
    }
    Ok(())
}

/// `--compress`: the library's [`Compression`] as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompressArg {
    None,
    Gzip,
    Zstd,
    Xz,
    Bzip2,
}

impl From<CompressArg> for Compression {
    fn from(c: CompressArg) -> Compression {
        match c {
            CompressArg::None => Compression::None,
            CompressArg::Gzip => Compression::Gzip,
            CompressArg::Zstd => Compression::Zstd,
            CompressArg::Xz => Compression::Xz,
            CompressArg::Bzip2 => Compression::Bzip2,
        }
    }
}

/// `--format`: the library's [`Format`] as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// What `docker save` writes and `docker load` reads (a tar).
    DockerArchive,
    /// An OCI image layout directory.
    Oci,
    /// An OCI image layout in a tar.
    OciArchive,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::DockerArchive => Format::DockerArchive,
            FormatArg::Oci => Format::Oci,
            FormatArg::OciArchive => Format::OciArchive,
        }
    }
}
