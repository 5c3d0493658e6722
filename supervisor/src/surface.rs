//! The code surface of the writable trees: what programs on the host run,
//! or take configuration from, when the user next works in the workspace.
//!
//! - git: every repository's `config`, `config.worktree`, `commondir` and
//!   `hooks/`, anywhere in the tree (nested repositories, submodules'
//!   git dirs, bare repositories: git finds all of them), and `.git`
//!   itself when it is a symlink or a `gitdir:` file;
//! - direnv and editors: `.envrc`, `.exrc`, `.nvimrc`, `.nvim.lua`,
//!   everything in `.vscode/` and `.idea/`, at any depth;
//! - shells: the rc files at the top of each writable tree (a writable
//!   tree may be a home directory).
//!
//! During a run the surface that exists at a tree's top is bound read-only
//! (`profile/protect.rs`), which creates nothing on the host. Everything
//! else is checked when the sandbox is gone: an entry whose inode changed
//! after the session started (its ctime, which no unprivileged process can
//! set back) was written, renamed or linked by the agent. A git config
//! that holds only keys git itself writes for `init`, `clone`, `remote`
//! and branch tracking stays, and so does a `*.sample` hook; anything
//! else is quarantined: renamed to `NAME.airlock-quarantine`, where
//! nothing runs it, and reported. The supervisor runs the check after
//! every ending it sees; should it be killed, init runs it (see
//! `init.rs`).
//!
//! The walk opens each directory relative to its parent without following
//! symlinks, and renames within the directory it opened, so a symlink the
//! agent planted can never point the check outside the tree.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Type;
use nix::fcntl::{openat, renameat2, AtFlags, OFlag, RenameFlags};
use nix::sys::stat::{fstatat, Mode};

/// Suffix of a quarantined entry.
pub const QUARANTINE_SUFFIX: &str = ".airlock-quarantine";

/// Shell rc files: part of the surface at the top of a writable tree.
pub const RC_FILES: &[&str] = &[
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".zlogout",
];

/// Files that direnv or an editor runs in whatever directory holds them.
pub const ANYWHERE_FILES: &[&str] = &[".envrc", ".exrc", ".nvimrc", ".nvim.lua"];

/// Editor folders whose every file is surface (tasks, launch and settings
/// files run commands).
pub const EDITOR_DIRS: &[&str] = &[".vscode", ".idea"];

/// Deepest directory the walk enters (a bound on pathological trees).
const MAX_DEPTH: usize = 256;

/// Largest git config the check reads; a larger one is quarantined.
const MAX_CONFIG: u64 = 64 << 10;

/// A moment on the clock that stamps inode changes (CLOCK_REALTIME).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Since {
    sec: i64,
    nsec: i64,
}

impl Since {
    /// Now, on the coarse clock the kernel stamps most inode changes with:
    /// it never runs ahead of a stamp made later, so every change from
    /// now on compares at or after it.
    pub fn now() -> Self {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for the kernel to fill. Should
        // the call fail, `ts` stays at the epoch: every entry then counts
        // as changed (fail closed).
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
        Since {
            sec: ts.tv_sec,
            nsec: ts.tv_nsec,
        }
    }

    fn changed(&self, st: &nix::sys::stat::FileStat) -> bool {
        self.changed_at(st.st_ctime, st.st_ctime_nsec)
    }

    /// Whether a ctime of `sec.nsec` is at or after this moment. A
    /// filesystem stores it at its own granularity, truncated: whole
    /// seconds on ext4 with 128-byte inodes, ext2/3 and others, two seconds
    /// on vfat. There a change in the session's first second reads as
    /// older than its start and would be missed; so a ctime without a
    /// fraction counts from the second before the start (a change the
    /// user made up to two seconds before may be quarantined too: fail
    /// closed).
    fn changed_at(&self, sec: i64, nsec: i64) -> bool {
        (sec, nsec) >= (self.sec, self.nsec) || (nsec == 0 && sec >= self.sec - 1)
    }
}

/// What the check found at one path and what it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The entry, as a host path.
    pub path: PathBuf,
    /// What it is and why it matters, e.g. `git config (core.fsmonitor)`.
    pub what: String,
    /// Where it was moved, or why it could not be.
    pub outcome: Result<PathBuf, String>,
}

impl Finding {
    /// One line for the person running the sandbox (no file contents).
    pub fn line(&self) -> String {
        match &self.outcome {
            Ok(to) if *to == self.path => format!(
                "sandbox: workspace: the agent changed {} ({}); its set-user-ID and \
                 set-group-ID bits were removed",
                self.path.display(),
                self.what
            ),
            Ok(to) => format!(
                "sandbox: workspace: the agent changed {} ({}); quarantined as {}",
                self.path.display(),
                self.what,
                to.display()
            ),
            Err(e) => format!(
                "sandbox: workspace: WARNING: the agent changed {} ({}) and it could not be \
                 quarantined ({e}): inspect it before running git or a shell there",
                self.path.display(),
                self.what
            ),
        }
    }
}

/// What a walk found, and the hooks directories repositories name in
/// their config (`core.hooksPath`), checked once the tree is walked.
#[derive(Default)]
struct Report {
    findings: Vec<Finding>,
    hook_dirs: Vec<PathBuf>,
    /// Files a repository's config includes (`include.path`,
    /// `includeIf.*.path`), with how many includes deep they are.
    includes: Vec<(PathBuf, usize)>,
    /// What hooks that are symlinks point to (`hooks/pre-commit ->
    /// ../../scripts/pre-commit.sh`, a common setup): run as the hook.
    hook_targets: Vec<PathBuf>,
    /// The checker reads and searches every directory whatever its mode
    /// (`CAP_DAC_READ_SEARCH`: the supervisor as root).
    sees_all: bool,
    /// Listings from the last check, and the ones this check makes.
    listings: Option<Listings>,
    /// Look for set-id files the agent changed (as root, where trees are
    /// idmapped: see [`check_with`]).
    setid: bool,
}

/// Directory listings kept between checks (the supervisor's, outside the
/// sandbox), so that a directory unchanged since it was listed is not
/// listed again: on ext4 a listing (getdents of an htree directory) costs
/// several microseconds, a `fstat` one. Only what the check looks at is
/// kept: subdirectories and the names the surface is made of.
///
/// A directory's entries change only with its ctime (creating, removing,
/// renaming or linking an entry updates it; a mount over it changes the
/// inode `fstat` sees), so a listing is reused only when the directory's
/// device, inode and ctime are those recorded, and that ctime was at least
/// a second older than the listing itself (a change within the same clock
/// tick as the listing could keep the ctime). Editor folders and hooks
/// directories, where every entry counts, are always listed.
#[derive(Default)]
struct Listings {
    /// When the listings being reused were made (seconds).
    made: i64,
    old: std::collections::HashMap<Vec<u8>, Listing>,
    new: Vec<(Vec<u8>, Listing)>,
}

/// One directory's listing: its identity and the entries the check uses.
#[derive(Clone)]
struct Listing {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
    names: Vec<u8>,
    /// `(at, len, type, set-id file)`.
    entries: Vec<(usize, usize, Type, bool)>,
}

