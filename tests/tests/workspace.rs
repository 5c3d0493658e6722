//! The workspace: the agent's to write, the user's to trust afterwards.
//!
//! As root, root-owned (and other users') workspaces are writable by the
//! unprivileged agent through idmapped mounts while files keep their owner
//! on disk; a run leaves no litter whatever way it ends; and nothing the
//! host's git, shells, direnv or editors run can be planted by the agent.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{is_root, random_token, run_to_end, set_mode, write_file, RunOutput, TempDir};

/// `sandbox run --audit-log AUDIT -- sh -c SCRIPT` in `ws`, as users run it
/// (from the workspace, no --workspace, no chown).
fn run_in(ws: &Path, audit: &Path, opts: &[&str], script: &str) -> RunOutput {
    let mut cmd = Command::new(common::sandbox_bin());
    cmd.arg("run")
        .arg("--audit-log")
        .arg(audit)
        .args(opts)
        .args(["--", "/bin/sh", "-c", script])
        .current_dir(ws)
        .stdin(std::process::Stdio::null());
    run_to_end(cmd)
}

/// Host shell in `ws` (a test fixture step, like a user's own commands).
fn host_sh(ws: &Path, script: &str) -> String {
    let out = Command::new("/bin/sh")
        .args(["-c", script])
        .current_dir(ws)
        .env("HOME", ws.parent().unwrap_or(Path::new("/tmp")))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("run /bin/sh");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Every entry under `root` (not following symlinks): mode, owner, size.
fn listing(root: &Path) -> BTreeMap<PathBuf, (u32, u32, u32, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir").flatten() {
            let path = entry.path();
            let m = std::fs::symlink_metadata(&path).expect("lstat");
            if m.is_dir() {
                stack.push(path.clone());
            }
            let size = if m.is_dir() { 0 } else { m.len() };
            out.insert(
                path.strip_prefix(root).expect("under root").to_path_buf(),
                (m.mode(), m.uid(), m.gid(), size),
            );
        }
    }
    out
}

fn owner(path: &Path) -> (u32, u32) {
    let m =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (m.uid(), m.gid())
}

/// As root the agent is uid 65534, yet it edits and creates files in a
/// root-owned workspace (0755 and a `mktemp -d`-style 0700), and on disk
/// everything stays root's.
#[test]
fn root_owned_workspaces_are_writable_and_stay_roots() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    for mode in [0o755, 0o700] {
        let ws = TempDir::new("/tmp", "airlock-rootws");
        set_mode(ws.path(), mode);
        let audit = TempDir::new("/tmp", "airlock-audit");
        write_file(&ws.join("f"), "v1\n", 0o644);
        let out = run_in(
            ws.path(),
            &audit.join("a.jsonl"),
            &[],
            "id -u; echo v2 >> f && touch new && mkdir d && echo ok > d/x && echo done",
        );
        out.assert_code(0, "the agent writes a root-owned workspace");
        assert!(out.stdout.starts_with("65534\n"), "{out}");
        assert!(out.stdout.contains("done"), "{out}");
        assert_eq!(
            std::fs::read_to_string(ws.join("f")).expect("f"),
            "v1\nv2\n"
        );
        for p in ["f", "new", "d", "d/x"] {
            assert_eq!(owner(&ws.join(p)), (0, 0), "{p} in a {mode:o} workspace");
        }
        assert_eq!(owner(ws.path()), (0, 0));
        assert_eq!(
            std::fs::metadata(ws.path()).expect("ws").mode() & 0o7777,
            mode
        );
    }
}

/// Root running the agent over another user's checkout: the files stay
/// that user's (the agent is still 65534, never the user).
#[test]
fn a_workspace_owned_by_another_user_keeps_its_owner() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ws = TempDir::new("/tmp", "airlock-userws");
    common::chown(ws.path(), 1000, 1000);
    let audit = TempDir::new("/tmp", "airlock-audit");
    let out = run_in(ws.path(), &audit.join("a.jsonl"), &[], "id -u; touch new");
    out.assert_code(0, "the agent writes uid 1000's workspace");
    assert!(out.stdout.starts_with("65534\n"), "{out}");
    assert_eq!(owner(&ws.join("new")), (1000, 1000));
}

/// A profile `write` path owned by root is writable too, and stays root's.
#[test]
fn a_root_owned_write_path_is_writable() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let ws = TempDir::new("/tmp", "airlock-ws");
    let extra = TempDir::new("/tmp", "airlock-extra");
    set_mode(extra.path(), 0o700);
    let profile = ws.join("p.toml");
    write_file(
        &profile,
        &format!("[filesystem]\nwrite = [\"{}\"]\n", extra.display()),
        0o644,
    );
    let audit = TempDir::new("/tmp", "airlock-audit");
    let profile = profile.display().to_string();
    let out = run_in(
        ws.path(),
        &audit.join("a.jsonl"),
        &["--profile", &profile],
        &format!("echo hi > {}/made && echo ok", extra.display()),
    );
    out.assert_code(0, "the agent writes a root-owned write path");
    assert_eq!(owner(&extra.join("made")), (0, 0));
}

