//! Profiles and the managed policy end to end, with the real `sandbox`:
//! what a security team writes is what the agent gets, a managed policy
//! cannot be loosened by a profile, a flag or a user who can edit it, and
//! an agent cannot plant code that runs outside the next time the user
//! opens the project (git hooks, shell rc files, editor tasks).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{chown, run_to_end, sandbox_bin, set_mode, write_file, RunOutput, Sandbox, TempDir};

/// The shipped profiles, in the repository.
fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles")
        .join(name)
}

fn sandbox(args: &[&str]) -> RunOutput {
    let mut cmd = Command::new(sandbox_bin());
    cmd.args(args);
    run_to_end(cmd)
}

/// A managed policy as an administrator installs it: root-owned, 0644, in
/// a root-owned 0755 directory.
fn install_managed(dir: &TempDir, text: &str) -> String {
    let path = dir.join("managed.toml");
    write_file(&path, text, 0o644);
    path.display().to_string()
}

#[test]
fn every_shipped_profile_passes_check_even_under_the_example_managed_policy() {
    let files: Vec<String> = [
        "default.toml",
        "offline.toml",
        "claude-code.toml",
        "github.toml",
        "managed.example.toml",
    ]
    .iter()
    .map(|f| shipped(f).display().to_string())
    .collect();
    let mut args = vec!["policy", "check"];
    args.extend(files.iter().map(String::as_str));
    sandbox(&args).assert_code(0, "shipped profiles must pass check");
    let managed = shipped("managed.example.toml").display().to_string();
    let mut args = vec!["policy", "check", "--managed", managed.as_str()];
    args.extend(files[..4].iter().map(String::as_str));
    sandbox(&args).assert_code(0, "shipped profiles fit the example managed policy");
}

#[test]
fn check_reports_every_error_with_file_line_and_column() {
    let dir = TempDir::new("/tmp", "airlock-check");
    let bad = dir.join("bad.toml");
    write_file(
        &bad,
        "[profile]\nextends = [\"./missing.toml\", \"./bad.toml\"]\n[network]\nallow = [\"*\", \"*.com\", \"api.example.com\"]\ndeny = [\"*.example.com\"]\n[filesys]\n",
        0o644,
    );
    let out = sandbox(&["policy", "check", &bad.display().to_string()]);
    out.assert_code(1, "a bad profile fails check");
    let f = bad.display().to_string();
    assert!(
        out.stderr
            .contains(&format!("{f}:6:2: unknown field `filesys`")),
        "{out}"
    );
    std::fs::write(
        &bad,
        "[profile]\nextends = [\"./missing.toml\", \"./bad.toml\"]\n[network]\nallow = [\"*\", \"*.com\", \"api.example.com\"]\ndeny = [\"*.example.com\"]\n",
    )
    .expect("rewrite");
    let out = sandbox(&["policy", "check", &f]);
    out.assert_code(1, "a bad profile fails check");
    for want in [
        format!("{f}:4:10: '*' is too broad"),
        format!("{f}:4:15: '*.com' is too broad"),
        format!("{f}:2:12: extends './missing.toml': cannot read"),
        format!("{f}:2:30: extends cycle: {f} -> {f}"),
        format!("{f}:4:24: allow 'api.example.com' is entirely covered by deny '*.example.com' at {f}:5:9"),
    ] {
        assert!(out.stderr.contains(&want), "missing {want:?}\n{out}");
    }
}