/// Entries a kept listing holds: directories, symlinks (surface in a git
/// dir), and names that matter somewhere.
fn kept(name: &[u8], ty: Type) -> bool {
    ty == Type::Directory
        || ty == Type::Symlink
        || matches!(
            name,
            b"HEAD"
                | b"objects"
                | b"commondir"
                | b"config"
                | b"config.worktree"
                | b"hooks"
                | b".git"
                | b".gitconfig"
                | b"git-rebase-todo"
        )
        || ANYWHERE_FILES
            .iter()
            .chain(RC_FILES)
            .chain(EDITOR_DIRS)
            .any(|n| n.as_bytes() == name)
}

const LISTINGS_MAGIC: &[u8] = b"airlock-listings-3\n";

impl Listings {
    /// The listings saved at `file`; none if it is missing or unreadable.
    fn load(file: &Path) -> Listings {
        let mut out = Listings::default();
        let Ok(data) = std::fs::read(file) else {
            return out;
        };
        let mut r = Reader(&data);
        let parsed = (|| -> Option<()> {
            if r.take(LISTINGS_MAGIC.len())? != LISTINGS_MAGIC {
                return None;
            }
            out.made = r.i64()?;
            while !r.0.is_empty() {
                let key_len = r.u32()? as usize;
                let key = r.take(key_len)?.to_vec();
                let (dev, ino) = (r.u64()?, r.u64()?);
                let ctime = (r.i64()?, r.i64()?);
                let n = r.u32()? as usize;
                let mut names = Vec::new();
                let mut entries = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    let code = r.take(1)?[0];
                    let ty = match code {
                        b'd' => Type::Directory,
                        b'l' => Type::Symlink,
                        b'f' | b's' => Type::File,
                        _ => Type::Fifo,
                    };
                    let len = r.u32()? as usize;
                    entries.push((names.len(), len, ty, code == b's'));
                    names.extend_from_slice(r.take(len)?);
                }
                out.old.insert(
                    key,
                    Listing {
                        dev,
                        ino,
                        ctime,
                        names,
                        entries,
                    },
                );
            }
            Some(())
        })();
        if parsed.is_none() {
            // A damaged file: list everything again.
            out.old.clear();
        }
        out
    }

    /// The kept listing of the directory at `key` whose `fstat` is `st`,
    /// if it still holds.
    fn reuse(&self, key: &[u8], st: &nix::sys::stat::FileStat) -> Option<&Listing> {
        let l = self.old.get(key)?;
        (l.dev == st.st_dev
            && l.ino == st.st_ino
            && l.ctime == (st.st_ctime, st.st_ctime_nsec)
            && l.ctime.0 < self.made - 1)
            .then_some(l)
    }

    /// Writes this check's listings to `file` (atomically, mode 0600).
    fn save(&self, file: &Path, made: i64) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut data = LISTINGS_MAGIC.to_vec();
        data.extend_from_slice(&made.to_le_bytes());
        for (key, l) in &self.new {
            data.extend_from_slice(&(key.len() as u32).to_le_bytes());
            data.extend_from_slice(key);
            data.extend_from_slice(&l.dev.to_le_bytes());
            data.extend_from_slice(&l.ino.to_le_bytes());
            data.extend_from_slice(&l.ctime.0.to_le_bytes());
            data.extend_from_slice(&l.ctime.1.to_le_bytes());
            data.extend_from_slice(&(l.entries.len() as u32).to_le_bytes());
            for (at, len, ty, setid) in &l.entries {
                data.push(match ty {
                    Type::Directory => b'd',
                    Type::Symlink => b'l',
                    Type::File if *setid => b's',
                    Type::File => b'f',
                    _ => b'o',
                });
                data.extend_from_slice(&(*len as u32).to_le_bytes());
                data.extend_from_slice(&l.names[*at..at + len]);
            }
        }
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(&data));
        if written.is_ok() {
            let _ = std::fs::rename(&tmp, file);
        } else {
            let _ = std::fs::remove_file(&tmp);
        }
    }
}

/// How long listings nobody used are kept (seconds).
const LISTINGS_KEPT_FOR: i64 = 7 * 24 * 3600;