/// A filesystem that cannot be idmapped (ramfs): a root-owned workspace is
/// refused with the cause and the fix; one owned by uid 1000 runs the agent
/// as 1000 (never root).
#[test]
fn a_tree_that_cannot_be_idmapped_is_refused_or_run_as_its_owner() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mnt = TempDir::new("/tmp", "airlock-ramfs");
    let status = Command::new("mount")
        .args(["-t", "ramfs", "ramfs"])
        .arg(mnt.path())
        .status()
        .expect("mount");
    assert!(status.success(), "mount ramfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path().to_path_buf());
    let ws = mnt.join("ws");
    std::fs::create_dir(&ws).expect("mkdir");
    set_mode(&ws, 0o755);
    let audit = TempDir::new("/tmp", "airlock-audit");
    let out = run_in(&ws, &audit.join("a.jsonl"), &[], "touch x");
    out.assert_code(125, "a root-owned ramfs workspace is refused");
    assert!(
        out.stderr
            .contains("belongs to root and cannot be mounted idmapped here")
            && out.stderr.contains("Fix:"),
        "{out}"
    );
    assert!(!ws.join("x").exists());

    common::chown(&ws, 1000, 1000);
    let out = run_in(&ws, &audit.join("a.jsonl"), &[], "id -u; touch x");
    out.assert_code(0, "uid 1000's ramfs workspace runs as 1000");
    assert!(out.stdout.starts_with("1000\n"), "{out}");
    assert_eq!(owner(&ws.join("x")), (1000, 1000));
}

/// Files the agent makes in an idmapped tree are root's on disk: a
/// set-user-ID bit would hand root to anyone who can reach the tree.
#[test]
fn setuid_and_setgid_files_cannot_be_made() {
    let ws = TempDir::new("/tmp", "airlock-ws");
    let audit = TempDir::new("/tmp", "airlock-audit");
    let out = run_in(
        ws.path(),
        &audit.join("a.jsonl"),
        &[],
        "cp /bin/true t; chmod 4755 t || echo REFUSED-suid; chmod 2755 t || echo REFUSED-sgid; \
         python3 -c 'import os; os.open(\"u\", os.O_CREAT | os.O_WRONLY, 0o4755)' 2>/dev/null \
           || echo REFUSED-open; chmod 755 t && echo plain-ok",
    );
    out.assert_code(0, "script runs");
    for want in ["REFUSED-suid", "REFUSED-sgid", "REFUSED-open", "plain-ok"] {
        assert!(out.stdout.contains(want), "{want}: {out}");
    }
    for (p, m) in listing(ws.path()) {
        assert_eq!(m.0 & 0o6000, 0, "{} has a set-id bit", p.display());
    }
}

/// A git repository (with a commit) and a plain directory, for the litter
/// tests.
fn fixtures() -> Vec<(&'static str, TempDir)> {
    let repo = TempDir::new("/tmp", "airlock-litter-git");
    host_sh(
        repo.path(),
        "git init -q . && echo a > a && git add a && git commit -qm a",
    );
    let plain = TempDir::new("/tmp", "airlock-litter-plain");
    write_file(&plain.join("a"), "a\n", 0o644);
    vec![("git repository", repo), ("plain directory", plain)]
}

/// After a normal exit, a crash of the agent and a timeout, the workspace
/// is exactly as it was: no placeholders, no read-only leftovers, and
/// `git init` still works afterwards.
#[test]
fn a_run_leaves_no_litter_whatever_its_ending() {
    for (kind, ws) in fixtures() {
        let before = listing(ws.path());
        let audit = TempDir::new("/tmp", "airlock-audit");
        let log = audit.join("a.jsonl");
        let endings: [(&str, &[&str], &str, i32); 3] = [
            ("normal exit", &[], "true", 0),
            ("crash", &[], "kill -SEGV $$", 139),
            ("timeout", &["--timeout", "1s"], "sleep 30", 124),
        ];
        for (ending, opts, script, code) in endings {
            let out = run_in(ws.path(), &log, opts, script);
            out.assert_code(code, ending);
            assert_eq!(listing(ws.path()), before, "{kind} after {ending}: {out}");
        }
        if kind == "plain directory" {
            let out = host_sh(ws.path(), "git init -q . && echo INIT-OK");
            assert!(out.contains("INIT-OK"), "git init after runs: {out}");
        } else {
            let out = host_sh(ws.path(), "git status --porcelain");
            assert_eq!(out, "", "git status lists leftovers");
        }
    }
}