/// A reviewer sees every mistake of a file in one run, in file order: a
/// type error no longer hides the ones after it.
#[test]
fn check_lists_every_error_sorted_by_line() {
    let dir = TempDir::new("/tmp", "airlock-check-all");
    let bad = dir.join("bad.toml");
    write_file(
        &bad,
        "[limits]\npids = \"many\"\n[filesys]\nread = [\"/x\"]\n[filesystem]\nread = [\"/usr\", 3]\nwrite = \"x\"\ndeny = [\"rel\"]\n[network]\nallow = [\"*\"]\nports = [\"x\"]\n[env]\npass = [\"BAD NAME\"]\n",
        0o644,
    );
    let f = bad.display().to_string();
    let out = sandbox(&["policy", "check", &f]);
    out.assert_code(1, "a bad profile fails check");
    let want = [
        format!("{f}:2:8: invalid type: string \"many\""),
        format!("{f}:3:2: unknown field `filesys`"),
        format!("{f}:6:17: invalid type: integer `3`"),
        format!("{f}:7:9: invalid type: string \"x\""),
        format!("{f}:8:9: 'rel': paths are absolute"),
        format!("{f}:10:10: '*' is too broad"),
        format!("{f}:11:10: invalid type: string \"x\""),
        format!("{f}:13:9: env.pass: 'BAD NAME'"),
    ];
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), want.len(), "{out}");
    for (line, w) in lines.iter().zip(&want) {
        assert!(line.starts_with(w.as_str()), "{line:?} is not {w:?}\n{out}");
    }
}

/// What `policy check` accepts, `run` runs; what `run` cannot build,
/// `check` refuses with the message `run` gives. `write = ["/"]` passed
/// check and then failed in run with `mounts: symlink /bin: File exists`.
#[test]
fn check_refuses_what_run_cannot_build_with_the_same_message() {
    let dir = TempDir::new("/tmp", "airlock-check-run");
    let sb = Sandbox::new();
    for (i, grant) in [
        "write = [\"/\"]",
        "read = [\"/\"]",
        "read = [\"/run\"]",
        "read = [\"/proc/1\"]",
    ]
    .iter()
    .enumerate()
    {
        let profile = dir.join(&format!("p{i}.toml"));
        write_file(&profile, &format!("[filesystem]\n{grant}\n"), 0o644);
        let p = profile.display().to_string();
        let check = sandbox(&["policy", "check", &p]);
        check.assert_code(1, "check refuses what run cannot build");
        let message = check.stderr.trim().to_string();
        assert!(
            message.contains("which the sandbox builds itself"),
            "{grant}\n{check}"
        );
        let run = sb.run_with(&["--profile", &p], &["true"]);
        run.assert_code(125, "run refuses it too");
        assert_eq!(
            run.stderr.trim(),
            format!("sandbox: {message}"),
            "{grant}: run and check disagree\n{run}"
        );
    }
    // A deny that hides the workspace itself says so (it was a bare
    // `chdir: Permission denied`).
    let hides = dir.join("hides.toml");
    write_file(&hides, "[filesystem]\ndeny = [\"/tmp\"]\n", 0o644);
    let out = sb.run_with(&["--profile", &hides.display().to_string()], &["true"]);
    out.assert_code(125, "the workspace is hidden");
    assert!(
        out.stderr
            .contains("is hidden by a filesystem.deny (masked at "),
        "{out}"
    );
    // What check accepts runs: here a granted symlink inside another
    // granted tree (it failed with `symlink ...: File exists`).
    let tree = dir.join("tree");
    std::fs::create_dir(&tree).expect("mkdir");
    write_file(&tree.join("f"), "linked\n", 0o644);
    std::os::unix::fs::symlink("f", tree.join("link")).expect("symlink");
    let t = tree.display().to_string();
    let ok = dir.join("ok.toml");
    write_file(
        &ok,
        &format!("[filesystem]\nread = [\"/run/user\", \"/home\", \"{t}\", \"{t}/link\"]\n"),
        0o644,
    );
    let p = ok.display().to_string();
    sandbox(&["policy", "check", &p]).assert_code(0, "check accepts it");
    let out = sb.run_with(&["--profile", &p], &["/bin/cat", &format!("{t}/link")]);
    out.assert_code(0, "and run runs it");
    assert_eq!(out.stdout, "linked\n", "{out}");
}