/// Removes the listings in `dir` last written before `before` (seconds).
fn sweep_listings(dir: &Path, before: i64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let stale = e.file_name().as_bytes().starts_with(b"listings-")
            && e.metadata()
                .is_ok_and(|m| m.is_file() && m.mtime() < before);
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// A cursor over a listings file.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// How an entry of a directory counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not surface; a directory is walked.
    Plain,
    /// Surface: quarantined when changed.
    Surface(&'static str),
    /// A git config: kept when changed but safe.
    GitConfig,
    /// An entry of a git dir's `hooks/`: kept when a `*.sample`.
    Hook,
    /// A directory whose every entry is surface.
    EditorDir,
    /// A git dir's `hooks/` directory.
    HooksDir,
    /// An interactive rebase's todo list: its `exec` lines run on
    /// `git rebase --continue`.
    RebaseTodo,
}

/// Where a directory sits, for [`classify`].
#[derive(Debug, Clone, Copy, Default)]
struct Place {
    /// The top of a writable tree.
    root: bool,
    /// A git dir (holds `HEAD` and `objects` or `commondir`).
    git_dir: bool,
    /// Inside `.vscode/` or `.idea/`.
    editor: bool,
    /// A git dir's `hooks/`.
    hooks: bool,
    /// Below a git dir (its `logs/`, `refs/`, `objects/`...).
    in_git: bool,
}

/// The kind of entry `name` of type `ty` in a directory at `place`.
fn classify(name: &[u8], ty: Type, place: Place) -> Kind {
    let is = |list: &[&str]| list.iter().any(|n| n.as_bytes() == name);
    let dir = ty == Type::Directory;
    if place.editor {
        return if dir {
            Kind::EditorDir
        } else {
            Kind::Surface("editor configuration")
        };
    }
    if place.hooks {
        return if dir { Kind::Plain } else { Kind::Hook };
    }
    if name == b".git" {
        return match ty {
            Type::Directory => Kind::Plain,
            Type::Symlink => Kind::Surface("a .git symlink"),
            _ => Kind::Surface("a .git file (gitdir: pointer)"),
        };
    }
    if place.git_dir {
        match name {
            b"config" | b"config.worktree" => {
                return if ty == Type::File {
                    Kind::GitConfig
                } else {
                    Kind::Surface("git config that is not a plain file")
                }
            }
            b"commondir" => return Kind::Surface("git commondir"),
            b"hooks" => {
                return if dir {
                    Kind::HooksDir
                } else {
                    Kind::Surface("git hooks that are not a directory")
                }
            }
            _ => {}
        }
    }
    // Git opens its own files (reflogs, COMMIT_EDITMSG, FETCH_HEAD, refs,
    // objects) following symlinks and never makes one there itself: one
    // the agent planted makes the host's next commit or checkout (as root,
    // perhaps) write outside the tree, e.g. append a reflog line to a
    // shell rc file.
    if ty == Type::Symlink && (place.git_dir || place.in_git) {
        return Kind::Surface("a symlink in a git dir (git writes through it)");
    }
    if place.in_git && name == b"git-rebase-todo" {
        return Kind::RebaseTodo;
    }
    if is(EDITOR_DIRS) {
        return if dir {
            Kind::EditorDir
        } else {
            Kind::Surface("editor configuration")
        };
    }
    if is(ANYWHERE_FILES) && !dir {
        return Kind::Surface("a file direnv or an editor runs");
    }
    if place.root && is(RC_FILES) && !dir {
        return Kind::Surface("a shell rc file");
    }
    // The global git config, should the tree be a home directory (a
    // profile may write `${HOME}`): every git command reads it.
    if place.root && name == b".gitconfig" {
        return if ty == Type::File {
            Kind::GitConfig
        } else {
            Kind::Surface("git config that is not a plain file")
        };
    }
    Kind::Plain
}

/// Checks every tree in `trees` for surface entries changed at or after
/// `since`, and the profile's own `extra` paths (`filesystem.protect`,
/// relative to each tree), quarantines them, and says what it found.
/// Never fails: what cannot be read is reported, not skipped silently.
pub fn check(trees: &[PathBuf], extra: &[PathBuf], since: Since, setid: bool) -> Vec<Finding> {
    check_with(trees, extra, since, None, setid)
}

/// [`check`], reusing the listings kept in `cache` (a directory only the
/// supervisor can write) from the last check of the same trees, and
/// keeping this check's for the next.
///
/// With `setid` (as root, where the trees are idmapped and so root's files
/// are the agent's to write), a set-user-ID or set-group-ID file the agent
/// changed loses those bits: a write through a shared mapping does not
/// clear them as `write(2)` does, and a root binary rewritten that way
/// would be a way to root for anyone on the host. Every regular file of a
/// directory listed anew is looked at (once: set-id files are kept in the
/// listing).
pub fn check_with(
    trees: &[PathBuf],
    extra: &[PathBuf],
    since: Since,
    cache: Option<&Path>,
    setid: bool,
) -> Vec<Finding> {
    let now = Since::now();
    let file = cache.map(|dir| {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for t in trees {
            h.update(t.as_os_str().as_bytes());
            h.update([0]);
        }
        let digest = h.finalize();
        let name: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        dir.join(format!("listings-{name}"))
    });
    let mut report = Report {
        sees_all: caps::has_cap(
            None,
            caps::CapSet::Effective,
            caps::Capability::CAP_DAC_READ_SEARCH,
        )
        .unwrap_or(false),
        listings: file.as_deref().map(Listings::load),
        setid,
        ..Report::default()
    };
    for tree in trees {
        for rel in extra {
            check_extra(tree, rel, since, &mut report);
        }
        let Ok(c) = CString::new(tree.as_os_str().as_bytes()) else {
            continue;
        };
        match openat(
            nix::fcntl::AT_FDCWD,
            c.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => walk(
                fd,
                tree,
                Place {
                    root: true,
                    ..Place::default()
                },
                since,
                0,
                &mut report,
            ),
            // A write path that is gone: nothing of it can run.
            Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => report.findings.push(Finding {
                path: tree.clone(),
                what: "a writable tree".into(),
                outcome: Err(format!("cannot open it: {e}")),
            }),
        }
        while let Some((file, depth)) = report.includes.pop() {
            if file.starts_with(tree) && depth <= MAX_INCLUDE_DEPTH {
                let rel = file.strip_prefix(tree).unwrap_or(&file).to_path_buf();
                check_included(tree, &rel, depth, since, &mut report);
            }
        }
        for dir in std::mem::take(&mut report.hook_dirs) {
            if dir.starts_with(tree) {
                let rel = dir.strip_prefix(tree).unwrap_or(&dir).to_path_buf();
                check_hooks_path(tree, &rel, since, &mut report);
            }
        }
        for file in std::mem::take(&mut report.hook_targets) {
            if file.starts_with(tree) {
                let rel = file.strip_prefix(tree).unwrap_or(&file).to_path_buf();
                check_linked_hook(tree, &rel, since, &mut report);
            }
        }
    }
    if let (Some(file), Some(listings)) = (&file, &report.listings) {
        // Only when something was listed anew (or renamed by the check).
        let reused_all = listings.new.len() == listings.old.len()
            && listings
                .new
                .iter()
                .all(|(k, l)| listings.old.get(k).is_some_and(|o| o.ctime == l.ctime))
            && report.findings.is_empty();
        if !reused_all {
            // A tree seen for the first time (a fresh temporary workspace,
            // often): clear listings nobody used for a week, so the
            // directory does not grow without end.
            if !file.exists() {
                if let Some(dir) = file.parent() {
                    sweep_listings(dir, now.sec - LISTINGS_KEPT_FOR);
                }
            }
            listings.save(file, now.sec);
        }
    }
    report.findings
}

/// A `filesystem.protect` path: surface wherever it is. Reached one
/// component at a time without following symlinks (a concurrent sandbox
/// on the same tree could swap a parent for a symlink between a check of
/// the path and its use, and point the quarantine outside the tree).
fn check_extra(tree: &Path, rel: &Path, since: Since, out: &mut Report) {
    check_file(
        tree,
        rel,
        "a link on the way to a path the profile protects",
        "a path the profile protects",
        since,
        out,
    );
}

/// One surface file inside the tree, `rel`: its directory reached by
/// [`open_dir`] (a link on the way is `link`), the file itself `what`.
fn check_file(tree: &Path, rel: &Path, link: &str, what: &str, since: Since, out: &mut Report) {
    let Some((dir, at)) = open_parent(tree, rel, link, since, out) else {
        return;
    };
    let Some(name) = rel.file_name() else { return };
    let Ok(name) = CString::new(name.as_bytes()) else {
        return;
    };
    let path = at.join(OsStr::from_bytes(name.to_bytes()));
    surface(&dir, &name, &path, what, since, out);
}

/// A `core.hooksPath` inside the tree: every component opened without
/// following symlinks (a symlink the agent made on the way is itself
/// quarantined), then every entry of the directory is a hook.
fn check_hooks_path(tree: &Path, rel: &Path, since: Since, out: &mut Report) {
    let what = "a link on the way to core.hooksPath";
    let Some((dir, at)) = open_dir(tree, rel, what, since, out) else {
        return;
    };
    walk(
        dir,
        &at,
        Place {
            hooks: true,
            ..Place::default()
        },
        since,
        0,
        out,
    );
}

/// Git follows includes this deep, and no deeper.
const MAX_INCLUDE_DEPTH: usize = 10;

/// The directory holding `rel` inside `tree` (see [`open_dir`]).
fn open_parent(
    tree: &Path,
    rel: &Path,
    what: &str,
    since: Since,
    out: &mut Report,
) -> Option<(OwnedFd, PathBuf)> {
    open_dir(tree, rel.parent()?, what, since, out)
}

/// The directory `rel` inside `tree`, every component opened without
/// following symlinks. On a component that is not a plain directory,
/// `None`, after treating that component as surface (`what`).
fn open_dir(
    tree: &Path,
    rel: &Path,
    what: &str,
    since: Since,
    out: &mut Report,
) -> Option<(OwnedFd, PathBuf)> {
    let root = CString::new(tree.as_os_str().as_bytes()).ok()?;
    let mut dir = openat(
        nix::fcntl::AT_FDCWD,
        root.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut at = tree.to_path_buf();
    for part in rel.components() {
        let std::path::Component::Normal(part) = part else {
            return None;
        };
        let name = CString::new(part.as_bytes()).ok()?;
        at.push(part);
        match openat(
            &dir,
            name.as_c_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(next) => dir = next,
            Err(_) => {
                surface(&dir, &name, &at, what, since, out);
                return None;
            }
        }
    }
    Some((dir, at))
}

/// The file a hook symlink points to, inside the tree: the hook itself.
fn check_linked_hook(tree: &Path, rel: &Path, since: Since, out: &mut Report) {
    check_file(
        tree,
        rel,
        "a link on the way to a git hook's script",
        "the script a git hook links to",
        since,
        out,
    );
}

/// A file a repository's config includes, inside the tree: checked as a
/// git config (quarantined when changed and unsafe), and its own
/// includes followed.
fn check_included(tree: &Path, rel: &Path, depth: usize, since: Since, out: &mut Report) {
    let what = "a link on the way to an included git config";
    let Some((dir, at)) = open_parent(tree, rel, what, since, out) else {
        return;
    };
    let Some(name) = rel.file_name() else { return };
    let Ok(name) = CString::new(name.as_bytes()) else {
        return;
    };
    let path = at.join(OsStr::from_bytes(name.to_bytes()));
    if !changed(&dir, &name, since) {
        if let Ok(text) = read_config(&dir, &name) {
            for file in include_paths(&text) {
                out.includes.push((lexical(&at.join(file)), depth + 1));
            }
        }
        return;
    }
    if let Err(why) = read_config(&dir, &name).and_then(|t| config_is_safe(&t)) {
        quarantine(
            &dir,
            &name,
            &path,
            format!("included git config ({why})"),
            out,
        );
    }
}

/// The files a config includes (`include.path`, `includeIf.*.path`),
/// relative to the config's own directory unless absolute; `~` paths
/// (the user's home, outside what the agent can write) are left out.
fn include_paths(text: &str) -> Vec<String> {
    let mut in_include = false;
    let mut found = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('[') {
            let header = rest.split(']').next().unwrap_or("").trim();
            let name = header
                .split(|c: char| c.is_ascii_whitespace() || c == '.')
                .next()
                .unwrap_or("");
            in_include =
                name.eq_ignore_ascii_case("include") || name.eq_ignore_ascii_case("includeif");
            continue;
        }
        if !in_include {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().trim_matches('"');
            if k.trim().eq_ignore_ascii_case("path") && !v.is_empty() && !v.starts_with('~') {
                found.push(v.to_string());
            }
        }
    }
    found
}

/// `path` with `.` and `..` removed, without touching the filesystem.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The `core.hooksPath` a config sets, if any (the last one wins).
fn hooks_path(text: &str) -> Option<String> {
    let mut in_core = false;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix('[') {
            let header = rest.split(']').next().unwrap_or("").trim();
            in_core = header.eq_ignore_ascii_case("core");
            continue;
        }
        if !in_core {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            if k.trim().eq_ignore_ascii_case("hookspath") {
                let v = v.trim().trim_matches('"');
                found = (!v.is_empty()).then(|| v.to_string());
            }
        }
    }
    found
}