/// SIGKILL of the supervisor while the agent runs: the sandbox goes, the
/// workspace is as it was, and what the agent planted is still quarantined
/// (by init, once it sees the supervisor gone).
#[test]
fn a_killed_supervisor_leaves_no_litter_and_no_planted_code() {
    for (kind, ws) in fixtures() {
        let before = listing(ws.path());
        let audit = TempDir::new("/tmp", "airlock-audit");
        let marker = common::sleep_marker(7);
        let mut cmd = Command::new(common::sandbox_bin());
        cmd.arg("run")
            .arg("--audit-log")
            .arg(audit.join("a.jsonl"))
            .args(["--", "/bin/sh", "-c"])
            .arg(format!(
                "echo 'echo hi' > .envrc; echo started; exec sleep {marker}"
            ))
            .current_dir(ws.path())
            .stdin(std::process::Stdio::null());
        let mut run = common::Streaming::spawn(cmd);
        run.wait_for_line("started", common::RUN_DEADLINE);
        run.signal(libc::SIGKILL);
        let out = run.finish();
        let left = common::wait_until_gone(&marker, Duration::from_secs(30));
        assert!(
            left.is_empty(),
            "{kind}: sandbox outlived its supervisor: {left:?}"
        );
        let mut after = listing(ws.path());
        let quarantined = after.remove(Path::new(".envrc.airlock-quarantine"));
        assert!(
            quarantined.is_some(),
            "{kind}: .envrc not quarantined: {out}"
        );
        assert_eq!(after, before, "{kind}: {out}");
        assert!(
            out.stderr
                .contains(".envrc (a file direnv or an editor runs); quarantined"),
            "{kind}: {out}"
        );
    }
}

/// One attack on the host's next git/shell/editor: `prepare` runs on the
/// host first, `script` in the sandbox (`MARK` is replaced by a host path
/// the payload would create); afterwards the host runs git in the
/// workspace and in `sub/`, and nothing may have created MARK. Each path
/// in `quarantined` must be reported and moved aside.
fn attack(name: &str, prepare: &str, script: &str, quarantined: &[&str]) {
    let ws = TempDir::new("/tmp", "airlock-attack");
    let audit = TempDir::new("/tmp", "airlock-audit");
    let mark = format!("/tmp/airlock-pwned-{}", random_token());
    host_sh(
        ws.path(),
        &format!(
            "git init -q . && echo a > a && git add a && git commit -qm a && {}",
            if prepare.is_empty() { "true" } else { prepare }
        ),
    );
    let out = run_in(
        ws.path(),
        &audit.join("a.jsonl"),
        &[],
        &script.replace("MARK", &mark),
    );
    // What the user does next, in the workspace and in the nested repo.
    let host = host_sh(
        ws.path(),
        "git status >/dev/null 2>&1; git diff >/dev/null 2>&1; git log -1 >/dev/null 2>&1; \
         git x >/dev/null 2>&1; git checkout -q -b next >/dev/null 2>&1; \
         for d in sub sub2 sub3 evil; do [ -d $d ] && (cd $d && git status >/dev/null 2>&1; \
         git checkout -q -b next >/dev/null 2>&1; git diff >/dev/null 2>&1); done; true",
    );
    let pwned = Path::new(&mark).exists();
    let _ = std::fs::remove_file(&mark);
    assert!(
        !pwned,
        "{name}: the host ran the agent's code\n{out}\n{host}"
    );
    for q in quarantined {
        let path = ws.join(q);
        assert!(
            out.stderr.contains(&format!("{}", path.display()))
                && out.stderr.contains("quarantined as"),
            "{name}: {q} not reported\n{out}"
        );
        assert!(
            !path.exists()
                || std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir())
                    && q.ends_with(".git"),
            "{name}: {q} still in place"
        );
        let log = std::fs::read_to_string(audit.join("a.jsonl")).expect("audit log");
        assert!(
            log.lines().any(|l| l.contains("workspace.tamper_reverted")
                && l.contains(&path.display().to_string())),
            "{name}: no audit event for {q}"
        );
    }
}

#[test]
fn renaming_git_away_and_planting_a_new_one_is_refused() {
    attack(
        "rename .git",
        "",
        "mv .git .git-old 2>/dev/null; rm -rf .git 2>/dev/null; mkdir -p .g && cp -r .git/objects .g/ \
         && printf '[core]\\n\\tfsmonitor = touch MARK\\n' > .g/config && mv -T .g .git 2>/dev/null; \
         printf '[core]\\n\\tfsmonitor = touch MARK\\n' >> .git/config 2>/dev/null; true",
        &[],
    );
}

#[test]
fn a_planted_commondir_is_quarantined() {
    attack(
        "commondir",
        "",
        "mkdir evil && cp -r .git/HEAD .git/objects .git/refs evil/ && \
         printf '[core]\\n\\tfsmonitor = touch MARK\\n' > evil/config && \
         echo \"$PWD/evil\" > .git/commondir",
        &[".git/commondir", "evil/config"],
    );
}