#[test]
fn show_prints_the_merged_policy_and_a_stable_hash() {
    let hash = |extra: &[&str]| {
        let mut args = vec!["policy", "show", "--profile", "github"];
        args.extend_from_slice(extra);
        let out = sandbox(&args);
        out.assert_code(0, "policy show");
        assert!(out.stdout.contains("github.com"), "{out}");
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix("# policy_hash = sha256:"))
            .unwrap_or_else(|| panic!("no hash\n{out}"))
            .to_string()
    };
    assert_eq!(hash(&[]), hash(&[]));
    assert_ne!(hash(&[]), hash(&["--allow", "api.example.com"]));
}

#[test]
fn schema_command_matches_the_checked_in_schema() {
    let out = sandbox(&["policy", "schema"]);
    out.assert_code(0, "policy schema");
    let checked_in = std::fs::read_to_string(shipped("schema.json")).expect("schema.json");
    assert_eq!(out.stdout, checked_in, "profiles/schema.json is stale");
}

#[test]
fn explain_names_the_rule_for_urls_and_paths() {
    let out = sandbox(&[
        "policy",
        "explain",
        "--profile",
        "claude-code",
        "--url",
        "https://api.anthropic.com/v1/messages",
    ]);
    out.assert_code(0, "the model API is allowed");
    assert!(
        out.stdout.contains("allow:api.anthropic.com") && out.stdout.contains("claude-code.toml:"),
        "{out}"
    );
    assert!(out.stdout.contains("credential 'anthropic'"), "{out}");
    let out = sandbox(&[
        "policy",
        "explain",
        "--profile",
        "claude-code",
        "--url",
        "https://example.com/",
    ]);
    out.assert_code(1, "anything else is denied");
    assert!(out.stdout.contains("default-deny"), "{out}");
    let out = sandbox(&["policy", "explain", "--path", "/etc/shadow"]);
    out.assert_code(1, "shadow is masked");
    assert!(
        out.stdout.contains("filesystem.deny '/etc/shadow'"),
        "{out}"
    );
}

/// `policy explain --path` answers from the plan `run` mounts: with
/// `write = ["${HOME}"]`, `~/.npmrc` is under the agent's empty HOME, so
/// explain says not visible (it used to say read-write) and a read inside
/// fails.
#[test]
fn explain_answers_what_run_shows_for_a_granted_home() {
    let home = TempDir::new("/tmp", "airlock-explain-home");
    let secret = format!("npm-token-{}", common::random_token());
    let npmrc = home.join(".npmrc");
    write_file(&npmrc, &secret, 0o644);
    let dir = TempDir::new("/tmp", "airlock-explain-p");
    let profile = dir.join("home.toml");
    write_file(&profile, "[filesystem]\nwrite = [\"${HOME}\"]\n", 0o644);
    let p = profile.display().to_string();
    let sb = Sandbox::new();
    let mut cmd = Command::new(sandbox_bin());
    cmd.args([
        "policy",
        "explain",
        "--profile",
        &p,
        "--workspace",
        &sb.ws(),
        "--path",
    ])
    .arg(&npmrc)
    .env("HOME", home.path());
    let explain = run_to_end(cmd);
    explain.assert_code(1, "explain: not visible");
    assert!(
        explain.stdout.contains("not visible")
            && explain.stdout.contains("filesystem.write '${HOME}'")
            && explain.stdout.contains("is hidden under it"),
        "{explain}"
    );
    let mut cmd = sb.command_with(
        &["--profile", &p],
        &["/bin/cat", &npmrc.display().to_string()],
    );
    cmd.env("HOME", home.path());
    let run = run_to_end(cmd);
    assert_ne!(
        run.code(),
        Some(0),
        "run agrees: the file is not there\n{run}"
    );
    assert!(!run.stdout.contains(&secret), "{run}");
    // A path both show: the workspace, read-write.
    let mut cmd = Command::new(sandbox_bin());
    cmd.args([
        "policy",
        "explain",
        "--profile",
        &p,
        "--workspace",
        &sb.ws(),
        "--path",
    ])
    .arg(sb.workspace.join("x"))
    .env("HOME", home.path());
    let explain = run_to_end(cmd);
    explain.assert_code(0, "the workspace is writable");
    assert!(
        explain
            .stdout
            .contains("read-write: filesystem.write '${WORKSPACE}'"),
        "{explain}"
    );
}

