//! A temp folder removed on drop.

use std::path::{Path, PathBuf};

/// A folder under the system temp dir, removed on drop.
pub struct Dir(PathBuf);

impl Dir {
    pub fn new() -> std::io::Result<Dir> {
        let p = std::env::temp_dir().join(super::unique("sixpn"));
        std::fs::create_dir_all(&p)?;
        Ok(Dir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