#[test]
fn a_gitdir_file_pointing_at_the_agents_directory_is_quarantined() {
    attack(
        "gitdir file",
        "mkdir sub",
        "mkdir -p /tmp/g && cd /tmp/g && git init -q . && cd - >/dev/null && \
         cp -r /tmp/g/.git evil && printf '[core]\\n\\tfsmonitor = touch MARK\\n' >> evil/config && \
         echo \"gitdir: $PWD/evil\" > sub/.git",
        &["sub/.git", "evil/config"],
    );
}

#[test]
fn a_nested_repositorys_config_is_quarantined() {
    attack(
        "nested repository",
        "mkdir sub && (cd sub && git init -q . && echo b > b && git add b && git commit -qm b)",
        "git -C sub config core.fsmonitor 'touch MARK'",
        &["sub/.git/config"],
    );
}

/// Every config key git runs or follows, in the nested repository's
/// config or its config.worktree (with extensions.worktreeConfig).
#[test]
fn every_command_running_config_key_is_quarantined() {
    let keys = [
        "core.hooksPath /tmp",
        "core.sshCommand 'touch MARK'",
        "core.pager 'touch MARK'",
        "core.editor 'touch MARK'",
        "alias.x '!touch MARK'",
        "include.path /tmp/included",
        "includeIf.gitdir:/.path /tmp/included",
        "filter.f.clean 'touch MARK'",
        "filter.f.smudge 'touch MARK'",
        "diff.d.textconv 'touch MARK'",
        "credential.helper '!touch MARK'",
    ];
    for key in keys {
        attack(
            key,
            "mkdir sub && (cd sub && git init -q . && echo b > b && git add b && git commit -qm b)",
            &format!("git -C sub config {key}"),
            &["sub/.git/config"],
        );
        attack(
            &format!("{key} in config.worktree"),
            "mkdir sub && (cd sub && git init -q . && echo b > b && git add b && git commit -qm b)",
            &format!(
                "git -C sub config extensions.worktreeConfig true && \
                 git -C sub config --worktree {key}"
            ),
            &["sub/.git/config.worktree"],
        );
    }
}

#[test]
fn executable_hooks_in_a_new_nested_repository_are_quarantined() {
    attack(
        "hooks in a new repository",
        "",
        "git init -q sub2 && printf '#!/bin/sh\\ntouch MARK\\n' > sub2/.git/hooks/post-checkout && \
         chmod +x sub2/.git/hooks/post-checkout && cp sub2/.git/hooks/post-checkout sub2/.git/hooks/pre-commit",
        &[
            "sub2/.git/hooks/post-checkout",
            "sub2/.git/hooks/pre-commit",
        ],
    );
}

#[test]
fn a_git_symlink_is_quarantined() {
    attack(
        ".git symlink",
        "mkdir sub3",
        "git init -q --bare /tmp/evil.git && printf '[core]\\n\\tfsmonitor = touch MARK\\n' >> /tmp/evil.git/config && \
         mkdir -p evil && cp -r /tmp/evil.git/. evil/ && ln -s ../evil sub3/.git",
        &["sub3/.git", "evil/config"],
    );
}

#[test]
fn hardlinks_to_protected_files_change_nothing() {
    attack(
        "hardlinks",
        "mkdir sub && (cd sub && git init -q . && echo b > b && git add b && git commit -qm b)",
        "ln .git/config top 2>/dev/null && printf '[core]\\n\\tfsmonitor = touch MARK\\n' >> top; \
         ln sub/.git/config nested && printf '[core]\\n\\tfsmonitor = touch MARK\\n' >> nested",
        &["sub/.git/config"],
    );
}

#[test]
fn envrc_rc_files_and_editor_tasks_are_quarantined() {
    attack(
        "shell, direnv and editor files",
        "mkdir sub",
        "echo 'touch MARK' > .envrc; echo 'touch MARK' > sub/.envrc; echo 'touch MARK' > .bashrc; \
         echo 'touch MARK' > .profile; mkdir -p .vscode && echo '{\"tasks\":[]}' > .vscode/tasks.json",
        &[".envrc", "sub/.envrc", ".bashrc", ".profile", ".vscode/tasks.json"],
    );
}