fn walk(fd: OwnedFd, path: &Path, place: Place, since: Since, depth: usize, out: &mut Report) {
    let mut names = Vec::new();
    let mut listed = Vec::new();
    // Editor folders and hooks directories, where every entry counts, keep
    // every entry in their listing.
    let keep_all = place.editor || place.hooks;
    let cacheable = true;
    let st = nix::sys::stat::fstat(&fd).ok();
    let key = path.as_os_str().as_bytes();
    let reused = match (&out.listings, &st) {
        (Some(l), Some(st)) if cacheable => l.reuse(key, st).cloned(),
        _ => None,
    };
    let fresh = reused.is_none();
    // Which entries were set-id files when the reused listing was made.
    let mut known_setid: Option<Vec<bool>> = None;
    if let Some(l) = reused {
        names = l.names.clone();
        listed = l
            .entries
            .iter()
            .map(|&(at, len, ty, _)| Entry {
                at,
                len,
                ty: Some(ty),
            })
            .collect();
        known_setid = Some(l.entries.iter().map(|e| e.3).collect());
        if let Some(listings) = &mut out.listings {
            listings.new.push((key.to_vec(), l));
        }
    } else if read_entries(&fd, &mut names, &mut listed).is_err() {
        out.findings.push(Finding {
            path: path.to_path_buf(),
            what: "a directory the checker cannot list".into(),
            outcome: Err("getdents failed".into()),
        });
        return;
    }
    // Type unknown to the filesystem (DT_UNKNOWN): ask.
    for e in &mut listed {
        if e.ty.is_none() {
            if let Ok(c) = CString::new(&names[e.at..e.at + e.len]) {
                e.ty = fstatat(&fd, c.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .ok()
                    .map(|st| type_of(st.st_mode));
            }
        }
    }
    let name_of = |e: &Entry| &names[e.at..e.at + e.len];
    // Set-id files: every regular file of a fresh listing, those a reused
    // one marks (the mode of an unchanged directory's files can change
    // without its ctime moving, but the set-id bits only ever go away: the
    // agent cannot set them, see seccomp).
    let mut setid_files = vec![false; listed.len()];
    if out.setid {
        for (i, e) in listed.iter().enumerate() {
            if e.ty != Some(Type::File) {
                continue;
            }
            if known_setid.as_ref().is_some_and(|k| !k[i]) {
                continue;
            }
            let Ok(c) = CString::new(name_of(e)) else {
                continue;
            };
            if let Ok(st) = fstatat(&fd, c.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                if st.st_mode & 0o6000 != 0 {
                    setid_files[i] = true;
                    if since.changed(&st) {
                        let child = path.join(OsStr::from_bytes(name_of(e)));
                        strip_setid(&fd, c.as_c_str(), &child, out);
                    }
                }
            }
        }
    }
    if let (Some(listings), Some(st), true, true) = (&mut out.listings, &st, cacheable, fresh) {
        let mut kept_names = Vec::new();
        let mut kept_entries = Vec::new();
        for (e, setid) in listed.iter().zip(&setid_files) {
            if let Some(ty) = e.ty {
                if *setid || keep_all || kept(name_of(e), ty) {
                    kept_entries.push((kept_names.len(), e.len, ty, *setid));
                    kept_names.extend_from_slice(name_of(e));
                }
            }
        }
        listings.new.push((
            key.to_vec(),
            Listing {
                dev: st.st_dev,
                ino: st.st_ino,
                ctime: (st.st_ctime, st.st_ctime_nsec),
                names: kept_names,
                entries: kept_entries,
            },
        ));
    }
    let typed: Vec<(&[u8], Type)> = listed
        .iter()
        .filter_map(|e| e.ty.map(|t| (name_of(e), t)))
        .collect();
    let place = Place {
        git_dir: place.git_dir || looks_like_git_dir(&typed),
        ..place
    };
    let mut entries: Vec<(CString, Type)> = Vec::new();
    for (raw, ty) in typed {
        // Not surface and no directory to enter: no path, no allocation
        // (most entries).
        if ty != Type::Directory && classify(raw, ty, place) == Kind::Plain {
            continue;
        }
        // A git dir's object store: data only, and the bulk of a repository.
        if place.git_dir && ty == Type::Directory && raw == b"objects" {
            continue;
        }
        if let Ok(c) = CString::new(raw) {
            entries.push((c, ty));
        }
    }
    for (name, ty) in &entries {
        let child = path.join(OsStr::from_bytes(name.to_bytes()));
        // A git dir's own state (objects, refs, logs) is data, but its
        // `modules/` and `worktrees/` hold further git dirs: the walk goes on.
        match classify(name.to_bytes(), *ty, place) {
            Kind::Plain if *ty == Type::Directory => {
                let inner = Place {
                    in_git: place.git_dir || place.in_git,
                    ..Place::default()
                };
                enter(&fd, name, &child, inner, since, depth, out)
            }
            Kind::Plain => {}
            Kind::EditorDir => enter(
                &fd,
                name,
                &child,
                Place {
                    editor: true,
                    ..Place::default()
                },
                since,
                depth,
                out,
            ),
            Kind::HooksDir => enter(
                &fd,
                name,
                &child,
                Place {
                    hooks: true,
                    ..Place::default()
                },
                since,
                depth,
                out,
            ),
            Kind::Hook if name.to_bytes().ends_with(b".sample") => {}
            Kind::Hook => {
                if *ty == Type::Symlink && !changed(&fd, name, since) {
                    // The user's link into the work tree: what it points
                    // to is the hook, and the agent could write that.
                    if let Ok(target) = nix::fcntl::readlinkat(&fd, name.as_c_str()) {
                        out.hook_targets.push(lexical(&path.join(target)));
                    }
                }
                surface(&fd, name, &child, "a git hook", since, out)
            }
            Kind::Surface(what) => surface(&fd, name, &child, what, since, out),
            Kind::RebaseTodo => {
                if changed(&fd, name, since)
                    && read_config(&fd, name).map_or(true, |t| runs_commands(&t))
                {
                    let what = "a rebase todo list with exec lines".to_string();
                    quarantine(&fd, name, &child, what, out);
                }
            }
            Kind::GitConfig => {
                let text = read_config(&fd, name).ok();
                if name.to_bytes() == b"config" {
                    // The repository's own hooks directory, if it moved
                    // them into the work tree (husky's `.husky/_`).
                    if let Some(dir) = text.as_deref().and_then(hooks_path) {
                        let base = if path.file_name() == Some(OsStr::new(".git")) {
                            path.parent().unwrap_or(path)
                        } else {
                            path
                        };
                        out.hook_dirs.push(lexical(&base.join(dir)));
                    }
                }
                // A file it includes (a shared `../.gitconfig` in the work
                // tree is a common setup) is config too.
                for file in text.as_deref().map(include_paths).unwrap_or_default() {
                    out.includes.push((lexical(&path.join(file)), 1));
                }
                if !changed(&fd, name, since) {
                    continue;
                }
                match read_config(&fd, name).and_then(|t| config_is_safe(&t)) {
                    Ok(()) => {}
                    Err(why) => quarantine(&fd, name, &child, format!("git config ({why})"), out),
                }
            }
        }
    }
}

/// One directory entry: its name in the listing's name buffer, its type.
struct Entry {
    at: usize,
    len: usize,
    ty: Option<Type>,
}

/// Lists `dir` with getdents64 directly (no `fdopendir`: it dups, stats and
/// seeks the descriptor for nothing here), names packed into `names`.
fn read_entries(dir: &OwnedFd, names: &mut Vec<u8>, out: &mut Vec<Entry>) -> Result<(), ()> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 32 << 10];
    loop {
        // SAFETY: `buf` is a writable buffer of the length passed.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                dir.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(());
        }
        if n == 0 {
            return Ok(());
        }
        let mut at = 0usize;
        while at + 19 <= n as usize {
            // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type,
            // then the NUL-terminated name.
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            if reclen == 0 || at + reclen > n as usize {
                return Err(());
            }
            let d_type = buf[at + 18];
            let raw = &buf[at + 19..at + reclen];
            let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            at += reclen;
            if name == b"." || name == b".." {
                continue;
            }
            let ty = match d_type {
                libc::DT_DIR => Some(Type::Directory),
                libc::DT_REG => Some(Type::File),
                libc::DT_LNK => Some(Type::Symlink),
                libc::DT_FIFO => Some(Type::Fifo),
                libc::DT_SOCK => Some(Type::Socket),
                libc::DT_CHR => Some(Type::CharacterDevice),
                libc::DT_BLK => Some(Type::BlockDevice),
                _ => None,
            };
            out.push(Entry {
                at: names.len(),
                len: name.len(),
                ty,
            });
            names.extend_from_slice(name);
        }
    }
}

