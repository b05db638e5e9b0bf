//! FileHandler `delete_file` (seed 002 §五.1): deletes a file or directory given by absolute
//! path, only strictly under one of the configured prefixes (`--allow-delete-prefix`), and a
//! directory (recursively) only with `--allow-delete-dirs`. Paths are host paths, read under
//! `--host-root`.
//!
//! Escapes are refused twice: lexically (`/allowed/../etc/passwd` normalizes outside every
//! prefix) and physically (the parent directory is canonicalized, so a symlink or `..` through
//! a symlink that leads outside is caught). The parent directory is then opened and its real
//! path checked again through `/proc/self/fd`, and the entry is removed relative to that open
//! directory, so swapping a directory for a symlink between check and delete does not escape
//! either. A symlink named as the target is removed itself, never followed.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

use super::{HandlerRequest, TaskError, TaskSettings, clip, empty, str_field};

/// A delete_file task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteFile {
    /// The absolute host path, as given.
    pub file_name: String,
}

impl DeleteFile {
    /// Parses command and `data.file_name`.
    pub fn parse(command: &str, data: &Value) -> Result<Self, TaskError> {
        if command != "delete_file" {
            return Err(TaskError::Unsupported(format!(
                "FileHandler takes delete_file, not {:?}",
                clip(command)
            )));
        }
        let file_name = str_field(data, "file_name")?;
        if !file_name.starts_with('/') {
            return Err(TaskError::Invalid(format!(
                "data.file_name must be an absolute path, got {:?}",
                clip(file_name)
            )));
        }
        if file_name.contains('\0') || file_name.len() > 4096 {
            return Err(TaskError::Invalid(
                "data.file_name must be a path without NUL bytes, at most 4096 bytes".into(),
            ));
        }
        Ok(Self {
            file_name: file_name.to_owned(),
        })
    }
}

impl HandlerRequest for DeleteFile {
    fn handler(&self) -> &'static str {
        "FileHandler"
    }

    fn command(&self) -> &'static str {
        "delete_file"
    }

    fn audit_data(&self) -> Value {
        json!({"file_name": self.file_name})
    }

    fn permission(&self, settings: &TaskSettings) -> Result<(), TaskError> {
        if settings.delete_prefixes.is_empty() {
            return Err(TaskError::Refused(
                "FileHandler delete_file needs --allow-delete-prefix (OPSPLANE_ALLOW_DELETE_PREFIX) naming the directories files may be deleted under".into(),
            ));
        }
        Ok(())
    }
}

/// `path` with `.` and `..` resolved by text alone (`..` above `/` stays at `/`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Whether `path` lies strictly below `prefix` (both absolute, normalized or canonical).
fn strictly_under(path: &Path, prefix: &Path) -> bool {
    path != prefix && path.starts_with(prefix)
}