/// The existing top-level config and hooks cannot be changed at all.
#[test]
fn the_top_level_config_and_hooks_are_read_only() {
    let ws = TempDir::new("/tmp", "airlock-attack");
    let audit = TempDir::new("/tmp", "airlock-audit");
    host_sh(ws.path(), "git init -q . && printf x > .bashrc");
    let config = std::fs::read(ws.join(".git/config")).expect("config");
    let out = run_in(
        ws.path(),
        &audit.join("a.jsonl"),
        &[],
        "for f in .git/config .bashrc .git/hooks/pre-commit; do (echo evil >> $f) 2>/dev/null && echo WROTE $f; \
         mv $f $f.x 2>/dev/null && echo MOVED $f; done; git config core.fsmonitor x 2>/dev/null && echo SET; echo done",
    );
    out.assert_code(0, "script runs");
    assert!(out.stdout.contains("done"), "{out}");
    assert!(
        !out.stdout.contains("WROTE")
            && !out.stdout.contains("MOVED")
            && !out.stdout.contains("SET"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(ws.join(".git/config")).expect("config"),
        config
    );
    assert_eq!(
        std::fs::read_to_string(ws.join(".bashrc")).expect("rc"),
        "x"
    );
}

/// Agents keep working with git inside: add, commit, branch, checkout,
/// stash, merge, rebase, and init/clone of new repositories, whose
/// template config and sample hooks are left alone.
#[test]
fn agents_keep_working_with_git() {
    let ws = TempDir::new("/tmp", "airlock-git");
    let audit = TempDir::new("/tmp", "airlock-audit");
    host_sh(
        ws.path(),
        "git init -q -b main . && echo a > a && git add a && git commit -qm a",
    );
    let out = run_in(
        ws.path(),
        &audit.join("a.jsonl"),
        &["--env", "GIT_AUTHOR_NAME=t", "--env", "GIT_AUTHOR_EMAIL=t@example.com",
          "--env", "GIT_COMMITTER_NAME=t", "--env", "GIT_COMMITTER_EMAIL=t@example.com"],
        "set -e; echo b > b; git add b; git commit -qm b; git branch feat; git checkout -q feat; \
         echo c > c; git add c; git commit -qm c; git checkout -q main; echo d > d; git stash -u -q; \
         git stash pop -q; git add d; git commit -qm d; git merge -q --no-edit feat; \
         git checkout -q -b other HEAD~1; git rebase -q main; git checkout -q main; \
         git init -q newrepo; git clone -q . cloned; git -C cloned log -1 --format=%s; echo ALL-OK",
    );
    out.assert_code(0, "git works inside");
    assert!(out.stdout.contains("ALL-OK"), "{out}");
    assert!(!out.stderr.contains("quarantined"), "{out}");
    let log = host_sh(ws.path(), "git log --format=%s main | head -3");
    assert!(log.contains("Merge branch 'feat'"), "{log}");
    assert!(ws.join("newrepo/.git/config").exists());
    assert!(ws.join("cloned/.git/config").exists());
}

/// A repository whose config moved its hooks into the work tree
/// (`core.hooksPath`, as husky does): those hooks are code too.
#[test]
fn hooks_under_the_configured_hooks_path_are_quarantined() {
    attack(
        "core.hooksPath in the work tree",
        "mkdir .githooks && git config core.hooksPath .githooks",
        "printf '#!/bin/sh\\ntouch MARK\\n' > .githooks/post-checkout && chmod +x .githooks/post-checkout",
        &[".githooks/post-checkout"],
    );
}

/// Git takes a directory for a git dir when its `HEAD` is a symlink into
/// `refs/` or its `objects` a symlink to a directory: the config beside
/// them is still checked.
#[test]
fn a_nested_repository_with_a_symlinked_head_or_objects_is_checked() {
    attack(
        "symlinked HEAD",
        "",
        "mkdir -p sub/.git/refs sub/.git/objects && ln -s refs/heads/main sub/.git/HEAD && \
         printf '[core]\\n\\tfsmonitor = touch MARK\\n' > sub/.git/config",
        &["sub/.git/config"],
    );
    attack(
        "symlinked objects",
        "",
        "git init -q sub2 && rm -rf sub2/.git/objects && ln -s ../../.git/objects sub2/.git/objects && \
         printf '[core]\\n\\tfsmonitor = touch MARK\\n' >> sub2/.git/config",
        &["sub2/.git/config"],
    );
}

/// The agent plants code, then takes every permission off the directories
/// holding it (000, read-only, no write). Root on the host still enters
/// them; init's check after a SIGKILL of `sandbox` runs without
/// capabilities, and must enter them too (as their owner) and quarantine
/// what is inside, leaving the modes as the agent set them.
#[test]
fn directories_locked_after_planting_are_still_checked_by_init() {
    let ws = TempDir::new("/tmp", "airlock-attack");
    let audit = TempDir::new("/tmp", "airlock-audit");
    let mark = format!("/tmp/airlock-pwned-{}", random_token());
    host_sh(
        ws.path(),
        "git init -q . && echo a > a && git add a && git commit -qm a",
    );
    let marker = common::sleep_marker(8);
    let mut cmd = Command::new(common::sandbox_bin());
    cmd.arg("run")
        .arg("--audit-log")
        .arg(audit.join("a.jsonl"))
        .args(["--", "/bin/sh", "-c"])
        .arg(format!(
            "mkdir d e f && git init -q d/r && git -C d/r config core.fsmonitor 'touch {mark}' && \
             echo 'touch {mark}' > e/.envrc && echo 'touch {mark}' > f/.envrc && \
             chmod 000 d && chmod 444 e && chmod 555 f && echo started; exec sleep {marker}"
        ))
        .current_dir(ws.path())
        .stdin(std::process::Stdio::null());
    let mut run = common::Streaming::spawn(cmd);
    run.wait_for_line("started", common::RUN_DEADLINE);
    run.signal(libc::SIGKILL);
    let out = run.finish();
    let left = common::wait_until_gone(&marker, Duration::from_secs(30));
    assert!(left.is_empty(), "sandbox outlived its supervisor: {left:?}");
    host_sh(
        &ws.join("d/r"),
        "git status >/dev/null 2>&1; git diff >/dev/null 2>&1; true",
    );
    let pwned = Path::new(&mark).exists();
    let _ = std::fs::remove_file(&mark);
    assert!(!pwned, "the host ran the agent's code\n{out}");
    for (q, mode) in [
        ("d/r/.git/config", 0o000),
        ("e/.envrc", 0o444),
        ("f/.envrc", 0o555),
    ] {
        let moved = format!("quarantined as {}.airlock-quarantine", ws.join(q).display());
        assert!(out.stderr.contains(&moved), "{q} not reported: {out}");
        assert!(!ws.join(q).exists(), "{q} still in place: {out}");
        let dir = ws.join(q.split('/').next().unwrap_or(q));
        assert_eq!(
            std::fs::metadata(&dir).expect("dir").mode() & 0o7777,
            mode,
            "{} keeps the agent's mode",
            dir.display()
        );
    }
}

/// Symlinks the agent plants inside `.git` (a reflog, COMMIT_EDITMSG): the
/// host's next commit and checkout, as root, would write through them to
/// any file, e.g. append a reflog line naming the agent's branch
/// (`x;touch${IFS}MARK;#`) to a shell rc file. They are quarantined, and
/// the files outside stay as they were.
#[test]
fn symlinks_planted_in_git_cannot_make_the_hosts_git_write_outside() {
    let ws = TempDir::new("/tmp", "airlock-attack");
    let outside = TempDir::new("/tmp", "airlock-outside");
    let audit = TempDir::new("/tmp", "airlock-audit");
    write_file(&outside.join("rc"), "# rc\n", 0o644);
    write_file(&outside.join("msg"), "keep\n", 0o644);
    host_sh(
        ws.path(),
        "git init -q -b main . && echo a > a && git add a && git commit -qm a && \
         mkdir sub && (cd sub && git init -q . && git commit -q --allow-empty -m b)",
    );
    let out = run_in(
        ws.path(),
        &audit.join("a.jsonl"),
        &[],
        &format!(
            "git branch 'x;touch${{IFS}}/tmp/pwned;#'; rm -f .git/logs/HEAD && \
             ln -s {rc} .git/logs/HEAD && ln -sf {msg} .git/COMMIT_EDITMSG && \
             rm -rf sub/.git/logs && ln -s {dir} sub/.git/logs && echo planted",
            rc = outside.join("rc").display(),
            msg = outside.join("msg").display(),
            dir = outside.path().display(),
        ),
    );
    assert!(out.stdout.contains("planted"), "{out}");
    host_sh(
        ws.path(),
        "git commit -q --allow-empty -m host; git checkout -q 'x;touch${IFS}/tmp/pwned;#'; \
         cd sub && git commit -q --allow-empty -m host2; true",
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("rc")).expect("rc"),
        "# rc\n"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("msg")).expect("msg"),
        "keep\n"
    );
    assert!(!outside.join("HEAD").exists(), "sub's reflog went outside");
    for q in [".git/logs/HEAD", ".git/COMMIT_EDITMSG", "sub/.git/logs"] {
        let moved = format!("quarantined as {}.airlock-quarantine", ws.join(q).display());
        assert!(out.stderr.contains(&moved), "{q} not reported: {out}");
    }
}

