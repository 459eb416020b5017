//! Paths confined to the file roots by the kernel, not by string checks.
//!
//! A path is taken literally: absolute, no `..`, lexically under one of the
//! (canonical) file roots. Its directory is opened relative to a descriptor of
//! that root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS)`, so no component may be a symlink and nothing can
//! lead out of the root, even when a process on the device swaps a directory for
//! a symlink between our check and our open: there is no check apart from the
//! open. On kernels without `openat2` (before 5.6, or where seccomp refuses it)
//! the directory is walked one component at a time with `openat(O_NOFOLLOW)`
//! from the root's descriptor, which gives the same guarantee. The last
//! component is always opened relative to its directory's descriptor with
//! `O_NOFOLLOW`, and every further operation (create, rename, list, stat) is
//! made relative to that descriptor.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use adit_proto::reset_code;
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::files::{denied, Refusal};

/// A directory held open beneath a file root, and a name in it.
pub(crate) struct Located {
    /// The directory, opened beneath its root with no symlink on the way.
    pub(crate) dir: OwnedFd,
    /// The last component of the path (not resolved).
    pub(crate) name: OsString,
}

impl Located {
    /// Opens the name in the directory, never following a symlink there.
    pub(crate) fn open(&self, flags: OFlags, mode: u32) -> std::io::Result<std::fs::File> {
        self.open_name(&self.name, flags, mode)
    }

    /// Opens another name in the same directory (a partial file beside the target).
    pub(crate) fn open_name(
        &self,
        name: &OsStr,
        flags: OFlags,
        mode: u32,
    ) -> std::io::Result<std::fs::File> {
        let fd = rustix::fs::openat(
            &self.dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )?;
        Ok(std::fs::File::from(fd))
    }

    /// The name's own status (a symlink is reported as one, not followed).
    pub(crate) fn stat(&self) -> std::io::Result<rustix::fs::Stat> {
        Ok(rustix::fs::statat(
            &self.dir,
            &self.name,
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }
}

/// The partial file that a copy writes beside its target until it is verified:
/// `.NAME.adit-part`.
pub fn partial_name(name: &OsStr) -> OsString {
    let mut partial = OsString::from(".");
    partial.push(name);
    partial.push(".adit-part");
    partial
}

/// Which way directories are opened beneath a root (tests force the fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolver {
    /// `openat2`, falling back to the walk when the kernel lacks it.
    Openat2,
    /// One `openat(O_NOFOLLOW)` per component.
    #[cfg_attr(not(test), allow(dead_code))]
    Walk,
}

/// The lexical form of `path` (absolute, no `..`; `.` and repeated `/` dropped).
fn lexical(path: &str) -> Result<PathBuf, Refusal> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(denied(format!("path {path} is not absolute")));
    }
    if path.contains('\0') {
        return Err(denied(format!("path {path:?} contains a NUL byte")));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                return Err(denied(format!(
                    "path {path} is refused: '..' is not allowed"
                )))
            }
            Component::Prefix(_) => return Err(denied(format!("path {path} is not valid"))),
        }
    }
    Ok(out)
}

/// The deepest root `path` lies under (or is), and the path relative to it.
fn root_of<'a>(
    path: &Path,
    shown: &str,
    roots: &'a [PathBuf],
) -> Result<(&'a Path, PathBuf), Refusal> {
    roots
        .iter()
        .filter_map(|root| {
            path.strip_prefix(root)
                .ok()
                .map(|rel| (root.as_path(), rel.to_path_buf()))
        })
        .max_by_key(|(root, _)| root.as_os_str().len())
        .ok_or_else(|| denied(format!("path {shown} is outside this agent's file roots")))
}

/// Why opening beneath a root failed, as the client should read it.
pub(crate) fn refusal(shown: &str, e: std::io::Error) -> Refusal {
    match e.raw_os_error() {
        Some(libc::ELOOP) => denied(format!(
            "path {shown} leads through a symlink; file access does not follow symlinks"
        )),
        Some(libc::EXDEV) => denied(format!("path {shown} leads out of this agent's file roots")),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            Refusal(reset_code::DENIED, format!("{shown}: {e}"))
        }
        _ => Refusal(reset_code::UNREACHABLE, format!("{shown}: {e}")),
    }
}

