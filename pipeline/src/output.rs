//! Output files: written whole or not at all (temporary file + rename), readable by the user only,
//! since they hold patient information.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::datadir::DataDir;
use crate::error::{PipelineError, Result};

/// Keeps an output that could not be written where the user asked (a full or read-only disk):
/// `letters/unsaved-TIME-NAME` in the data directory, mode 0600, where NAME is the wanted file's
/// own name (one path component, never a path). Returns where it went.
pub fn keep_unsaved(data: &DataDir, wanted: &Path, contents: &[u8]) -> Result<PathBuf> {
    let dir = data.root().join("letters");
    let name = format!(
        "unsaved-{}-{}",
        crate::timestamp::now_rfc3339().replace(':', "-"),
        wanted
            .file_name()
            .map_or("letter".into(), |n| n.to_string_lossy().into_owned())
    );
    let kept = dir.join(name);
    create_private_dir_all(&dir).map_err(|source| PipelineError::Output {
        path: dir.clone(),
        source,
    })?;
    write_private_atomically(&kept, contents)?;
    Ok(kept)
}

/// Options for opening a file that is created readable by the user only (mode 0600 on Unix);
/// the caller adds how it is opened.
pub(crate) fn private_file_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}

/// Writes `contents` to `path` atomically with mode 0600: a crash leaves either the old file or
/// the new one, never half of it. The temporary file is created exclusively under a random name
/// in the target directory (a link planted there is never followed), synced, renamed over `path`,
/// and the directory is synced so that the new name survives a power cut too.
pub fn write_private_atomically(path: &Path, contents: &[u8]) -> Result<()> {
    let output_error = |source| PipelineError::Output {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".partial");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    let mut temp = builder.tempfile_in(dir).map_err(output_error)?;
    temp.write_all(contents)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(output_error)?;
    // On failure the temporary file is removed when `temp` drops.
    temp.persist(path).map_err(|e| output_error(e.error))?;
    sync_dir(dir).map_err(output_error)
}

/// Reads a whole regular file of at most `limit` bytes. The open cannot block (a FIFO would wait
/// for a writer forever): it is non-blocking until the file is known to be regular, and devices
/// such as `/dev/zero` are refused rather than read without end.
pub fn read_regular_file(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
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
    if metadata.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} MB", limit >> 20),
        ));
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Makes a rename or a new file in `dir` durable (a no-op where directories cannot be opened).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Creates `path` and any missing parents with mode 0700, whatever the umask (under umask 000 a
/// plain `create_dir_all` makes them 0777, and others can plant files there). Directories that
/// already exist are left as they are: they are the user's.
pub fn create_private_dir_all(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(path)
}

/// Whether a file or directory (its metadata, not followed through a link) belongs to this user.
pub(crate) fn owned_by_me(metadata: &std::fs::Metadata) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: getuid has no preconditions and cannot fail.
        metadata.uid() == unsafe { libc::getuid() }
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        true
    }
}

/// Like [`create_private_dir_all`] for a directory medscribe owns (its sessions): if it already
/// exists open to others (made by an older version under a loose umask), it is closed to them,
/// and one that belongs to another user is refused.
pub fn own_private_dir(path: &Path) -> std::io::Result<()> {
    create_private_dir_all(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let metadata = std::fs::symlink_metadata(path)?;
        if !metadata.is_dir() || !owned_by_me(&metadata) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "is not a directory of this user (a link, or someone else's)",
            ));
        }
        if metadata.mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsaved_outputs_are_kept_privately_under_their_own_name_only() {
        let home = tempfile::tempdir().unwrap();
        let data = DataDir::at(home.path());
        let kept =
            keep_unsaved(&data, Path::new("/full/disk/../../letter.md"), b"# Letter").unwrap();
        assert_eq!(kept.parent(), Some(home.path().join("letters").as_path()));
        let name = kept.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("unsaved-") && name.ends_with("-letter.md"),
            "{name}"
        );
        assert_eq!(std::fs::read(&kept).unwrap(), b"# Letter");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn writes_whole_file_with_private_mode() {
        let dir = std::env::temp_dir().join(format!("medscribe-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("letter.txt");
        write_private_atomically(&path, b"first").unwrap();
        write_private_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    #[cfg(unix)]
    fn a_link_planted_at_the_target_or_a_temporary_name_is_never_followed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim.txt");
        std::fs::write(&victim, b"precious").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = dir.path().join("transcript.txt");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        // The old predictable temporary name, planted as well.
        let old_temp = dir
            .path()
            .join(format!(".transcript.txt.{}.partial", std::process::id()));
        std::os::unix::fs::symlink(&victim, &old_temp).unwrap();
        write_private_atomically(&out, b"patient text").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let metadata = std::fs::symlink_metadata(&out).unwrap();
        assert!(metadata.is_file());
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&out).unwrap(), b"patient text");
    }

    #[test]
    #[cfg(unix)]
    fn private_directories_are_closed_to_others_even_when_they_exist() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        create_private_dir_all(&nested).unwrap();
        for path in [dir.path().join("a"), dir.path().join("a/b"), nested.clone()] {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{}: {mode:o}", path.display());
        }
        std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o777)).unwrap();
        create_private_dir_all(&nested).unwrap();
        let mode = std::fs::metadata(&nested).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o777, "a user's own directory is left alone");
        own_private_dir(&nested).unwrap();
        let mode = std::fs::metadata(&nested).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let err =
            write_private_atomically(Path::new("/nonexistent/dir/out.txt"), b"x").unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/dir/out.txt"),
            "{err}"
        );
    }
}