/// A repository whose config includes a file in the work tree (a shared
/// `../.gitconfig`, a common setup): that file is config the host's git
/// reads, so what the agent writes there is quarantined too.
#[test]
fn a_config_file_included_from_the_work_tree_is_checked() {
    attack(
        "include.path into the work tree",
        "git config include.path ../.gitconfig && touch .gitconfig && mkdir cfg && \
         git config 'includeIf.gitdir:/.path' ../cfg/shared",
        "printf '[core]\\n\\tfsmonitor = touch MARK\\n' > .gitconfig && \
         printf '[alias]\\n\\tx = !touch MARK\\n' > cfg/shared",
        &[".gitconfig", "cfg/shared"],
    );
}

/// The agent leaves an interactive rebase stopped with `exec` lines still
/// to do: `git status` on the host says a rebase is in progress, and the
/// user's `git rebase --continue` would run them. The todo list is
/// quarantined (the rebase then finishes with nothing left to run).
#[test]
fn a_rebase_left_stopped_with_exec_lines_is_quarantined() {
    let ws = TempDir::new("/tmp", "airlock-attack");
    let audit = TempDir::new("/tmp", "airlock-audit");
    let mark = format!("/tmp/airlock-pwned-{}", random_token());
    host_sh(
        ws.path(),
        "git init -q -b main . && echo a > a && git add a && git commit -qm a && \
         echo b > b && git add b && git commit -qm b",
    );
    let out = run_in(
        ws.path(),
        &audit.join("a.jsonl"),
        &["--env", "GIT_AUTHOR_NAME=t", "--env", "GIT_AUTHOR_EMAIL=t@example.com",
          "--env", "GIT_COMMITTER_NAME=t", "--env", "GIT_COMMITTER_EMAIL=t@example.com"],
        &format!(
            "GIT_SEQUENCE_EDITOR='sed -i -e 1ibreak -e \"1iexec touch {mark}\"' \
             git rebase -q -i HEAD~1 </dev/null; git status | grep -q 'rebase in progress' && echo STOPPED"
        ),
    );
    assert!(out.stdout.contains("STOPPED"), "{out}");
    let host = host_sh(ws.path(), "git status; git rebase --continue; true");
    let pwned = Path::new(&mark).exists();
    let _ = std::fs::remove_file(&mark);
    assert!(!pwned, "the host ran the agent's exec line\n{out}\n{host}");
    let todo = ws.join(".git/rebase-merge/git-rebase-todo");
    let moved = format!("quarantined as {}.airlock-quarantine", todo.display());
    assert!(out.stderr.contains(&moved), "{out}");
}