/// `host_root` + absolute host path.
fn under_root(host_root: &Path, path: &Path) -> PathBuf {
    host_root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Deletes the file or directory, after the checks above.
pub fn delete(settings: &TaskSettings, task: &DeleteFile) -> Result<Value, TaskError> {
    let requested = Path::new(&task.file_name);
    let refuse = |why: &str| {
        TaskError::Refused(format!(
            "{} {why}; allowed prefixes: {}",
            task.file_name,
            settings
                .delete_prefixes
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    let lexical = normalize(requested);
    if !settings
        .delete_prefixes
        .iter()
        .any(|p| strictly_under(&lexical, &normalize(p)))
    {
        return Err(refuse("is not under an allowed prefix"));
    }
    let full = under_root(&settings.host_root, requested);
    let missing = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => {
            TaskError::Invalid(format!("{} does not exist", task.file_name))
        }
        _ => TaskError::Failed(format!("cannot resolve {}: {e}", task.file_name)),
    };
    // The physical target: canonical parent + final name (a final symlink is not followed).
    let (parent, name) = match requested.components().next_back() {
        Some(Component::Normal(name)) => {
            let parent = full.parent().unwrap_or(Path::new("/"));
            (
                std::fs::canonicalize(parent).map_err(missing)?,
                name.to_owned(),
            )
        }
        _ => {
            // Ends in `..` or `.`: the target is the directory it resolves to.
            let target = std::fs::canonicalize(&full).map_err(missing)?;
            match (target.parent(), target.file_name()) {
                (Some(p), Some(n)) => (p.to_owned(), n.to_owned()),
                _ => return Err(refuse("resolves to /")),
            }
        }
    };
    let target = parent.join(&name);
    let prefixes: Vec<PathBuf> = settings
        .delete_prefixes
        .iter()
        .filter_map(|p| std::fs::canonicalize(under_root(&settings.host_root, p)).ok())
        .collect();
    if !prefixes.iter().any(|p| strictly_under(&target, p)) {
        return Err(refuse(
            "leads outside the allowed prefixes (through a symlink or ..)",
        ));
    }
    // Hold the parent directory open and check where it really is, then act relative to it.
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(&parent)
        .map_err(|e| TaskError::Failed(format!("cannot open {}: {e}", parent.display())))?;
    let fd_path = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&dir)
    ));
    let real = std::fs::read_link(&fd_path)
        .map_err(|e| TaskError::Failed(format!("cannot check {}: {e}", parent.display())))?;
    if real != parent {
        return Err(TaskError::Failed(format!(
            "{} changed while it was being checked; nothing deleted",
            task.file_name
        )));
    }
    let entry = fd_path.join(&name);
    let meta = std::fs::symlink_metadata(&entry).map_err(missing)?;
    let result = if meta.is_dir() {
        if !settings.allow_delete_dirs {
            return Err(refuse(
                "is a directory; deleting directories (recursively) needs --allow-delete-dirs (OPSPLANE_ALLOW_DELETE_DIRS=true)",
            ));
        }
        std::fs::remove_dir_all(&entry)
    } else {
        std::fs::remove_file(&entry)
    };
    result.map_err(|e| TaskError::Failed(format!("cannot delete {}: {e}", task.file_name)))?;
    drop(dir);
    Ok(empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalize_resolves_dots_by_text() {
        assert_eq!(normalize(Path::new("/a/b/../c/./d")), Path::new("/a/c/d"));
        assert_eq!(normalize(Path::new("/../../etc")), Path::new("/etc"));
        assert_eq!(normalize(Path::new("/a/b/..")), Path::new("/a"));
    }

    #[test]
    fn relative_or_odd_paths_are_invalid() {
        for bad in [
            json!({"file_name": "tmp/x"}),
            json!({"file_name": ""}),
            json!({"file_name": 3}),
            json!({}),
            json!({"file_name": "/a\u{0}b"}),
        ] {
            assert_eq!(
                DeleteFile::parse("delete_file", &bad).unwrap_err().code(),
                30006,
                "{bad}"
            );
        }
        assert_eq!(
            DeleteFile::parse("delete_dir", &json!({}))
                .unwrap_err()
                .code(),
            30004
        );
    }

    #[test]
    fn deletes_under_the_prefix_and_refuses_escapes() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("allowed");
        let outside = root.path().join("outside");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        std::fs::write(allowed.join("f"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("link")).unwrap();
        let mut settings = TaskSettings::new("/", root.path());
        settings.delete_prefixes = vec![allowed.clone()];
        let run = |p: PathBuf| {
            delete(
                &settings,
                &DeleteFile {
                    file_name: p.display().to_string(),
                },
            )
        };

        assert_eq!(run(allowed.join("link/keep")).unwrap_err().code(), 30004);
        assert_eq!(
            run(allowed.join("sub/../../outside/keep"))
                .unwrap_err()
                .code(),
            30004
        );
        assert_eq!(
            run(allowed.join("link/../outside/keep"))
                .unwrap_err()
                .code(),
            30004
        );
        assert_eq!(
            run(allowed.clone()).unwrap_err().code(),
            30004,
            "the prefix itself"
        );
        assert_eq!(
            run(allowed.join("sub")).unwrap_err().code(),
            30004,
            "directory without --allow-delete-dirs"
        );
        assert_eq!(run(allowed.join("nope")).unwrap_err().code(), 30006);
        assert!(outside.join("keep").exists());

        run(allowed.join("f")).unwrap();
        assert!(!allowed.join("f").exists());
        run(allowed.join("link")).unwrap();
        assert!(
            !allowed.join("link").exists() && outside.join("keep").exists(),
            "the link goes, its target stays"
        );
    }
}
