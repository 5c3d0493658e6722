//! Reading the kernel's pseudo-files (`/proc`, cgroupfs) in one go.
//!
//! They report a size of 0, so `std::fs::read_to_string` starts with a
//! 32-byte read and doubles from there: seven reads for a 2 KiB file.
//! These files are small and generated whole on the first read, so one
//! page-sized buffer takes them in one or two reads.

use std::io::Read;
use std::path::Path;

/// The first read's size; larger files still come whole, in more reads.
const FIRST_READ: usize = 4096;

/// The whole file as text.
pub fn read(path: impl AsRef<Path>) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = vec![0u8; FIRST_READ];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_small_and_large_files_whole() {
        let status = read("/proc/self/status").expect("status");
        assert!(status.contains("CapEff:"), "{status}");
        let dir = std::env::temp_dir().join(format!("airlock-procfs-{}", std::process::id()));
        std::fs::write(&dir, "x".repeat(3 * FIRST_READ + 7)).expect("write");
        let text = read(&dir).expect("read");
        let _ = std::fs::remove_file(&dir);
        assert_eq!(text.len(), 3 * FIRST_READ + 7);
    }
}