/// Whether a directory with these entries is one git would take for a
/// git dir. Git asks for `HEAD` (a file, or a symlink into `refs/`) and
/// `objects` (anything `access(X_OK)` passes, a symlink to a directory
/// included), or a `commondir` it reads through symlinks: any type counts,
/// or a symlinked `HEAD` or `objects` would hide the config beside them.
fn looks_like_git_dir(entries: &[(&[u8], Type)]) -> bool {
    let has = |n: &[u8]| entries.iter().any(|(e, _)| *e == n);
    let head = entries
        .iter()
        .any(|(e, t)| *e == b"HEAD" && *t != Type::Directory);
    head && (has(b"objects") || has(b"commondir"))
}

#[allow(clippy::too_many_arguments)]
fn enter(
    parent: &OwnedFd,
    name: &CStr,
    path: &Path,
    place: Place,
    since: Since,
    depth: usize,
    out: &mut Report,
) {
    if depth >= MAX_DEPTH {
        out.findings.push(Finding {
            path: path.to_path_buf(),
            what: "a directory nested too deep to check".into(),
            outcome: Err(format!("deeper than {MAX_DEPTH} levels")),
        });
        return;
    }
    let sees_all = out.sees_all;
    let open = || {
        openat(
            parent,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        // Listing needs read, and looking at the entries search (x),
        // which root has whatever the mode (a stat spared per directory).
        .and_then(|fd| {
            if sees_all {
                return Ok(fd);
            }
            fstatat(&fd, c".", AtFlags::empty()).map(|_| fd)
        })
    };
    match open() {
        Ok(fd) => walk(fd, path, place, since, depth + 1, out),
        // It vanished (a concurrent sandbox), or it is no directory now.
        Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP) => {}
        // The agent may have written inside and then taken its own
        // permissions away (chmod 000): a checker without
        // CAP_DAC_OVERRIDE (init, or an ordinary user's supervisor) would
        // skip what root on the host still enters. As its owner, give
        // ourselves read and search, check, and put the mode back.
        Err(e) => match unlock(parent, name, open) {
            Ok((fd, mode)) => {
                let dup = fd.try_clone();
                walk(fd, path, place, since, depth + 1, out);
                if let Ok(dup) = dup {
                    let _ = nix::sys::stat::fchmod(&dup, mode);
                }
            }
            Err(_) => out.findings.push(Finding {
                path: path.to_path_buf(),
                what: "a directory the check cannot enter".into(),
                outcome: Err(format!("open: {e}")),
            }),
        },
    }
}

