//! The `confab` binary's command line, run as a process against a temporary data directory.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use confab_store::{BindingRecord, Store};

/// A temporary working directory and a way to run `confab` in it with a clean environment.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn data_dir(&self) -> String {
        self.path().join("data").display().to_string()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// `confab ARGS` in the temporary directory, with `vars` set and no inherited CONFAB_*
    /// variables or RUST_LOG; `stdin` is fed to it.
    fn run_with(&self, args: &[&str], vars: &[(&str, &str)], stdin: &str) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_confab"));
        command.args(args).current_dir(self.path());
        for (name, _) in std::env::vars() {
            if name.starts_with("CONFAB_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command.envs(vars.iter().copied());
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[], "")
    }

    /// `confab --data-dir DATA ARGS`, expected to succeed; returns stdout.
    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let data_dir = self.data_dir();
        let mut full = vec!["--data-dir", data_dir.as_str()];
        full.extend_from_slice(args);
        let out = self.run_with(&full, &[], stdin);
        assert!(
            out.status.success(),
            "confab {args:?} failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `confab --data-dir DATA ARGS`, expected to fail with `code`; returns stderr.
    fn fails(&self, args: &[&str], stdin: &str, code: i32) -> String {
        let data_dir = self.data_dir();
        let mut full = vec!["--data-dir", data_dir.as_str()];
        full.extend_from_slice(args);
        let out = self.run_with(&full, &[], stdin);
        assert_eq!(
            out.status.code(),
            Some(code),
            "confab {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stderr)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn user_add_list_show_passwd_remove() {
    let env = Env::new();
    let out = env.ok(
        &[
            "user",
            "add",
            "alice",
            "--display-name",
            "Alice Liddell",
            "--extension",
            "1001",
            "--password-stdin",
        ],
        "s3cret\n",
    );
    assert_eq!(
        out,
        "added user alice (sip:alice@confab.local, extension 1001)\n"
    );
    // Without --password or --password-stdin, a password is read from a non-terminal stdin.
    env.ok(&["user", "add", "bob"], "hunter2\n");
    env.ok(&["user", "add", "carol", "--password", "pw"], "");
    assert!(Path::new(&env.data_dir()).join("confab.db").exists());

    let list = env.ok(&["user", "list"], "");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    assert!(lines[0].starts_with("USER "), "{list}");
    assert!(
        lines[1].starts_with("alice  1001") && lines[1].contains("Alice Liddell"),
        "{list}"
    );
    assert!(lines[2].starts_with("bob "), "{list}");

    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["user", "list", "--json"], "")).unwrap();
    assert_eq!(json[0]["username"], "alice");
    assert_eq!(json[0]["extension"], "1001");
    assert_eq!(json.as_array().unwrap().len(), 3);

    // By name or by extension.
    for who in ["alice", "1001"] {
        let show = env.ok(&["user", "show", who], "");
        assert!(show.contains("User:          alice"), "{show}");
        assert!(show.contains("Extension:     1001"), "{show}");
        assert!(
            show.contains("Address:       sip:alice@confab.local"),
            "{show}"
        );
        assert!(!show.contains("s3cret"));
    }

    let out = env.ok(&["user", "passwd", "bob", "--password-stdin"], "n3w\n");
    assert_eq!(out, "password of bob changed\n");
    assert_eq!(env.ok(&["user", "remove", "bob"], ""), "removed user bob\n");
    assert!(!env.ok(&["user", "list"], "").contains("bob"));
    let err = env.fails(&["user", "remove", "bob"], "", 1);
    assert_eq!(err, "error: no such user: \"bob\"\n");
    let err = env.fails(&["user", "show", "nobody"], "", 1);
    assert!(err.contains("no such user: \"nobody\""), "{err}");
}

#[test]
fn user_add_refuses_duplicates_and_bad_names() {
    let env = Env::new();
    env.ok(
        &[
            "user",
            "add",
            "alice",
            "--extension",
            "1001",
            "--password",
            "pw",
        ],
        "",
    );

    let err = env.fails(&["user", "add", "alice", "--password", "pw"], "", 1);
    assert_eq!(err, "error: user \"alice\" already exists\n");
    let err = env.fails(
        &[
            "user",
            "add",
            "bob",
            "--extension",
            "1001",
            "--password",
            "pw",
        ],
        "",
        1,
    );
    assert_eq!(err, "error: extension 1001 is already taken by alice\n");
    let err = env.fails(&["user", "add", "Bob", "--password", "pw"], "", 1);
    assert!(
        err.contains("invalid user name \"Bob\"") && err.contains("lower-case"),
        "{err}"
    );
    let err = env.fails(&["user", "add", "-bob", "--password", "pw"], "", 2);
    assert!(
        err.contains("unexpected argument"),
        "clap refuses it as an option: {err}"
    );
    let err = env.fails(&["user", "add", "bob@x", "--password", "pw"], "", 1);
    assert!(err.contains("invalid user name"), "{err}");
    let err = env.fails(
        &["user", "add", "bob", "--extension", "1", "--password", "pw"],
        "",
        1,
    );
    assert!(
        err.contains("invalid extension \"1\": use 2 to 15 digits"),
        "{err}"
    );
    let err = env.fails(&["user", "add", "bob", "--password-stdin"], "", 1);
    assert!(err.contains("no password on standard input"), "{err}");
    let err = env.fails(&["user", "passwd", "nobody", "--password", "x"], "", 1);
    assert!(err.contains("no such user"), "{err}");

    assert_eq!(
        env.ok(&["user", "list"], "").lines().count(),
        2,
        "only alice"
    );
}