/// The default and offline profiles: the command runs, and nothing leaves.
#[test]
fn default_and_offline_profiles_run_and_reach_nothing() {
    let sb = Sandbox::new();
    for profile in ["default", "offline"] {
        let out = sb.run_with(
            &["--profile", profile],
            &[
                "/bin/sh",
                "-c",
                "curl -sS --max-time 20 -o /dev/null -w '%{http_code}' http://example.com/; echo",
            ],
        );
        out.assert_code(0, profile);
        assert!(out.stdout.trim_end().ends_with("403"), "{profile}: {out}");
    }
}

/// The offline profile's /tmp is 512M, the default's 1G: the limit is the
/// tmpfs size the agent sees.
#[test]
fn profile_limits_set_the_tmp_size_and_the_timeout() {
    let sb = Sandbox::new();
    let out = sb.run_with(
        &["--profile", "offline"],
        &["/bin/sh", "-c", "df -k /tmp | tail -1"],
    );
    out.assert_code(0, "df");
    assert!(
        out.stdout.split_whitespace().nth(1) == Some("524288"),
        "{out}"
    );
    let dir = TempDir::new("/tmp", "airlock-limits");
    let p = dir.join("short.toml");
    write_file(&p, "[limits]\ntimeout = \"1s\"\ntmp_size = \"2M\"\n", 0o644);
    let p = p.display().to_string();
    let out = sb.run_with(
        &["--profile", &p],
        &[
            "/bin/sh",
            "-c",
            "dd if=/dev/zero of=/tmp/big bs=1M count=4 2>&1; echo dd=$?",
        ],
    );
    assert!(
        out.stdout.contains("No space left") || out.stdout.contains("dd=1"),
        "{out}"
    );
    let out = sb.run_with(&["--profile", &p], &["sleep", "10"]);
    out.assert_code(124, "the profile's timeout kills the sandbox");
}

/// claude-code: the key stays with the supervisor; the agent gets a dummy,
/// reaches the model API's host only, and nothing else.
#[test]
fn claude_code_profile_keeps_the_key_out_and_other_hosts_unreachable() {
    let sb = Sandbox::new();
    let mut cmd = sb.command_with(
        &["--profile", "claude-code"],
        &["/bin/sh", "-c", "env; curl -sS --max-time 20 -o /dev/null -w 'other %{http_code}\\n' http://example.com/"],
    );
    cmd.env("ANTHROPIC_API_KEY", "sk-canary-must-not-leak");
    let out = run_to_end(cmd);
    out.assert_code(0, "claude-code run");
    assert!(!out.stdout.contains("sk-canary-must-not-leak"), "{out}");
    assert!(
        out.stdout
            .contains("ANTHROPIC_API_KEY=set-by-airlock-proxy"),
        "{out}"
    );
    assert!(out.stdout.contains("other 403"), "{out}");
}

#[test]
fn github_profile_keeps_the_token_out_and_git_non_interactive() {
    let sb = Sandbox::new();
    let mut cmd = sb.command_with(&["--profile", "github"], &["env"]);
    cmd.env("GITHUB_TOKEN", "ghp_canary_must_not_leak");
    let out = run_to_end(cmd);
    out.assert_code(0, "github run");
    assert!(!out.stdout.contains("ghp_canary"), "{out}");
    assert!(out.stdout.contains("GIT_TERMINAL_PROMPT=0"), "{out}");
}

