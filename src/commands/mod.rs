//! One module per subcommand; `main.rs` only parses arguments and calls these.

pub mod build;
pub mod extract;
pub mod flatten;
pub mod inspect;
pub mod squash;