/// Adds owner read and search to the directory `name`, opens it with
/// `open`, and returns it with its former mode (to put back).
fn unlock(
    parent: &OwnedFd,
    name: &CStr,
    open: impl Fn() -> nix::Result<OwnedFd>,
) -> nix::Result<(OwnedFd, Mode)> {
    let st = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(nix::errno::Errno::ENOTDIR);
    }
    let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
    // The name was a directory a moment ago; should a concurrent sandbox
    // swap in a symlink, the chmod follows it to a file that sandbox's
    // agent (as this checker's uid, without capabilities) could chmod
    // itself: no rights are gained. Root never gets here.
    nix::sys::stat::fchmodat(
        parent,
        name,
        mode | Mode::S_IRUSR | Mode::S_IXUSR,
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )?;
    open().map(|fd| (fd, mode))
}

fn changed(dir: &OwnedFd, name: &CStr, since: Since) -> bool {
    fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).is_ok_and(|st| since.changed(&st))
}

fn surface(dir: &OwnedFd, name: &CStr, path: &Path, what: &str, since: Since, out: &mut Report) {
    if changed(dir, name, since) {
        quarantine(dir, name, path, what.to_string(), out);
    }
}

/// Renames `name` to `name.airlock-quarantine` (or `...-N`), never over
/// an existing entry.
/// Removes the set-user-ID and set-group-ID bits of `name` in `dir`,
/// through the file itself (opened without following a symlink, so a
/// concurrent sandbox cannot point this at a file outside the tree).
fn strip_setid(dir: &OwnedFd, name: &CStr, path: &Path, out: &mut Report) {
    let what = "a set-user-ID or set-group-ID file it wrote".to_string();
    let outcome = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .and_then(|fd| {
        let st = nix::sys::stat::fstat(&fd)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(nix::errno::Errno::EINVAL);
        }
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(st.st_mode & 0o1777))
    })
    .map(|()| path.to_path_buf())
    .map_err(|e| format!("chmod: {e}"));
    out.findings.push(Finding {
        path: path.to_path_buf(),
        what,
        outcome,
    });
}

fn quarantine(dir: &OwnedFd, name: &CStr, path: &Path, what: String, out: &mut Report) {
    let mut outcome = rename_aside(dir, name, path);
    if outcome == Err(format!("rename: {}", nix::errno::Errno::EACCES)) {
        // The agent made the directory read-only after writing in it: as
        // its owner, take write back for the rename, then put it back.
        if let Ok(st) = nix::sys::stat::fstat(dir) {
            let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
            if nix::sys::stat::fchmod(dir, mode | Mode::S_IWUSR | Mode::S_IXUSR).is_ok() {
                outcome = rename_aside(dir, name, path);
                let _ = nix::sys::stat::fchmod(dir, mode);
            }
        }
    }
    out.findings.push(Finding {
        path: path.to_path_buf(),
        what,
        outcome,
    });
}

fn rename_aside(dir: &OwnedFd, name: &CStr, path: &Path) -> Result<PathBuf, String> {
    let mut outcome = Err("no free quarantine name".to_string());
    // The agent can take the first hundred names beforehand, to leave its
    // file in place with only a warning: then names it cannot guess.
    for n in 0..116 {
        let suffix = match n {
            0 => QUARANTINE_SUFFIX.to_string(),
            1..100 => format!("{QUARANTINE_SUFFIX}-{n}"),
            _ => format!("{QUARANTINE_SUFFIX}-{:016x}", random()),
        };
        let mut new = name.to_bytes().to_vec();
        new.extend_from_slice(suffix.as_bytes());
        let Ok(new) = CString::new(new) else { break };
        match renameat2(
            dir,
            name,
            dir,
            new.as_c_str(),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => {
                let mut to = path.as_os_str().to_owned();
                to.push(&suffix);
                outcome = Ok(PathBuf::from(to));
                break;
            }
            Err(nix::errno::Errno::EEXIST) => continue,
            Err(e) => {
                outcome = Err(format!("rename: {e}"));
                break;
            }
        }
    }
    outcome
}

/// 64 random bits (0 should the kernel refuse, which only repeats a name
/// and fails closed with a warning).
fn random() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for 8 bytes of writes.
    unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    u64::from_ne_bytes(bytes)
}

fn read_config(dir: &OwnedFd, name: &CStr) -> Result<String, String> {
    use std::io::Read;
    let fd = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("unreadable: {e}"))?;
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|e| format!("unreadable: {e}"))?;
    if !meta.is_file() {
        return Err("not a plain file".into());
    }
    if meta.len() > MAX_CONFIG {
        return Err("larger than a config git writes".into());
    }
    let mut text = String::new();
    file.take(MAX_CONFIG + 1)
        .read_to_string(&mut text)
        .map_err(|_| "not UTF-8 text".to_string())?;
    Ok(text)
}

fn type_of(mode: libc::mode_t) -> Type {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => Type::Directory,
        libc::S_IFLNK => Type::Symlink,
        libc::S_IFIFO => Type::Fifo,
        libc::S_IFSOCK => Type::Socket,
        libc::S_IFCHR => Type::CharacterDevice,
        libc::S_IFBLK => Type::BlockDevice,
        _ => Type::File,
    }
}

/// The keys a repository's config may hold after a run: what git itself
/// writes for `init`, `clone`, `remote add`, `branch --set-upstream-to`
/// and `config user.*`. Each is data, never a command or a path git would
/// run or read: `core.fsmonitor`, `core.hooksPath`, `core.sshCommand`,
/// `core.pager`, `alias.*`, `include.*`, `filter.*`, `diff.*`,
/// `credential.*` and every other key are refused by omission.
/// `(section, with subsection, key)`, lowercase.
const SAFE_KEYS: &[(&str, bool, &str)] = &[
    ("core", false, "repositoryformatversion"),
    ("core", false, "filemode"),
    ("core", false, "bare"),
    ("core", false, "logallrefupdates"),
    ("core", false, "ignorecase"),
    ("core", false, "precomposeunicode"),
    ("core", false, "symlinks"),
    ("core", false, "autocrlf"),
    ("core", false, "eol"),
    ("core", false, "safecrlf"),
    ("core", false, "quotepath"),
    ("extensions", false, "objectformat"),
    ("extensions", false, "refstorage"),
    ("extensions", false, "worktreeconfig"),
    ("extensions", false, "partialclone"),
    ("remote", true, "url"),
    ("remote", true, "pushurl"),
    ("remote", true, "fetch"),
    ("remote", true, "push"),
    ("remote", true, "tagopt"),
    ("remote", true, "prune"),
    ("remote", true, "promisor"),
    ("remote", true, "partialclonefilter"),
    ("remote", true, "mirror"),
    ("branch", true, "remote"),
    ("branch", true, "merge"),
    ("branch", true, "rebase"),
    ("branch", true, "pushremote"),
    ("branch", true, "description"),
    ("user", false, "name"),
    ("user", false, "email"),
    ("init", false, "defaultbranch"),
    ("submodule", true, "url"),
    ("submodule", true, "active"),
    ("submodule", true, "branch"),
    ("pull", false, "rebase"),
    ("pull", false, "ff"),
    ("fetch", false, "prune"),
];

