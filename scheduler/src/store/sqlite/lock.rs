//! One process at a time per store file: [`StoreLock`] holds an exclusive `flock` on a file
//! beside the database (`<db>.lock`) for as long as the store is open, so a second `taskfleet
//! run --db` or scheduler on the same file refuses at once, naming the process that holds it,
//! instead of running the same workflows a second time. The kernel releases the lock when the
//! holder exits, however it exits, so a killed run never leaves a stale lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::store::StoreError;

/// How long opening waits for a lock held by this same process (a store being closed while
/// it finishes its last writes); another process's lock is refused at once.
const SAME_PROCESS_WAIT: Duration = Duration::from_secs(2);

/// The lock on one store file, released when dropped.
#[derive(Debug)]
pub(super) struct StoreLock {
    _file: Flock<File>,
}

/// The lock file of the database at `db`.
pub(super) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    db.with_file_name(name)
}

impl StoreLock {
    /// Takes the lock of the database at `db`, or says who holds it.
    pub(super) fn acquire(db: &Path) -> Result<StoreLock, StoreError> {
        let path = lock_path(db);
        let deadline = Instant::now() + SAME_PROCESS_WAIT;
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|error| StoreError::Unavailable {
                    reason: format!("cannot open the lock file {}: {error}", path.display()),
                })?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(mut file) => {
                    // Who holds it, for the next one to be told.
                    let holder = format!("{} ({})", std::process::id(), command_line());
                    let written = file
                        .set_len(0)
                        .and_then(|()| file.seek(SeekFrom::Start(0)))
                        .and_then(|_| file.write_all(holder.as_bytes()));
                    if let Err(error) = written {
                        return Err(StoreError::Unavailable {
                            reason: format!("cannot write the lock file {}: {error}", path.display()),
                        });
                    }
                    return Ok(StoreLock { _file: file });
                }
                Err((mut file, Errno::EWOULDBLOCK)) => {
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    let holder = holder.trim().to_string();
                    let ours = holder
                        .split_whitespace()
                        .next()
                        .is_some_and(|pid| pid == std::process::id().to_string());
                    if ours && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    return Err(StoreError::InUse {
                        reason: format!(
                            "the store {} is in use by process {} (taskfleet allows one process per store: stop it, or use another store)",
                            db.display(),
                            if holder.is_empty() { "unknown".to_string() } else { holder }
                        ),
                    });
                }
                Err((_, errno)) => {
                    return Err(StoreError::Unavailable {
                        reason: format!("cannot lock {}: {errno}", path.display()),
                    })
                }
            }
        }
    }
}

/// This process's command line, short.
fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(program) = args.first_mut() {
        if let Some(name) = Path::new(program.as_str()).file_name() {
            *program = name.to_string_lossy().into_owned();
        }
    }
    let line = args.join(" ");
    let mut end = line.len().min(200);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}
