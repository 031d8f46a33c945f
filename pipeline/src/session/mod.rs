//! Sessions: each dictation or recording is a directory under `<data dir>/sessions/`, named
//! from its start time and readable by the user only, holding `audio.wav` (kept playable while
//! it is written), `transcript.jsonl` (one line per final segment, appended as it is made),
//! `session.json` (what produced it and whether it finished), `attachments/` and `letters/`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::datadir::DataDir;
use crate::error::{PipelineError, Result};
use crate::output::{private_file_options, write_private_atomically};

mod work;

pub use crate::timestamp::now_rfc3339;
pub use work::{Export, SessionStatus};

/// The audio file of a session.
pub const AUDIO_FILE: &str = "audio.wav";
/// The transcript file of a session.
pub const TRANSCRIPT_FILE: &str = "transcript.jsonl";
/// The description file of a session.
pub const META_FILE: &str = "session.json";

/// One final segment of a session's transcript: times from the start of the session's audio,
/// `text` as shown (possibly corrected by the user), `raw_text` as the model wrote it. One line
/// of `transcript.jsonl`.
pub use medscribe_asr::Segment as TranscriptLine;

/// Whether a session is still being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Capture is running (or the process died while it was: see [`Session::is_interrupted`]).
    Recording,
    /// Capture ended and every segment was transcribed.
    Complete,
}

/// What `session.json` says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionMeta {
    /// The directory name.
    pub id: String,
    /// `dictation` (the TUI) or `recording` (`medscribe record`).
    pub kind: String,
    /// Start time, RFC 3339 UTC.
    pub created: String,
    /// The audio source (device or file name).
    pub source: String,
    /// Rate of `audio.wav`.
    pub sample_rate: u32,
    /// Channels of `audio.wav`.
    pub channels: u16,
    /// The speech model.
    pub asr_model: String,
    /// Recording or complete.
    pub state: SessionState,
    /// The process writing it while it records.
    pub pid: u32,
    /// Seconds of audio transcribed so far.
    pub transcribed_s: f64,
    /// Speakers to tell apart once the recording ends (`auto` or how many): kept so that
    /// `sessions recover` labels an interrupted recording as the finished one would have been.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speakers: Option<String>,
    /// Names the user gave speakers, by label (`S1` -> `Dr Patel`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub speaker_names: std::collections::BTreeMap<String, String>,
}

/// `session.lock`: held (flock) by the process recording a session for as long as it records,
/// and by `sessions recover` while it repairs one. The kernel drops the lock when its process
/// dies, however it dies, so a lock that can be taken means nobody is recording.
const LOCK_FILE: &str = "session.lock";

/// Proof that this process holds a session's lock; dropping it releases the lock.
#[derive(Debug)]
pub struct SessionLock {
    _file: std::fs::File,
}

/// Takes `session.lock` in `dir` exclusively; `Ok(None)` when another process holds it.
fn try_lock(dir: &Path) -> std::io::Result<Option<SessionLock>> {
    let file = private_file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?;
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !taken {
            let error = std::io::Error::last_os_error();
            return if error.kind() == std::io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(error)
            };
        }
    }
    Ok(Some(SessionLock { _file: file }))
}

#[cfg(target_os = "linux")]
fn process_is_medscribe(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
        .is_some_and(|name| name.starts_with("medscribe"))
}

#[cfg(not(target_os = "linux"))]
fn process_is_medscribe(pid: u32) -> bool {
    pid == std::process::id()
}

/// A session directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    dir: PathBuf,
}