/// The agent cannot plant a git hook or rewrite .git/config (core.fsmonitor,
/// core.hooksPath), nor change existing shell rc files; the ones it creates
/// (`.profile`, `.envrc`, ...) do not survive the run (tests/workspace.rs
/// has the whole table).
#[test]
fn agent_cannot_create_or_modify_protected_paths() {
    let sb = Sandbox::new();
    let ws = sb.workspace.path();
    std::fs::create_dir_all(ws.join(".git/hooks")).expect("mkdir");
    write_file(&ws.join(".git/config"), "[core]\n", 0o644);
    write_file(&ws.join(".bashrc"), "# mine\n", 0o644);
    let script = "for f in .git/config .bashrc .profile .zshrc .bash_profile .envrc; do \
                    (echo evil >> $f) 2>/dev/null && echo WROTE $f; \
                    mv $f $f.x 2>/dev/null && echo MOVED $f; \
                  done; \
                  (echo evil > .git/hooks/pre-commit) 2>/dev/null && echo WROTE hook; \
                  rm -rf .git/hooks 2>/dev/null; \
                  echo ok > fine.txt && echo done";
    let out = sb.run(&["/bin/sh", "-c", script]);
    out.assert_code(0, "script runs");
    assert!(out.stdout.contains("done"), "{out}");
    for refused in [
        "WROTE .git/config",
        "MOVED .git/config",
        "WROTE .bashrc",
        "MOVED .bashrc",
        "WROTE hook",
    ] {
        assert!(!out.stdout.contains(refused), "{refused}: {out}");
    }
    assert_eq!(
        std::fs::read_to_string(ws.join(".git/config")).expect("config"),
        "[core]\n"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join(".bashrc")).expect("bashrc"),
        "# mine\n"
    );
    assert!(!ws.join(".git/hooks/pre-commit").exists());
    for f in [".profile", ".zshrc", ".envrc", ".bash_profile"] {
        assert!(!ws.join(f).exists(), "{f} survived the run: {out}");
    }
    assert_eq!(
        std::fs::read_to_string(ws.join("fine.txt")).expect("fine"),
        "ok\n"
    );
}

const MANAGED: &str = "[managed]\nallow_cli_network = false\n\n[network]\nallow = [\"api.anthropic.com\", \"*.example.com\"]\ndeny = [\"evil.example.com\"]\n\n[limits]\ntimeout = \"8h\"\n";

#[test]
fn managed_policy_rejects_what_exceeds_it_naming_the_rule() {
    let dir = TempDir::new("/tmp", "airlock-managed");
    let managed = install_managed(&dir, MANAGED);
    let sb = Sandbox::new();
    let mut cmd = sb.command_with(
        &["--managed", &managed, "--profile", "claude-code"],
        &["true"],
    );
    // The credential's secret must exist: a missing one refuses to start.
    cmd.env("ANTHROPIC_API_KEY", "sk-canary-must-not-leak");
    let ok = run_to_end(cmd);
    ok.assert_code(0, "claude-code fits the managed policy");

    let evil = dir.join("evil.toml");
    write_file(
        &evil,
        "[network]\nallow = [\"evil.example.com\", \"other.example.org\"]\n",
        0o644,
    );
    let evil = evil.display().to_string();
    let out = sb.run_with(&["--managed", &managed, "--profile", &evil], &["true"]);
    out.assert_code(125, "a profile allowing a managed-denied host is rejected");
    assert!(
        out.stderr.contains(&format!("{evil}:2:10: allow 'evil.example.com' is denied by the managed policy (network.deny 'evil.example.com' at {managed}:6:9)")),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "{evil}:2:30: allow 'other.example.org' is outside the managed policy's network.allow"
        )),
        "{out}"
    );

    let out = sb.run_with(
        &["--managed", &managed, "--allow", "a.example.com"],
        &["true"],
    );
    out.assert_code(125, "CLI network flags are refused");
    assert!(out.stderr.contains("allow_cli_network = false"), "{out}");
    let out = sb.run_with(
        &["--managed", &managed, "--network-mode", "report"],
        &["true"],
    );
    out.assert_code(125, "report mode loosens the network: refused too");
    assert!(out.stderr.contains("allow_cli_network = false"), "{out}");

    let out = sb.run_with(&["--managed", &managed, "--timeout", "9h"], &["true"]);
    out.assert_code(125, "a timeout over the ceiling is refused");
    assert!(
        out.stderr.contains(&format!(
            "--timeout: limits.timeout = 9h exceeds the managed ceiling 8h (at {managed}:9:11)"
        )),
        "{out}"
    );

    // The example managed policy with the shipped profiles: github fits.
    let example_dir = TempDir::new("/tmp", "airlock-managed-ex");
    let example = install_managed(
        &example_dir,
        &std::fs::read_to_string(shipped("managed.example.toml")).expect("example"),
    );
    let mut cmd = sb.command_with(&["--managed", &example, "--profile", "github"], &["true"]);
    cmd.env("GITHUB_TOKEN", "ghp_canary_must_not_leak");
    run_to_end(cmd).assert_code(0, "github fits the example managed policy");
}

