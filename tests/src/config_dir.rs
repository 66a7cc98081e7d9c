//! A throwaway `--config` directory for one bridge run.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A temporary directory holding `settings.yaml`, `.secrets.yaml` and any
/// other file a test needs (CA files, …); removed on drop.
pub struct ConfigDir {
    dir: TempDir,
}

impl ConfigDir {
    pub fn new() -> ConfigDir {
        let dir = tempfile::Builder::new()
            .prefix("uns-kafka-e2e-")
            .tempdir()
            .expect("create a temporary config directory");
        ConfigDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `settings.yaml` and returns its path.
    pub fn write_settings(&self, yaml: &str) -> PathBuf {
        self.write_file("settings.yaml", yaml)
    }

    /// Writes `.secrets.yaml` and returns its path.
    pub fn write_secrets(&self, yaml: &str) -> PathBuf {
        self.write_file(".secrets.yaml", yaml)
    }

    /// Copies `from` into the directory as `name` (e.g. the brokers' TLS
    /// files, so settings can name them relative to the directory).
    pub fn copy_in(&self, from: &Path, name: &str) -> PathBuf {
        let bytes = std::fs::read(from)
            .unwrap_or_else(|e| panic!("read {} (tests/brokers.sh up?): {e}", from.display()));
        self.write_file(name, bytes)
    }

    /// Writes any file (relative to the directory) and returns its path.
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create config subdirectory");
        }
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Default for ConfigDir {
    fn default() -> Self {
        Self::new()
    }
}