pub(crate) fn session_error(path: &Path, reason: impl Into<String>) -> PipelineError {
    PipelineError::Session {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// A time as `HH:MM:SS` (recording lengths and segment starts).
pub fn clock(seconds: f64) -> String {
    let whole = seconds.max(0.0) as u64;
    format!(
        "{:02}:{:02}:{:02}",
        whole / 3600,
        whole / 60 % 60,
        whole % 60
    )
}

/// Where sessions live.
pub fn sessions_dir(data: &DataDir) -> PathBuf {
    data.root().join("sessions")
}

impl Session {
    /// Creates a new, empty session directory named from `created` (RFC 3339 UTC), with a
    /// suffix when that name is taken.
    pub fn create(data: &DataDir, created: &str) -> Result<Self> {
        let root = sessions_dir(data);
        crate::output::own_private_dir(&root).map_err(|e| session_error(&root, e.to_string()))?;
        let base: String = created
            .chars()
            .map(|c| if c == ':' { '-' } else { c })
            .collect();
        for attempt in 1..1000 {
            let name = if attempt == 1 {
                base.clone()
            } else {
                format!("{base}-{attempt}")
            };
            let dir = root.join(&name);
            match create_private_dir(&dir) {
                Ok(()) => {
                    for sub in ["attachments", "letters"] {
                        create_private_dir(&dir.join(sub))
                            .map_err(|e| session_error(&dir, e.to_string()))?;
                    }
                    return Ok(Self { dir });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(session_error(&dir, e.to_string())),
            }
        }
        Err(session_error(&root, "cannot find a free session name"))
    }

    /// An existing session directory.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.join(META_FILE).is_file() {
            return Err(session_error(
                dir,
                "not a medscribe session (no session.json)",
            ));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Takes the session's lock for recording or repairing it; an error saying so when another
    /// process is recording it (or repairing it) now.
    pub fn lock(&self) -> Result<SessionLock> {
        match try_lock(&self.dir) {
            Ok(Some(lock)) => Ok(lock),
            Ok(None) => Err(session_error(
                &self.dir,
                "is being recorded (or recovered) by another medscribe process now; stop it first",
            )),
            Err(e) => Err(session_error(
                &self.dir,
                format!("cannot take its lock file: {e}"),
            )),
        }
    }

    /// Whether a process is recording this session now: its lock is held. Sessions recorded
    /// before locks existed are judged by their process id.
    pub fn is_being_recorded(&self, meta: &SessionMeta) -> bool {
        if !self.dir.join(LOCK_FILE).exists() {
            return process_is_medscribe(meta.pid);
        }
        // Taking it succeeds only when nobody holds it; dropping it at once releases it again.
        !matches!(try_lock(&self.dir), Ok(Some(_)))
    }

    /// Whether the session says it is recording but nobody is (a crash, a kill, a power cut):
    /// `sessions recover` finishes such sessions.
    pub fn is_interrupted(&self, meta: &SessionMeta) -> bool {
        meta.state == SessionState::Recording && !self.is_being_recorded(meta)
    }

    /// Copies the PNG or JPEG image at `path` into `attachments/` (mode 0600, a new name if
    /// taken) and returns where it went. Only a regular file of at most 64 MB is read: a FIFO,
    /// a device or a link to one is refused at once instead of blocking or reading forever.
    pub fn attach(&self, path: &Path) -> Result<PathBuf> {
        const MAX_ATTACHMENT_BYTES: u64 = 64 << 20;
        let bad = |reason: String| session_error(path, reason);
        let bytes = crate::output::read_regular_file(path, MAX_ATTACHMENT_BYTES)
            .map_err(|e| bad(format!("cannot attach: {e}")))?;
        let is_image =
            bytes.starts_with(b"\x89PNG\r\n\x1a\n") || bytes.starts_with(&[0xFF, 0xD8, 0xFF]);
        if !is_image {
            return Err(bad("not a PNG or JPEG image".into()));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .unwrap_or_else(|| "image".into());
        let dir = self.attachments_dir();
        let mut target = dir.join(&name);
        let mut n = 2;
        while target.exists() {
            target = dir.join(format!("{n}-{name}"));
            n += 1;
        }
        write_private_atomically(&target, &bytes)?;
        Ok(target)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory name.
    pub fn id(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// `audio.wav`.
    pub fn audio_path(&self) -> PathBuf {
        self.dir.join(AUDIO_FILE)
    }

    /// `transcript.jsonl`.
    pub fn transcript_path(&self) -> PathBuf {
        self.dir.join(TRANSCRIPT_FILE)
    }

    /// Attached images.
    pub fn attachments_dir(&self) -> PathBuf {
        self.dir.join("attachments")
    }

    /// Letters written from this session.
    pub fn letters_dir(&self) -> PathBuf {
        self.dir.join("letters")
    }

    /// Where segments wait on disk while the speech model is behind.
    pub fn queue_dir(&self) -> PathBuf {
        self.dir.join("queue")
    }

    /// Reads `session.json`.
    pub fn meta(&self) -> Result<SessionMeta> {
        let path = self.dir.join(META_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| session_error(&path, format!("cannot read: {e}")))?;
        serde_json::from_str(&text)
            .map_err(|e| session_error(&path, format!("malformed session file: {e}")))
    }

    /// Writes `session.json` (atomically).
    pub fn write_meta(&self, meta: &SessionMeta) -> Result<()> {
        let text = serde_json::to_string_pretty(meta)
            .map_err(|e| session_error(&self.dir, e.to_string()))?;
        write_private_atomically(&self.dir.join(META_FILE), text.as_bytes())
    }

    /// Appends one final segment to `transcript.jsonl` and forces it to disk.
    pub fn append_transcript(&self, line: &TranscriptLine) -> Result<()> {
        let path = self.transcript_path();
        let mut text =
            serde_json::to_string(line).map_err(|e| session_error(&path, e.to_string()))?;
        text.push('\n');
        private_file_options()
            .append(true)
            .create(true)
            .open(&path)
            .and_then(|mut file| {
                file.write_all(text.as_bytes())?;
                file.sync_data()
            })
            .map_err(|source| PipelineError::Output { path, source })
    }

    /// Replaces the whole transcript (after the user edited it), atomically.
    pub fn write_transcript(&self, lines: &[TranscriptLine]) -> Result<()> {
        let mut text = String::new();
        for line in lines {
            let json = serde_json::to_string(line)
                .map_err(|e| session_error(&self.transcript_path(), e.to_string()))?;
            text.push_str(&json);
            text.push('\n');
        }
        write_private_atomically(&self.transcript_path(), text.as_bytes())
    }

    /// Reads the transcript. A torn last line (the process died while writing it) is skipped;
    /// a malformed line elsewhere is an error naming its number.
    pub fn transcript(&self) -> Result<Vec<TranscriptLine>> {
        let path = self.transcript_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(session_error(&path, format!("cannot read: {e}"))),
        };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut out = Vec::with_capacity(lines.len());
        for (index, line) in lines.iter().enumerate() {
            match serde_json::from_str(line) {
                Ok(parsed) => out.push(parsed),
                Err(_) if index + 1 == lines.len() && !text.ends_with('\n') => break,
                Err(e) => {
                    return Err(session_error(
                        &path,
                        format!("line {} is malformed: {e}", index + 1),
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// Every session under the data directory, oldest first, with what its `session.json` says
/// (or why it cannot be read).
pub fn list_sessions(data: &DataDir) -> Result<Vec<(Session, Result<SessionMeta>)>> {
    let root = sessions_dir(data);
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(session_error(&root, format!("cannot read: {e}"))),
    };
    // Only real directories of this user count: a link or another user's directory planted in
    // a sessions folder must never become `latest` and have its text exported as ours.
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .metadata()
                .is_ok_and(|m| m.is_dir() && crate::output::owned_by_me(&m))
        })
        .map(|entry| entry.path())
        .collect();
    dirs.sort();
    Ok(dirs
        .into_iter()
        .map(|dir| {
            let session = Session { dir };
            let meta = session.meta();
            (session, meta)
        })
        .collect())
}

/// Finds a session by directory name, unique prefix of it, `latest`, or path.
pub fn find_session(data: &DataDir, wanted: &str) -> Result<Session> {
    let as_path = Path::new(wanted);
    if as_path.join(META_FILE).is_file() {
        return Session::open(as_path);
    }
    let sessions = list_sessions(data)?;
    if wanted == "latest" {
        return sessions
            .into_iter()
            .last()
            .map(|(session, _)| session)
            .ok_or_else(|| session_error(&sessions_dir(data), "there are no sessions yet"));
    }
    let mut matching: Vec<Session> = sessions
        .into_iter()
        .map(|(session, _)| session)
        .filter(|session| session.id().starts_with(wanted))
        .collect();
    // A whole name is that session, even when others extend it (`A` and `A-2`).
    if let Some(exact) = matching.iter().position(|s| s.id() == wanted) {
        return Ok(matching.swap_remove(exact));
    }
    match matching.len() {
        1 => Ok(matching
            .into_iter()
            .next()
            .ok_or_else(|| session_error(&sessions_dir(data), format!("no session {wanted:?}")))?),
        0 => Err(session_error(
            &sessions_dir(data),
            format!("no session {wanted:?} (medscribe sessions list shows them)"),
        )),
        n => Err(session_error(
            &sessions_dir(data),
            format!("{n} sessions start with {wanted:?}; give more of the name"),
        )),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::fs::OpenOptions;

    pub(crate) fn line(start_s: f64, text: &str) -> TranscriptLine {
        TranscriptLine {
            speaker: None,
            start_s,
            end_s: start_s + 1.0,
            text: text.into(),
            raw_text: text.into(),
        }
    }

    #[test]
    fn sessions_are_private_unique_and_found_by_prefix() {
        let root = tempfile::tempdir().unwrap();
        let data = DataDir::at(root.path());
        let a = Session::create(&data, "2026-11-23T10:00:00Z").unwrap();
        let b = Session::create(&data, "2026-11-23T10:00:00Z").unwrap();
        assert_eq!(a.id(), "2026-11-23T10-00-00Z");
        assert_eq!(b.id(), "2026-11-23T10-00-00Z-2");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(a.dir()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        let mut meta = recording(&a, std::process::id());
        a.write_meta(&meta).unwrap();
        meta.id = b.id();
        b.write_meta(&meta).unwrap();
        assert!(
            !a.is_interrupted(&a.meta().unwrap()),
            "this process is alive"
        );
        assert!(find_session(&data, "2026-11-23T10-00-00Z-2").is_ok());
        let ambiguous = find_session(&data, "2026").unwrap_err().to_string();
        assert!(ambiguous.contains("2 sessions"), "{ambiguous}");
        assert_eq!(find_session(&data, "latest").unwrap(), b);
        assert!(find_session(&data, "1999").is_err());
        // A whole name selects that session even though another extends it (`A` and `A-2`).
        assert_eq!(find_session(&data, &a.id()).unwrap(), a);
    }

    /// What a finished session says of itself.
    pub(crate) fn complete_meta(session: &Session) -> SessionMeta {
        SessionMeta {
            state: SessionState::Complete,
            ..recording(session, 0)
        }
    }

    /// What a session being recorded by process `pid` says of itself.
    fn recording(session: &Session, pid: u32) -> SessionMeta {
        SessionMeta {
            id: session.id(),
            kind: "recording".into(),
            created: "2026-11-23T10:00:00Z".into(),
            source: "test".into(),
            sample_rate: 16_000,
            channels: 1,
            asr_model: "m".into(),
            state: SessionState::Recording,
            pid,
            transcribed_s: 0.0,
            speakers: None,
            speaker_names: Default::default(),
        }
    }

    #[test]
    fn liveness_is_the_recorders_lock_not_the_name_of_a_process() {
        let root = tempfile::tempdir().unwrap();
        let data = DataDir::at(root.path());
        let session = Session::create(&data, "2026-11-23T10:00:00Z").unwrap();
        // A live process that is not called medscribe: a renamed binary.
        let meta = recording(&session, 1);
        session.write_meta(&meta).unwrap();
        let lock = session.lock().unwrap();
        assert!(session.is_being_recorded(&meta));
        assert!(
            !session.is_interrupted(&meta),
            "the recorder holds its lock"
        );
        assert!(session.lock().is_err(), "one holder at a time");
        drop(lock);
        assert!(
            session.is_interrupted(&meta),
            "the lock was released: nobody records"
        );
        // Still free after the check.
        drop(session.lock().unwrap());
    }

    #[test]
    #[cfg(unix)]
    fn attaching_a_fifo_or_a_device_fails_at_once_and_an_image_is_copied_privately() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let session = Session::create(&DataDir::at(root.path()), "2026-11-23T10:00:00Z").unwrap();
        let fifo = root.path().join("scan.png");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        let err = session.attach(&fifo).unwrap_err().to_string();
        assert!(err.contains("regular file"), "{err}");
        let zero = root.path().join("zero.png");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(session.attach(&zero).is_err());
        assert!(started.elapsed().as_secs() < 5, "nothing blocked");
        let text = root.path().join("notes.png");
        std::fs::write(&text, "not an image").unwrap();
        assert!(session
            .attach(&text)
            .unwrap_err()
            .to_string()
            .contains("PNG or JPEG"));
        let image = root.path().join("xray.png");
        std::fs::write(&image, b"\x89PNG\r\n\x1a\nrest").unwrap();
        let first = session.attach(&image).unwrap();
        let second = session.attach(&image).unwrap();
        assert_ne!(first, second);
        assert_eq!(
            std::fs::metadata(&first).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    #[cfg(unix)]
    fn links_planted_in_the_sessions_folder_are_not_sessions() {
        let root = tempfile::tempdir().unwrap();
        let data = DataDir::at(root.path());
        let own = Session::create(&data, "2026-11-23T10:00:00Z").unwrap();
        // A forged session elsewhere, linked in under a name that sorts last.
        let forged = root.path().join("forged");
        std::fs::create_dir_all(&forged).unwrap();
        std::fs::write(forged.join(META_FILE), "{}").unwrap();
        std::os::unix::fs::symlink(&forged, sessions_dir(&data).join("9999-forged")).unwrap();
        let sessions = list_sessions(&data).unwrap();
        assert_eq!(sessions.len(), 1);
        assert_eq!(find_session(&data, "latest").unwrap(), own);
    }

    #[test]
    fn transcript_survives_a_torn_last_line_but_not_corruption() {
        let root = tempfile::tempdir().unwrap();
        let data = DataDir::at(root.path());
        let session = Session::create(&data, "2026-11-23T11:00:00Z").unwrap();
        assert!(session.transcript().unwrap().is_empty());
        session.append_transcript(&line(0.0, "one")).unwrap();
        session.append_transcript(&line(1.0, "two")).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(session.transcript_path())
            .unwrap();
        file.write_all(b"{\"start_s\": 2.0, \"te").unwrap();
        let lines = session.transcript().unwrap();
        assert_eq!(lines, vec![line(0.0, "one"), line(1.0, "two")]);
        std::fs::write(session.transcript_path(), "garbage\n{}\n").unwrap();
        let error = session.transcript().unwrap_err().to_string();
        assert!(
            error.contains("transcript.jsonl") && error.contains("line 1"),
            "{error}"
        );
        session.write_transcript(&[line(5.0, "edited")]).unwrap();
        assert_eq!(session.transcript().unwrap(), vec![line(5.0, "edited")]);
    }
}