#[test]
fn managed_policy_writable_by_others_is_refused() {
    let dir = TempDir::new("/tmp", "airlock-managed-w");
    let managed = install_managed(&dir, MANAGED);
    let sb = Sandbox::new();
    set_mode(Path::new(&managed), 0o666);
    let out = sb.run_with(&["--managed", &managed], &["true"]);
    out.assert_code(125, "a world-writable managed policy is refused");
    assert!(
        out.stderr.contains("refusing managed policy")
            && out.stderr.contains("writable by group or others"),
        "{out}"
    );

    set_mode(Path::new(&managed), 0o644);
    chown(Path::new(&managed), common::NOBODY, common::NOBODY);
    let out = sb.run_with(&["--managed", &managed], &["true"]);
    out.assert_code(125, "a managed policy owned by a user is refused");
    assert!(out.stderr.contains("owned by uid 65534, not root"), "{out}");

    // As that user (who owns and can edit it): refused too, even through
    // the environment variable.
    if common::is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(sandbox_bin())
            .args(["policy", "show"])
            .env("AIRLOCK_MANAGED_POLICY", &managed)
            .current_dir("/tmp");
        let out = run_to_end(cmd);
        assert_ne!(out.code(), Some(0), "{out}");
        assert!(out.stderr.contains("refusing managed policy"), "{out}");
        // Root-owned and read-only for them: honoured.
        chown(Path::new(&managed), 0, 0);
        assert_eq!(
            std::fs::metadata(&managed)
                .expect("stat")
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(sandbox_bin())
            .args(["policy", "show"])
            .env("AIRLOCK_MANAGED_POLICY", &managed)
            .current_dir("/tmp");
        let out = run_to_end(cmd);
        out.assert_code(
            0,
            "a root-owned managed policy is honoured for an ordinary user",
        );
        assert!(
            out.stdout.contains("managed") && out.stdout.contains(&managed),
            "{out}"
        );
    }
}

/// What a denied agent tried becomes a reviewable allow list.
#[test]
fn suggest_turns_denials_into_an_allow_list() {
    let sb = Sandbox::new();
    let out = sb.sh(
        "for h in a.example.com b.example.com solo.example.org 127.0.0.1; do \
           curl -sS --max-time 20 -o /dev/null http://$h/; done; true",
    );
    out.assert_code(0, "curl loop");
    let audit = sb.audit_log().display().to_string();
    let out = sandbox(&["policy", "suggest", &audit]);
    out.assert_code(0, "suggest");
    assert!(out.stdout.contains("\"*.example.com\","), "{out}");
    assert!(out.stdout.contains("\"solo.example.org\","), "{out}");
    assert!(
        !out.stdout.contains("127.0.0.1") && !out.stdout.contains("\"*\""),
        "{out}"
    );
}

/// An ordinary account created for one test (its home under `home`), and
/// removed again on drop. The managed policy's `${HOME}` is the account
/// database's, so the test needs an account whose home it controls.
struct Account {
    name: String,
    uid: u32,
}