/// Whether a git config holds only [`SAFE_KEYS`], in the plain layout git
/// writes. Anything this parser is unsure of (continuation lines, odd
/// headers) is unsafe: the config is quarantined, not guessed at.
pub fn config_is_safe(text: &str) -> Result<(), String> {
    let mut section: Option<(String, bool)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let at = |why: &str| format!("line {}: {why}", n + 1);
        if let Some(rest) = line.strip_prefix('[') {
            let (header, after) = rest
                .split_once(']')
                .ok_or_else(|| at("unterminated section header"))?;
            let after = after.trim();
            if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
                return Err(at("text after a section header"));
            }
            section = Some(parse_header(header).ok_or_else(|| at("unusual section header"))?);
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (line, None),
        };
        if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            || !key.starts_with(|c: char| c.is_ascii_alphabetic())
        {
            return Err(at("unusual key"));
        }
        if value.is_some_and(|v| v.ends_with('\\')) {
            return Err(at("a continued value"));
        }
        let key = key.to_ascii_lowercase();
        let Some((name, sub)) = &section else {
            return Err(at("a key outside any section"));
        };
        if !SAFE_KEYS
            .iter()
            .any(|(s, with_sub, k)| s == name && with_sub == sub && *k == key)
        {
            return Err(format!("{name}.{key}"));
        }
        if key == "url" || key == "pushurl" {
            let v = git_value(value.unwrap_or(""));
            let v = v.trim();
            // `<transport>::<address>` runs git-remote-<transport>, and
            // `ext::` runs a command line; an option-like URL is refused.
            let transport = v.split_once("::").map(|(t, _)| t);
            if transport.is_some_and(|t| {
                !t.is_empty()
                    && t.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
            }) || v.starts_with('-')
            {
                return Err(format!("{name}.{key} with a transport helper"));
            }
        }
    }
    Ok(())
}

/// Whether a rebase todo list holds an `exec` (`x`) line, which the
/// user's `git rebase --continue` would run.
fn runs_commands(todo: &str) -> bool {
    todo.lines().any(|line| {
        let word = line
            .trim_start_matches([' ', '\t'])
            .split([' ', '\t'])
            .next()
            .unwrap_or("");
        word == "x" || word == "exec"
    })
}

/// A value as git reads it: quotes anywhere removed (`"e"xt::` is
/// `ext::`), escapes resolved, an unquoted `#` or `;` ending it.
fn git_value(raw: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('b') => out.push('\u{8}'),
                Some(other) => out.push(other),
                None => {}
            },
            '#' | ';' if !quoted => break,
            c => out.push(c),
        }
    }
    out
}