#[test]
fn user_commands_take_data_dir_and_domain_from_config() {
    let env = Env::new();
    let config = env.write(
        "confab.toml",
        "[server]\ndata_dir = \"from-config\"\ndomain = \"pbx.example.test\"\n",
    );
    let out = env.run_with(
        &[
            "--config",
            &config,
            "user",
            "add",
            "dave",
            "--password",
            "pw",
        ],
        &[],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "added user dave (sip:dave@pbx.example.test)\n"
    );
    assert!(env.path().join("from-config/confab.db").exists());
    // CONFAB_CONFIG names the file too.
    let out = env.run_with(&["user", "show", "dave"], &[("CONFAB_CONFIG", &config)], "");
    assert!(
        text(&out.stdout).contains("(realm pbx.example.test)"),
        "{}",
        text(&out.stdout)
    );
    // --data-dir wins over the file.
    let out = env.run_with(
        &[
            "--config",
            &config,
            "--data-dir",
            "elsewhere",
            "user",
            "list",
        ],
        &[],
        "",
    );
    assert!(
        text(&out.stdout).starts_with("no users"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn config_check_accepts_good_files_and_names_the_bad_key() {
    let env = Env::new();
    let good = env.write(
        "good.toml",
        "[server]\ndomain = \"pbx.test\"\n[sip]\nudp = [\"127.0.0.1:5070\"]\nws = []\n\
         advertised_address = \"127.0.0.1\"\n",
    );
    let out = env.run(&["config", "check", &good]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("{good}: OK\n"));

    let cases = [
        (
            "[sip]\nudp = [\"127.0.0.1:99999\"]\n",
            "sip.udp[0] (line 2): \"127.0.0.1:99999\" is not a socket address (expected IP:PORT, e.g. \
             0.0.0.0:5060)",
        ),
        ("[sip]\nudpp = []\n", "sip.udpp (line 2): unknown field `udpp`, expected one of `udp`"),
        ("[registrar]\nmax_expires = \"1h\"\n", "registrar.max_expires (line 2): invalid type: string"),
        (
            "[registrar]\nmin_expires = 7200\n",
            "registrar.min_expires: 7200 is greater than registrar.max_expires (3600)",
        ),
        ("[log]\nformat = \"xml\"\n", "log.format (line 2): unknown variant `xml`, expected `text` or `json`"),
        ("[server]\ndomain = \"no spaces\"\n", "server.domain: \"no spaces\" is not a domain name"),
        ("[sip\n", "TOML parse error at line 1"),
    ];
    for (i, (file, expected)) in cases.iter().enumerate() {
        let path = env.write(&format!("bad{i}.toml"), file);
        let out = env.run(&["config", "check", &path]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(
            stderr.starts_with(&format!("{path}: invalid configuration:\n  ")),
            "{stderr}"
        );
        assert!(
            stderr.contains(expected),
            "{file}\nexpected: {expected}\nstderr: {stderr}"
        );
    }

    // An environment variable is checked too, and named.
    let out = env.run_with(
        &["config", "check", &good],
        &[("CONFAB_SIP__T1_MS", "soon")],
        "",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("CONFAB_SIP__T1_MS (sip.t1_ms): \"soon\" is not a whole number")
    );

    let out = env.run(&["config", "check", "missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read config file missing.toml"));

    // Loading a bad file for any other command also exits with 2.
    let bad = env.write("bad.toml", "[sip]\nudp = [\"nope\"]\n");
    let out = env.run(&["--config", &bad, "user", "list"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("  sip.udp[0] (line 2): \"nope\" is not a socket address"));
    let out = env.run(&["--config", &bad, "serve"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn config_default_is_valid_and_show_applies_file_then_env() {
    let env = Env::new();
    let out = env.run(&["config", "default"]);
    assert!(out.status.success());
    let default = text(&out.stdout);
    assert!(
        default.contains("udp = [\"0.0.0.0:5060\"]")
            && default.contains("wss = [\"0.0.0.0:8443\"]")
    );
    let path = env.write("default.toml", &default);
    assert!(env.run(&["config", "check", &path]).status.success());

    let file = env.write(
        "confab.toml",
        "[sip]\nudp = [\"127.0.0.1:5080\"]\ntcp = [\"127.0.0.1:5080\"]\n[log]\nlevel = \"debug\"\n",
    );
    let vars = [
        ("CONFAB_SIP__UDP", "127.0.0.1:5070,127.0.0.1:5071"),
        ("CONFAB_SIP__WSS", ""),
        ("CONFAB_REGISTRAR__MAX_EXPIRES", "7200"),
        ("CONFAB_SIP__ADVERTISED_ADDRESS", "127.0.0.1"),
    ];
    let out = env.run_with(&["--config", &file, "config", "show"], &vars, "");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("udp = [\n    \"127.0.0.1:5070\",\n    \"127.0.0.1:5071\",\n]"),
        "{shown}"
    );
    assert!(
        shown.contains("tcp = [\"127.0.0.1:5080\"]"),
        "file kept where env is silent: {shown}"
    );
    assert!(shown.contains("wss = []"), "{shown}");
    assert!(
        shown.contains("advertised_address = \"127.0.0.1\""),
        "{shown}"
    );
    assert!(shown.contains("max_expires = 7200"), "{shown}");
    assert!(shown.contains("level = \"debug\""), "{shown}");
    assert!(
        shown.contains("ws = [\"0.0.0.0:8080\"]"),
        "defaults kept: {shown}"
    );
}

#[test]
fn registrations_lists_what_the_server_wrote() {
    let env = Env::new();
    env.ok(
        &[
            "user",
            "add",
            "alice",
            "--extension",
            "1001",
            "--password",
            "pw",
        ],
        "",
    );
    assert_eq!(env.ok(&["registrations"], ""), "no registrations\n");

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let binding = |aor: &str, contact: &str, expires_at: i64| BindingRecord {
        aor: aor.into(),
        contact: contact.into(),
        expires_at,
        q_milli: 1000,
        call_id: "c1@127.0.0.1".into(),
        cseq: 3,
        instance: Some("<urn:uuid:00000000-0000-0000-0000-00000000a11c>".into()),
        reg_id: Some(1),
        transport: "TCP".into(),
        source: "127.0.0.1:40000".into(),
        local: "127.0.0.1:5060".into(),
        user_agent: Some("TestPhone/1.0".into()),
        updated_at: now,
    };
    let data_dir = env.data_dir();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = Store::open(Path::new(&data_dir)).await.unwrap();
            store
                .save_bindings(&[
                    binding(
                        "sip:alice@confab.local",
                        "sip:alice@127.0.0.1:40000;transport=tcp",
                        now + 600,
                    ),
                    binding(
                        "sip:gone@confab.local",
                        "sip:gone@127.0.0.1:40001",
                        now - 10,
                    ),
                ])
                .await
                .unwrap();
            store.close().await;
        });

    let table = env.ok(&["registrations"], "");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "expired ones are hidden: {table}");
    for column in [
        "AOR",
        "CONTACT",
        "TRANSPORT",
        "SOURCE",
        "EXPIRES IN",
        "USER AGENT",
        "INSTANCE",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    for value in [
        "sip:alice@confab.local",
        "TCP",
        "127.0.0.1:40000",
        "TestPhone/1.0",
        "urn:uuid:",
    ] {
        assert!(lines[1].contains(value), "{table}");
    }
    assert_eq!(env.ok(&["registrations", "--all"], "").lines().count(), 3);
    assert_eq!(
        env.ok(&["registrations", "1001"], "").lines().count(),
        2,
        "filter by extension"
    );

    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["registrations", "--json"], "")).unwrap();
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["aor"], "sip:alice@confab.local");
    assert_eq!(list[0]["transport"], "TCP");
    assert_eq!(list[0]["source"], "127.0.0.1:40000");
    assert_eq!(list[0]["user_agent"], "TestPhone/1.0");
    let expires_in = list[0]["expires_in"].as_i64().unwrap();
    assert!((590..=600).contains(&expires_in), "{expires_in}");

    let show = env.ok(&["user", "show", "alice"], "");
    assert!(show.contains("Registrations: 1"), "{show}");
    // Removing the user removes its registrations.
    env.ok(&["user", "remove", "alice"], "");
    assert_eq!(
        env.ok(&["registrations", "--all"], "").lines().count(),
        2,
        "only the other AoR"
    );
}