impl Account {
    fn create(home: &Path) -> Account {
        let name = format!("airlk{}", &common::random_token()[..10]);
        let out = run_to_end({
            let mut cmd = Command::new("useradd");
            cmd.args([
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "--home-dir",
            ])
            .arg(home)
            .arg(&name);
            cmd
        });
        out.assert_code(0, "useradd for the test account");
        // Removed on drop from here on, even if the lookup below panics.
        let mut account = Account { name, uid: 0 };
        let id = run_to_end({
            let mut cmd = Command::new("id");
            cmd.args(["-u", &account.name]);
            cmd
        });
        account.uid = id.stdout.trim().parse().expect("id -u prints a number");
        account
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

/// A managed `${HOME}/.ssh` deny holds for an ordinary user whatever their
/// environment says and however their profile reaches the key: `HOME`
/// unset, elsewhere, with a trailing slash or `..`, a symlink to the
/// denied directory, a grant of its parent, a workspace containing it.
/// Each run reads the key inside; it must fail and its content never show.
#[test]
fn managed_home_deny_cannot_be_loosened_through_the_environment() {
    if !common::is_root() {
        eprintln!("skipped: needs root to create a test account");
        return;
    }
    let base = TempDir::new("/tmp", "airlock-acct");
    let home = base.join("home");
    std::fs::create_dir(&home).expect("mkdir home");
    let account = Account::create(&home);
    let (uid, h) = (account.uid, home.display().to_string());
    let secret = format!("AIRLOCK-KEY-{}", common::random_token());
    std::fs::create_dir(home.join(".ssh")).expect("mkdir .ssh");
    write_file(&home.join(".ssh/id_ed25519"), &secret, 0o600);
    for p in [
        home.join(".ssh/id_ed25519"),
        home.join(".ssh"),
        home.clone(),
    ] {
        chown(&p, uid, uid);
    }
    set_mode(&home.join(".ssh"), 0o700);
    let link = base.join("sshlink");
    std::os::unix::fs::symlink(home.join(".ssh"), &link).expect("symlink");
    let ws = base.join("ws");
    std::fs::create_dir(&ws).expect("mkdir ws");
    chown(&ws, uid, uid);
    let audit = base.join("audit");
    std::fs::create_dir(&audit).expect("mkdir audit");
    chown(&audit, uid, uid);
    let managed_dir = TempDir::new("/tmp", "airlock-managed-home");
    let managed = install_managed(&managed_dir, "[filesystem]\ndeny = [\"${HOME}/.ssh\"]\n");
    let profiles = TempDir::new("/tmp", "airlock-home-profiles");
    let key = format!("{h}/.ssh/id_ed25519");
    let l = link.display().to_string();
    let dotdot = format!("{h}/../home");
    let inside_ssh = format!("{h}/.ssh/..");
    let w = ws.display().to_string();
    // (what, HOME, profile's [filesystem], workspace)
    let cases: &[(&str, Option<&str>, String, &str)] = &[
        ("HOME unset", None, format!("read = [\"{h}/.ssh\"]"), &w),
        (
            "HOME=/tmp",
            Some("/tmp"),
            format!("read = [\"{h}/.ssh\"]"),
            &w,
        ),
        (
            "HOME with a trailing slash",
            Some(&format!("{h}/")),
            "read = [\"${HOME}/.ssh\"]".into(),
            &w,
        ),
        (
            "HOME with ..",
            Some(&dotdot),
            "read = [\"${HOME}/.ssh\"]".into(),
            &w,
        ),
        (
            "a symlink to the denied directory",
            None,
            format!("read = [\"{l}\"]"),
            &w,
        ),
        (
            "a grant of the parent, HOME unset",
            None,
            format!("read = [\"{h}\"]"),
            &w,
        ),
        (
            "a writable grant of the parent, HOME=/tmp",
            Some("/tmp"),
            format!("write = [\"{h}\"]"),
            &w,
        ),
        (
            "the workspace contains it, HOME unset",
            None,
            String::new(),
            &h,
        ),
        (
            "the workspace through .ssh/.., HOME unset",
            None,
            String::new(),
            &inside_ssh,
        ),
    ];
    for (i, (what, home_env, grant, workspace)) in cases.iter().enumerate() {
        let profile = profiles.join(&format!("p{i}.toml"));
        write_file(&profile, &format!("[filesystem]\n{grant}\n"), 0o644);
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
        ])
        .arg(sandbox_bin())
        .args(["run", "--managed", &managed, "--profile"])
        .arg(&profile)
        .args(["--workspace", workspace, "--audit-log"])
        .arg(audit.join("audit.jsonl"))
        .args(["--", "/bin/cat", &key])
        .current_dir(&ws)
        .env_remove("HOME");
        if let Some(v) = home_env {
            cmd.env("HOME", v);
        }
        let out = run_to_end(cmd);
        assert!(
            !out.stdout.contains(&secret) && !out.stderr.contains(&secret),
            "{what}: the key leaked\n{out}"
        );
        assert_ne!(
            out.code(),
            Some(0),
            "{what}: reading the key succeeded\n{out}"
        );
        // Refused up front (naming the managed rule) or hidden inside (cat
        // fails), never a set-up failure on the mask itself.
        assert!(
            (out.code() == Some(125)
                && out
                    .stderr
                    .contains("is denied by the managed policy (filesystem.deny '"))
                || (out.code() == Some(1) && out.stderr.contains("cat: ")),
            "{what}\n{out}"
        );
    }
    // The deny of a directory the view does not show is satisfied: the run
    // goes on (it used to stop with `mask directory ...: ENOENT`).
    for home_env in [None, Some(h.as_str())] {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid",
            &uid.to_string(),
            "--regid",
            &uid.to_string(),
            "--clear-groups",
        ])
        .arg(sandbox_bin())
        .args([
            "run",
            "--managed",
            &managed,
            "--workspace",
            &w,
            "--audit-log",
        ])
        .arg(audit.join("audit.jsonl"))
        .args(["--", "/bin/sh", "-c", "cat \"$0\" || echo hidden", &key])
        .current_dir(&ws)
        .env_remove("HOME");
        if let Some(v) = home_env {
            cmd.env("HOME", v);
        }
        let out = run_to_end(cmd);
        out.assert_code(0, "a managed deny outside the view is satisfied");
        assert!(
            out.stdout.contains("hidden") && !out.stdout.contains(&secret),
            "{out}"
        );
    }
    drop(account);
}