/// `core`, `remote "origin"` or `branch.main`: the lowercase section and
/// whether it has a subsection.
fn parse_header(header: &str) -> Option<(String, bool)> {
    let header = header.trim();
    let (name, sub) = match header.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((name, sub)) => {
            let sub = sub.trim();
            let inner = sub.strip_prefix('"')?.strip_suffix('"')?;
            if inner.contains('"') && !inner.contains("\\\"") {
                return None;
            }
            (name, true)
        }
        None => match header.split_once('.') {
            Some((name, _)) => (name, true),
            None => (header, false),
        },
    };
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    Some((name.to_ascii_lowercase(), sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_git_writes_is_safe_and_every_command_key_is_not() {
        let init = "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n";
        let clone = format!(
            "{init}[remote \"origin\"]\n\turl = https://example.com/r.git\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n[branch \"main\"]\n\tremote = origin\n\tmerge = refs/heads/main\n"
        );
        assert_eq!(config_is_safe(init), Ok(()));
        assert_eq!(config_is_safe(&clone), Ok(()));
        assert_eq!(
            config_is_safe("[user]\n name = A\n email = a@example.com\n"),
            Ok(())
        );
        let refused: &[(&str, &str)] = &[
            ("[core]\n fsmonitor = ./x\n", "core.fsmonitor"),
            ("[core]\n hooksPath = h\n", "core.hookspath"),
            ("[core]\n sshCommand = x\n", "core.sshcommand"),
            ("[core]\n pager = x\n", "core.pager"),
            ("[core]\n editor = x\n", "core.editor"),
            ("[core]\n gitProxy = x\n", "core.gitproxy"),
            ("[core]\n worktree = /\n", "core.worktree"),
            ("[alias]\n x = !sh\n", "alias.x"),
            ("[include]\n path = /tmp/c\n", "include.path"),
            ("[includeIf \"gitdir:/\"]\n path = c\n", "includeif.path"),
            ("[filter \"f\"]\n clean = x\n", "filter.clean"),
            ("[filter \"f\"]\n smudge = x\n", "filter.smudge"),
            ("[diff \"d\"]\n textconv = x\n", "diff.textconv"),
            ("[credential]\n helper = x\n", "credential.helper"),
            ("[remote \"o\"]\n uploadpack = x\n", "remote.uploadpack"),
            ("[submodule \"s\"]\n update = !x\n", "submodule.update"),
            ("[protocol \"ext\"]\n allow = always\n", "protocol.allow"),
            (
                "[core]\n\tbare = false\n[core]\n\tFSMONITOR = x\n",
                "core.fsmonitor",
            ),
            ("[core.x]\n fsmonitor = x\n", "core.fsmonitor"),
        ];
        for (text, key) in refused {
            let err = config_is_safe(text).expect_err(text);
            assert!(err.contains(key), "{text:?}: {err}");
        }
        for text in [
            "[remote \"o\"]\n url = ext::sh -c touch% /tmp/x\n",
            "[remote \"o\"]\n url = evil::x\n",
            "[remote \"o\"]\n url = -oProxyCommand=x\n",
            // Git joins quoted parts: both are `ext::` to it.
            "[remote \"o\"]\n url = \"e\"xt::sh -c x\n",
            "[remote \"o\"]\n pushurl = e\"xt::\"sh -c x\n",
            "[core]\n bare = false \\\n fsmonitor = x\n",
            "[core] fsmonitor = x\n",
            "fsmonitor = x\n",
            "[core\n",
            "[co re \"x]\n",
        ] {
            assert!(config_is_safe(text).is_err(), "{text:?} passed");
        }
        // IPv6 literals and ports are not transports.
        assert_eq!(
            config_is_safe("[remote \"o\"]\n url = ssh://[::1]:22/r.git\n"),
            Ok(())
        );
    }

    #[test]
    fn a_symlinked_head_or_objects_still_makes_a_git_dir() {
        type Entries<'a> = &'a [(&'a [u8], Type)];
        let (f, d, l) = (Type::File, Type::Directory, Type::Symlink);
        let rows: &[(Entries, bool)] = &[
            (&[(b"HEAD", f), (b"objects", d)], true),
            (&[(b"HEAD", l), (b"objects", d)], true),
            (&[(b"HEAD", f), (b"objects", l)], true),
            (&[(b"HEAD", l), (b"objects", l)], true),
            (&[(b"HEAD", f), (b"commondir", f)], true),
            (&[(b"HEAD", f), (b"commondir", l)], true),
            (&[(b"HEAD", f), (b"config", f)], false),
            (&[(b"HEAD", d), (b"objects", d)], false),
            (&[(b"objects", d), (b"config", f)], false),
        ];
        for (entries, want) in rows {
            assert_eq!(looks_like_git_dir(entries), *want, "{entries:?}");
        }
    }

    #[test]
    fn include_paths_are_read_from_include_and_include_if() {
        let text = "[core]\n path = no\n[include]\n\tpath = ../.gitconfig\n\
                    [includeIf \"gitdir:/w/\"]\n path = \"/w/shared\"\n[include]\n path = ~/x\n";
        assert_eq!(include_paths(text), vec!["../.gitconfig", "/w/shared"]);
        assert_eq!(
            lexical(&Path::new("/w/.git").join("../.gitconfig")),
            PathBuf::from("/w/.gitconfig")
        );
    }

    #[test]
    fn exec_lines_in_a_rebase_todo_are_found() {
        assert!(runs_commands("pick 1 a\nexec make\n"));
        assert!(runs_commands("pick 1 a\n  x touch y\n"));
        assert!(!runs_commands("pick 1 a\nbreak\n# exec x\nfixup 2 b\n"));
    }

    #[test]
    fn a_change_on_a_filesystem_with_whole_second_times_is_not_missed() {
        let start = Since {
            sec: 1001,
            nsec: 500_000_000,
        };
        // A fine-grained filesystem: exact.
        assert!(start.changed_at(1001, 500_000_000));
        assert!(start.changed_at(1002, 1));
        assert!(!start.changed_at(1001, 499_999_999));
        assert!(!start.changed_at(999, 1));
        // Truncated to the second (ext4, 128-byte inodes) or to two (vfat).
        assert!(start.changed_at(1001, 0));
        assert!(start.changed_at(1000, 0));
        assert!(!start.changed_at(999, 0));
    }

    /// The listings kept from one check never hide what the agent does
    /// before the next: a new entry changes its directory's ctime, and an
    /// existing surface file is still looked at (its name is kept).
    #[test]
    fn kept_listings_hide_nothing_planted_later() {
        let root = std::env::temp_dir().join(format!("airlock-listings-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let tree = root.join("tree");
        let cache = root.join("cache");
        for d in [
            "tree/a/b",
            "tree/sub/.git/objects",
            "tree/sub/.git/hooks",
            "cache",
        ] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::write(tree.join("sub/.git/HEAD"), "ref: refs/heads/main\n").expect("HEAD");
        std::fs::write(tree.join("sub/.git/config"), "[core]\n\tbare = false\n").expect("config");
        // Listings are reused only for directories quiet for a second.
        std::thread::sleep(std::time::Duration::from_millis(2100));
        let trees = [tree.clone()];
        let first = check_with(&trees, &[], Since::now(), Some(&cache), false);
        assert!(first.is_empty(), "{first:?}");
        let kept = std::fs::read_dir(&cache).expect("cache").count();
        assert_eq!(kept, 1, "one listings file per set of trees");

        let since = Since::now();
        std::fs::write(tree.join("a/b/.envrc"), "evil\n").expect("envrc");
        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(tree.join("sub/.git/config"))
            .expect("open config");
        std::io::Write::write_all(&mut config, b"\tfsmonitor = evil\n").expect("append");
        drop(config);
        let found: Vec<PathBuf> = check_with(&trees, &[], since, Some(&cache), false)
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert!(found.contains(&tree.join("a/b/.envrc")), "{found:?}");
        assert!(found.contains(&tree.join("sub/.git/config")), "{found:?}");

        // Listings nobody used for a week go when a new tree is first
        // checked.
        let old = cache.join("listings-0123456789abcdef01234567");
        std::fs::write(&old, b"stale").expect("old listings");
        let week_ago = nix::sys::time::TimeSpec::new(Since::now().sec - 8 * 24 * 3600, 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &old,
            &week_ago,
            &week_ago,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .expect("age it");
        let other = root.join("other");
        std::fs::create_dir_all(&other).expect("mkdir");
        check_with(&[other], &[], Since::now(), Some(&cache), false);
        assert!(!old.exists(), "a week-old listing survived");
        assert_eq!(std::fs::read_dir(&cache).expect("cache").count(), 2);

        // A damaged listings file: everything is listed again.
        for f in std::fs::read_dir(&cache).expect("cache").flatten() {
            std::fs::write(f.path(), b"airlock-listings-3\ngarbage").expect("damage");
        }
        let since = Since::now();
        std::fs::write(tree.join("a/.envrc"), "evil\n").expect("envrc");
        let found = check_with(&trees, &[], since, Some(&cache), false);
        assert_eq!(found.len(), 1, "{found:?}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn hooks_path_is_read_from_core() {
        assert_eq!(
            hooks_path("[core]\n\tbare = false\n\thooksPath = .husky/_\n"),
            Some(".husky/_".into())
        );
        assert_eq!(hooks_path("[alias]\n hooksPath = x\n"), None);
        assert_eq!(
            lexical(Path::new("/w/a/../.husky/./_")),
            PathBuf::from("/w/.husky/_")
        );
    }

    #[test]
    fn entries_are_classified_by_name_and_place() {
        let root = Place {
            root: true,
            ..Place::default()
        };
        let git = Place {
            git_dir: true,
            ..Place::default()
        };
        let deep = Place::default();
        let f = Type::File;
        let d = Type::Directory;
        let l = Type::Symlink;
        let rows: &[(&str, Type, Place, Kind)] = &[
            (".bashrc", f, root, Kind::Surface("a shell rc file")),
            (".bashrc", f, deep, Kind::Plain),
            (
                ".envrc",
                f,
                deep,
                Kind::Surface("a file direnv or an editor runs"),
            ),
            (".vscode", d, deep, Kind::EditorDir),
            (".vscode", l, deep, Kind::Surface("editor configuration")),
            (".git", d, deep, Kind::Plain),
            (".git", l, deep, Kind::Surface("a .git symlink")),
            (
                ".git",
                f,
                deep,
                Kind::Surface("a .git file (gitdir: pointer)"),
            ),
            ("config", f, git, Kind::GitConfig),
            (
                "config",
                l,
                git,
                Kind::Surface("git config that is not a plain file"),
            ),
            ("config", f, deep, Kind::Plain),
            ("config.worktree", f, git, Kind::GitConfig),
            (".gitconfig", f, root, Kind::GitConfig),
            (".gitconfig", f, deep, Kind::Plain),
            ("commondir", f, git, Kind::Surface("git commondir")),
            ("hooks", d, git, Kind::HooksDir),
            ("hooks", d, deep, Kind::Plain),
            ("objects", d, git, Kind::Plain),
            (
                "COMMIT_EDITMSG",
                l,
                git,
                Kind::Surface("a symlink in a git dir (git writes through it)"),
            ),
            (
                "HEAD",
                l,
                Place {
                    in_git: true,
                    ..Place::default()
                },
                Kind::Surface("a symlink in a git dir (git writes through it)"),
            ),
            ("link", l, deep, Kind::Plain),
            (
                "pre-commit",
                f,
                Place {
                    hooks: true,
                    ..Place::default()
                },
                Kind::Hook,
            ),
            (
                "tasks.json",
                f,
                Place {
                    editor: true,
                    ..Place::default()
                },
                Kind::Surface("editor configuration"),
            ),
            ("main.rs", f, deep, Kind::Plain),
        ];
        for (name, ty, place, want) in rows {
            assert_eq!(
                classify(name.as_bytes(), *ty, *place),
                *want,
                "{name} {ty:?} {place:?}"
            );
        }
    }
}
