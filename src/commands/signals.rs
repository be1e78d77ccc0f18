//! SIGINT, SIGTERM and SIGHUP end a command cleanly: the first trips the command's
//! [`Cancel`] handle, so the library unwinds and removes what it had half written (a temp file
//! or directory); the process then exits with 128 + the signal. A second signal, or an
//! operation that does not end within a few seconds, exits at once.

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;
use strata::control::Cancel;

static CANCEL: OnceLock<Cancel> = OnceLock::new();
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// How long a cancelled operation may take to unwind before the process exits regardless.
const GRACE: Duration = Duration::from_secs(5);

/// The handle every command's library calls get.
pub fn cancel() -> Cancel {
    CANCEL.get_or_init(Cancel::new).clone()
}

/// The signal that cancelled the command, if one did.
pub fn received() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Watch for the signals on a thread of their own (no work is done in a signal handler).
pub fn install() {
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        tracing::warn!("cannot watch for signals: an interrupted run may leave a temp file");
        return;
    };
    let cancel = cancel();
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if SIGNAL.swap(sig, Ordering::SeqCst) != 0 {
                    std::process::exit(128 + sig);
                }
                cancel.cancel();
                let _ = std::thread::Builder::new()
                    .name("signal-grace".into())
                    .spawn(move || {
                        std::thread::sleep(GRACE);
                        std::process::exit(128 + sig);
                    });
            }
        });
}
