//! Maps the start of this binary's code into the page tables in one call.
//!
//! The shipped build (scripts/build) places the code a `sandbox run`
//! executes at the start of `.text`; mapping that range at once
//! (`MADV_POPULATE_READ`) replaces the page faults its first use would
//! take, one per 64 KiB. A fork does not copy these mappings, so init
//! maps them again. Without the layout it maps code that may go unused:
//! harmless, as is a kernel without the call (before 5.14).

use std::ffi::c_void;

/// How much of the code: the hot functions' size, rounded up.
const HOT: usize = 1 << 20;

/// Maps the first [`HOT`] bytes of the executable's code segment.
pub fn hot_code() {
    let Some((start, len)) = hot_range() else {
        return;
    };
    // SAFETY: the range lies within a mapped segment of this executable;
    // MADV_POPULATE_READ only faults pages in, it changes no contents.
    unsafe {
        libc::madvise(start as *mut c_void, len, libc::MADV_POPULATE_READ);
    }
}

/// The page-aligned start and length of the code [`hot_code`] maps.
fn hot_range() -> Option<(usize, usize)> {
    let mut range: (usize, usize) = (0, 0);
    // SAFETY: the callback only reads the headers glibc passes it and
    // writes the range it is given. In init (a fork of the
    // single-threaded supervisor) no other thread can hold the loader's
    // lock that dl_iterate_phdr takes.
    unsafe {
        libc::dl_iterate_phdr(
            Some(first_code_segment),
            &mut range as *mut _ as *mut c_void,
        );
    }
    let (start, len) = range;
    let aligned = start & !(page_size() - 1);
    (len > 0).then_some((aligned, len + (start - aligned)))
}

/// The page size (from the auxiliary vector: no system call).
fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

/// The executable's (first object's) executable PT_LOAD, at most [`HOT`]
/// bytes of it.
///
/// # Safety
///
/// Called by `dl_iterate_phdr` with a valid `info`, and `data` pointing at
/// the `(usize, usize)` that [`hot_range`] passed it.
unsafe extern "C" fn first_code_segment(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> libc::c_int {
    let info = &*info;
    let range = &mut *(data as *mut (usize, usize));
    let headers = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
    for h in headers {
        if h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_X != 0 {
            *range = (
                info.dlpi_addr as usize + h.p_vaddr as usize,
                (h.p_memsz as usize).min(HOT),
            );
            break;
        }
    }
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After the call, every page of the range is present in the page
    /// tables (`/proc/self/pagemap`, bit 63).
    #[test]
    fn maps_the_start_of_the_code() {
        use std::io::{Read, Seek, SeekFrom};
        let (start, len) = hot_range().expect("a code segment");
        hot_code();
        let mut pagemap = std::fs::File::open("/proc/self/pagemap").expect("pagemap");
        let page = page_size();
        let pages = len.div_ceil(page);
        pagemap
            .seek(SeekFrom::Start((start / page * 8) as u64))
            .expect("seek");
        let mut entries = vec![0u8; pages * 8];
        pagemap.read_exact(&mut entries).expect("read");
        let absent = entries
            .chunks(8)
            .filter(|e| u64::from_le_bytes((*e).try_into().expect("8 bytes")) >> 63 == 0)
            .count();
        assert_eq!(absent, 0, "{absent} of {pages} pages not mapped");
    }
}
