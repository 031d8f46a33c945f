//! Opening files a user names (models, images, templates) as regular files only: a FIFO would
//! block the open forever and a device such as `/dev/zero` never ends, so both are refused before
//! a byte is read, and reads are bounded.

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Opens `path` for reading if it is a regular file (symlinks to regular files are fine). The
/// open itself cannot block: it is non-blocking until the file is known to be regular.
pub fn open_regular(path: &Path) -> std::io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Reads a whole regular file of at most `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} MB is more than the {} MB allowed",
                len >> 20,
                limit >> 20
            ),
        ));
    }
    // The file may grow between the size check and the read; never read past the limit.
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("grew past the {} MB allowed while being read", limit >> 20),
        ));
    }
    Ok(bytes)
}

/// Reads a whole regular UTF-8 text file of at most `limit` bytes.
pub fn read_text_bounded(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_bounded(path, limit)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// A message on one line: decoders and the OS put newlines in theirs, and every error medscribe
/// prints is one line naming the file.
pub fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fifos_and_directories_are_refused_without_blocking() {
        let dir = tempdir();
        assert!(open_regular(Path::new("/dev/zero")).is_err());
        assert!(open_regular(&dir).is_err());
        #[cfg(unix)]
        {
            let fifo = dir.join("fifo.png");
            let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
            let err = open_regular(&fifo).unwrap_err();
            assert!(err.to_string().contains("regular"), "{err}");
            let link = dir.join("zero.png");
            std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
            assert!(read_bounded(&link, 1 << 20).is_err());
        }
        let file = dir.join("a.txt");
        std::fs::write(&file, "hello").unwrap();
        assert_eq!(read_text_bounded(&file, 5).unwrap(), "hello");
        assert!(read_bounded(&file, 4).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "medscribe-files-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