/// A writable tree may be a home directory (a profile can write
/// `${HOME}`): its `.gitconfig` is the global git config, read by every git
/// command. What the agent writes there is checked like a repository's.
#[test]
fn a_gitconfig_at_the_top_of_a_tree_is_checked() {
    let ws = TempDir::new("/tmp", "airlock-attack");
    let audit = TempDir::new("/tmp", "airlock-audit");
    let mark = format!("/tmp/airlock-pwned-{}", random_token());
    host_sh(ws.path(), "git init -q . && mkdir sub && git init -q sub");
    let out = run_in(
        ws.path(),
        &audit.join("a.jsonl"),
        &[],
        &format!("printf '[core]\\n\\tfsmonitor = touch {mark}\\n' > .gitconfig"),
    );
    out.assert_code(0, "script runs");
    let host = Command::new("/bin/sh")
        .args(["-c", "git status >/dev/null 2>&1; true"])
        .current_dir(ws.join("sub"))
        .env("HOME", ws.path())
        .output()
        .expect("git");
    let pwned = Path::new(&mark).exists();
    let _ = std::fs::remove_file(&mark);
    assert!(!pwned, "the host ran the agent's code: {out} {host:?}");
    let moved = format!(
        "quarantined as {}.airlock-quarantine",
        ws.join(".gitconfig").display()
    );
    assert!(out.stderr.contains(&moved), "{out}");
}

/// The agent takes the quarantine names beforehand (`config.airlock-
/// quarantine`, `-1` ... `-99`), hoping its file stays in place with only
/// a warning: it is still moved aside, under a name it cannot guess.
#[test]
fn taken_quarantine_names_do_not_leave_planted_code_in_place() {
    attack(
        "quarantine names taken",
        "",
        "git init -q sub && c=sub/.git/config && touch $c.airlock-quarantine && \
         for i in $(seq 1 99); do touch $c.airlock-quarantine-$i; done && \
         git -C sub config core.fsmonitor 'touch MARK'",
        &["sub/.git/config"],
    );
}

/// A hook that is the user's symlink into the work tree (`.git/hooks/
/// pre-commit -> ../../scripts/pre-commit.sh`): the script it points to
/// is the hook, so what the agent writes there is quarantined.
#[test]
fn a_script_a_hook_links_to_is_checked() {
    attack(
        "hook symlink into the work tree",
        "mkdir scripts && printf '#!/bin/sh\\ntrue\\n' > scripts/pre-commit.sh && \
         chmod +x scripts/pre-commit.sh && ln -s ../../scripts/pre-commit.sh .git/hooks/post-checkout",
        "echo 'touch MARK' >> scripts/pre-commit.sh",
        &["scripts/pre-commit.sh"],
    );
}

/// The agent locks its own directories (no read, no write) around what it
/// planted, against a checker without capabilities: init, after a SIGKILL
/// of the supervisor, runs as the agent's uid. The check opens them up
/// as their owner, quarantines, and puts the modes back.
#[test]
fn locked_directories_do_not_hide_planted_code() {
    attack(
        "chmod 000 around .envrc",
        "",
        "mkdir -p l/m && echo 'touch MARK' > l/m/.envrc && chmod 000 l/m && chmod 555 l",
        &["l/m/.envrc"],
    );
}