/// Opens `rel` (a directory path relative to `root`, possibly empty) beneath it.
fn open_dir_beneath(root: &Path, rel: &Path, how: Resolver) -> std::io::Result<OwnedFd> {
    let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root_fd = rustix::fs::open(root, dir_flags, Mode::empty())?;
    if rel.as_os_str().is_empty() {
        return Ok(root_fd);
    }
    if how == Resolver::Openat2 {
        match rustix::fs::openat2(
            &root_fd,
            rel,
            dir_flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => return Ok(fd),
            // No openat2 here (old kernel, seccomp): walk instead.
            Err(Errno::NOSYS) | Err(Errno::PERM) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut fd = root_fd;
    for part in rel.components() {
        let Component::Normal(part) = part else {
            return Err(Errno::XDEV.into());
        };
        fd = match rustix::fs::openat(
            fd.as_fd(),
            part,
            dir_flags | OFlags::NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(next) => next,
            // O_DIRECTORY wins over O_NOFOLLOW's ELOOP; say which it was.
            Err(Errno::NOTDIR)
                if rustix::fs::statat(&fd, part, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                    rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
                }) =>
            {
                return Err(Errno::LOOP.into())
            }
            Err(e) => return Err(e.into()),
        };
    }
    Ok(fd)
}

/// Locates `path`: its directory opened beneath its root, and its last component.
pub(crate) fn locate(path: &str, roots: &[PathBuf]) -> Result<Located, Refusal> {
    locate_with(path, roots, Resolver::Openat2)
}

pub(crate) fn locate_with(
    path: &str,
    roots: &[PathBuf],
    how: Resolver,
) -> Result<Located, Refusal> {
    let lexical = lexical(path)?;
    let (Some(parent), Some(name)) = (lexical.parent(), lexical.file_name()) else {
        return Err(denied(format!("path {path} does not name a file")));
    };
    let (root, rel) = root_of(parent, path, roots)?;
    let dir = open_dir_beneath(root, &rel, how).map_err(|e| refusal(path, e))?;
    Ok(Located {
        dir,
        name: name.to_owned(),
    })
}

/// Opens the directory `path` names (a root itself, or beneath one) for listing.
pub(crate) fn open_dir(path: &str, roots: &[PathBuf], how: Resolver) -> Result<OwnedFd, Refusal> {
    let lexical = lexical(path)?;
    let (root, rel) = root_of(&lexical, path, roots)?;
    open_dir_beneath(root, &rel, how).map_err(|e| refusal(path, e))
}

/// Whether `path` names one of the roots itself (lexically).
pub(crate) fn is_root(path: &str, roots: &[PathBuf]) -> bool {
    lexical(path).is_ok_and(|p| roots.contains(&p))
}

/// `name` as bytes for messages.
pub(crate) fn shown(name: &OsStr) -> String {
    String::from_utf8_lossy(name.as_bytes()).into_owned()
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    struct Tree {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    /// root/sub/a.txt, root/d/secret.txt ("inside"), outside/secret.txt ("OUTSIDE"),
    /// outside/outside-only.txt, root/escape -> outside, root/link.txt -> outside/secret.txt.
    fn tree() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(tmp.path()).unwrap();
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("sub/a.txt"), "a").unwrap();
        std::fs::write(root.join("d/secret.txt"), "inside").unwrap();
        std::fs::write(outside.join("secret.txt"), "OUTSIDE").unwrap();
        std::fs::write(outside.join("outside-only.txt"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("link.txt")).unwrap();
        Tree {
            _tmp: tmp,
            root,
            outside,
        }
    }

    fn read(at: &Located) -> std::io::Result<String> {
        let mut s = String::new();
        at.open(OFlags::RDONLY, 0)?.read_to_string(&mut s)?;
        Ok(s)
    }

    #[test]
    fn paths_resolve_beneath_roots_only() {
        let t = tree();
        let roots = vec![t.root.clone()];
        let p = |rel: &str| format!("{}/{rel}", t.root.display());
        for how in [Resolver::Openat2, Resolver::Walk] {
            let ok = |path: &str| locate_with(path, &roots, how).unwrap();
            assert_eq!(read(&ok(&p("sub/a.txt"))).unwrap(), "a");
            assert_eq!(read(&ok(&p("./sub//a.txt"))).unwrap(), "a");
            assert_eq!(ok(&p("new.bin")).name, "new.bin");
            let refused = |path: String| locate_with(&path, &roots, how).err().unwrap().1;
            assert!(refused(p("sub/../../outside/x")).contains("'..'"));
            let why = refused(p("escape/secret.txt"));
            assert!(why.contains("symlink"), "{how:?}: {why}");
            assert!(refused(format!("{}/x", t.outside.display())).contains("outside"));
            assert!(refused("relative/x".into()).contains("absolute"));
            // A sibling whose name extends the root's is not under it.
            assert!(refused(format!("{}ot/x", t.root.display())).contains("outside"));
            // The last component is never followed.
            let link = ok(&p("link.txt"));
            assert_eq!(read(&link).unwrap_err().raw_os_error(), Some(libc::ELOOP));
            // Listing: a directory beneath, the root itself, never through a symlink.
            assert!(open_dir(&p("sub"), &roots, how).is_ok());
            assert!(open_dir(&t.root.display().to_string(), &roots, how).is_ok());
            assert!(open_dir(&p("escape"), &roots, how)
                .err()
                .unwrap()
                .1
                .contains("symlink"));
        }
    }

    /// A process on the device swaps `root/d` (a directory) with `root/swap` (a
    /// symlink to a directory outside the root) with `renameat2(RENAME_EXCHANGE)`
    /// as fast as it can, while get/cat, put and ls run in a loop: nothing outside
    /// the root is ever read, written or listed.
    #[test]
    fn a_directory_swapped_for_a_symlink_never_leads_out() {
        const TRIES: usize = 1_000;
        let t = tree();
        std::os::unix::fs::symlink(&t.outside, t.root.join("swap")).unwrap();
        let roots = vec![t.root.clone()];
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let stop = stop.clone();
            let root = t.root.clone();
            std::thread::spawn(move || {
                let dir =
                    rustix::fs::open(&root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                        .unwrap();
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    rustix::fs::renameat_with(
                        &dir,
                        "d",
                        &dir,
                        "swap",
                        rustix::fs::RenameFlags::EXCHANGE,
                    )
                    .unwrap();
                    swaps += 1;
                }
                swaps
            })
        };
        let secret = format!("{}/d/secret.txt", t.root.display());
        let dir = format!("{}/d", t.root.display());
        let mut escapes = Vec::new();
        let (mut reads, mut writes, mut lists) = (0, 0, 0);
        for how in [Resolver::Openat2, Resolver::Walk] {
            for i in 0..TRIES {
                // get / cat
                if let Ok(at) = locate_with(&secret, &roots, how) {
                    if let Ok(s) = read(&at) {
                        reads += 1;
                        if s != "inside" {
                            escapes.push(format!("{how:?} read {s:?}"));
                        }
                    }
                }
                // put: the partial file is created beside the target
                let name = format!("{}/d/put-{i}.txt", t.root.display());
                if let Ok(at) = locate_with(&name, &roots, how) {
                    let part = partial_name(&at.name);
                    if let Ok(mut f) = at.open_name(&part, OFlags::WRONLY | OFlags::CREATE, 0o600) {
                        f.write_all(b"p").unwrap();
                        writes += 1;
                    }
                }
                // ls
                if let Ok(v) = crate::query::ls_with(&dir, &roots, how) {
                    lists += 1;
                    let names = v["entries"].to_string();
                    if names.contains("outside-only") {
                        escapes.push(format!("{how:?} listed {names}"));
                    }
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        let written_outside: Vec<_> = std::fs::read_dir(&t.outside)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().contains("put-"))
            .collect();
        eprintln!(
            "{} tries per operation and resolver, {swaps} swaps: {reads} reads, {writes} writes, {lists} listings inside the root",
            TRIES
        );
        assert!(
            escapes.is_empty(),
            "{} escapes: {:?}",
            escapes.len(),
            &escapes[..escapes.len().min(5)]
        );
        assert!(
            written_outside.is_empty(),
            "written outside the root: {written_outside:?}"
        );
        // The race was real: the swapper ran throughout, and both outcomes occurred.
        assert!(swaps > 1_000, "only {swaps} swaps");
        assert!(reads > 0 && reads < 2 * TRIES, "reads {reads}");
        assert!(lists > 0, "no listing succeeded");
    }
}