/// A managed `${HOME}` that the account database cannot give stops the run
/// (exit 125): the deny never silently becomes no rule.
#[test]
fn managed_home_without_an_account_fails_closed() {
    if !common::is_root() {
        eprintln!("skipped: needs root to run as an unknown uid");
        return;
    }
    let managed_dir = TempDir::new("/tmp", "airlock-managed-nohome");
    let managed = install_managed(&managed_dir, "[filesystem]\ndeny = [\"${HOME}/.ssh\"]\n");
    let ws = TempDir::new("/tmp", "airlock-ws-nohome");
    let uid = "4242424";
    chown(ws.path(), 4242424, 4242424);
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid", uid, "--regid", uid, "--clear-groups"])
        .arg(sandbox_bin())
        .args(["run", "--managed", &managed, "--workspace", &ws.display()])
        .args(["--audit-log", &ws.join("audit.jsonl").display().to_string()])
        .args(["--", "true"])
        .current_dir(ws.path())
        .env("HOME", "/tmp");
    let out = run_to_end(cmd);
    out.assert_code(125, "an unresolvable managed ${HOME} stops the run");
    assert!(
        out.stderr.contains("filesystem.deny '${HOME}/.ssh' cannot be resolved: uid 4242424 has no entry in the account database"),
        "{out}"
    );
}