/// An ordinary user's runs are unchanged (the agent is that user, no
/// idmapping) and their check works without capabilities: a nested
/// repository's fsmonitor and a `.envrc` in a directory the agent locked
/// are quarantined.
#[test]
fn an_ordinary_users_run_is_checked_too() {
    if !is_root() {
        eprintln!("skipped: needs root to become uid 1000");
        return;
    }
    let base = TempDir::new("/tmp", "airlock-user");
    let ws = base.join("ws");
    let home = base.join("home");
    for d in [&ws, &home] {
        std::fs::create_dir(d).expect("mkdir");
        common::chown(d, 1000, 1000);
    }
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
        .arg(common::sandbox_bin())
        .args(["run", "--audit-log"])
        .arg(home.join("audit.jsonl"))
        .args([
            "--",
            "/bin/sh",
            "-c",
            "id -u; git init -q sub && git -C sub config core.fsmonitor 'touch /tmp/x'; \
             mkdir -p l && echo hi > l/.envrc && chmod 000 l; echo done",
        ])
        .current_dir(&ws)
        .env("HOME", &home)
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(std::process::Stdio::null());
    let out = run_to_end(cmd);
    out.assert_code(0, "an ordinary user's run");
    assert!(out.stdout.starts_with("1000\n"), "{out}");
    for q in ["sub/.git/config", "l/.envrc"] {
        assert!(
            out.stderr.contains(&format!("{} ", ws.join(q).display()))
                && out.stderr.contains("quarantined as"),
            "{q}: {out}"
        );
    }
    assert_eq!(owner(&ws.join("sub")), (1000, 1000));
    set_mode(&ws.join("l"), 0o755);
    assert!(!ws.join("l/.envrc").exists());
}

/// The supervisor keeps the check's directory listings between runs (an
/// unchanged directory is not listed again): a second run in the same,
/// quiet workspace still has what it plants quarantined.
#[test]
fn kept_listings_do_not_hide_a_second_runs_plants() {
    let ws = TempDir::new("/tmp", "airlock-again");
    let audit = TempDir::new("/tmp", "airlock-audit");
    host_sh(
        ws.path(),
        "git init -q . && mkdir -p deep/er sub && (cd sub && git init -q .) && echo x > deep/er/x \
         && printf '#!/bin/sh\\ntrue\\n' > sub/.git/hooks/post-checkout \
         && chmod +x sub/.git/hooks/post-checkout && mkdir deep/.vscode && echo '{}' > deep/.vscode/tasks.json",
    );
    // Listings are reused only for directories quiet for a second.
    std::thread::sleep(Duration::from_millis(2100));
    let log = audit.join("a.jsonl");
    run_in(ws.path(), &log, &[], "true").assert_code(0, "first run");
    let out = run_in(
        ws.path(),
        &log,
        &[],
        "echo 'echo hi' > deep/er/.envrc && git -C sub config core.fsmonitor 'touch /tmp/x' \
         && echo 'touch /tmp/x' >> sub/.git/hooks/post-checkout && echo '{\"x\":1}' > deep/.vscode/tasks.json",
    );
    out.assert_code(0, "second run");
    for q in [
        "deep/er/.envrc",
        "sub/.git/config",
        "sub/.git/hooks/post-checkout",
        "deep/.vscode/tasks.json",
    ] {
        assert!(
            out.stderr.contains(&format!("{} ", ws.join(q).display())),
            "{q}: {out}"
        );
        assert!(!ws.join(q).exists(), "{q} still in place");
    }
}

/// A set-user-ID root binary already in a root-owned workspace: the agent
/// owns it through the idmapping and rewrites it through a shared
/// writable mapping, which (unlike write(2)) leaves the bit set. After the
/// run the bits are gone; a set-id file the agent did not touch keeps
/// them.
#[test]
fn a_setuid_file_rewritten_through_mmap_loses_its_setuid_bit() {
    if !is_root() {
        eprintln!("skipped: needs root (idmapped workspaces)");
        return;
    }
    let ws = TempDir::new("/tmp", "airlock-setid");
    let audit = TempDir::new("/tmp", "airlock-audit");
    for f in ["victim", "untouched"] {
        std::fs::copy("/bin/true", ws.join(f)).expect("copy");
        set_mode(&ws.join(f), 0o4755);
    }
    let out = run_in(
        ws.path(),
        &audit.join("a.jsonl"),
        &[],
        "python3 -c 'import mmap, os; fd = os.open(\"victim\", os.O_RDWR); \
         m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_WRITE); m[0:4] = b\"EVIL\"; \
         m.flush(); print(\"WROTE\")'",
    );
    out.assert_code(0, "the agent's mmap write");
    assert!(out.stdout.contains("WROTE"), "{out}");
    let mode = |f: &str| std::fs::metadata(ws.join(f)).expect("stat").mode() & 0o7777;
    assert_eq!(mode("victim") & 0o6000, 0, "set-id bit survived: {out}");
    assert_eq!(
        mode("untouched"),
        0o4755,
        "an untouched set-id file changed"
    );
    assert!(
        out.stderr
            .contains("set-user-ID and set-group-ID bits were removed"),
        "{out}"
    );
}
