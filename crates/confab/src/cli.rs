//! The command line: `serve`, `config`, `user`, `registrations` and `calls`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use confab_store::{BindingRecord, CallFilter, CallRecordRow, NewUser, Store, StoreError, User};

use crate::config::{Config, ConfigError, LogFormat, DEFAULT_TOML};

/// Exit status for an invalid configuration (also clap's for a bad command line).
pub(crate) const EXIT_INVALID_CONFIG: u8 = 2;

/// Confab: a SIP unified-communications server.
#[derive(Debug, Parser)]
#[command(name = "confab", version, propagate_version = true)]
pub(crate) struct Cli {
    /// TOML configuration file; CONFAB_<SECTION>__<KEY> environment variables override it.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "CONFAB_CONFIG",
        value_name = "FILE"
    )]
    config: Option<PathBuf>,
    /// Data directory (overrides server.data_dir).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (with the embedded defaults when no config file is given).
    Serve,
    /// Check, show or print configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage users in the data directory.
    #[command(subcommand)]
    User(UserCommand),
    /// Show who is registered from where.
    Registrations {
        /// Only this user's registrations (user name or extension).
        user: Option<String>,
        /// Include expired registrations not yet cleaned up.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List calls in progress and recent call records, newest first.
    Calls {
        /// Only calls still ringing or in progress.
        #[arg(long)]
        active: bool,
        /// Only calls this user made or received (user name, extension or URI user part).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
        /// Show at most this many calls (0 for all).
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (with the environment overrides applied); exit status 2 if
    /// it is invalid.
    Check {
        /// The file to check (default: the one given with --config).
        file: Option<PathBuf>,
    },
    /// Print the embedded default configuration.
    Default,
    /// Print the effective configuration: defaults, file and environment combined.
    Show,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from the terminal unless given.
    Add {
        /// User name: lower-case letters, digits, '.', '_' and '-', starting with a letter or digit.
        name: String,
        /// Name shown to callees.
        #[arg(long, value_name = "NAME")]
        display_name: Option<String>,
        /// Dialable extension, 2 to 15 digits; also accepted as authentication user name.
        #[arg(long, value_name = "DIGITS")]
        extension: Option<String>,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// List users.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one user (by user name or extension) and its registrations.
    Show {
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set a user's password.
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Remove a user, its credentials and its registrations.
    Remove { name: String },
    /// Add many users from a CSV file (`-` for standard input), all or none: one line per
    /// user, `username,password[,extension[,display name]]`. Fields may be double-quoted
    /// (`""` inside quotes is a quote); blank lines, lines starting with '#' and a first line
    /// starting with `username` are skipped.
    Import { file: PathBuf },
}

#[derive(Debug, Args)]
struct PasswordArgs {
    /// The password (visible to other local users in the process list: prefer --password-stdin).
    #[arg(long, conflicts_with = "password_stdin")]
    password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    password_stdin: bool,
}

/// Runs the parsed command line; the error's exit status is decided by `main`.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve => {
            let config = load_config(&cli)?;
            crate::init_logging(&config.log.level, config.log.format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(serve(&cli, config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(command) => {
            crate::init_logging("warn", LogFormat::Text);
            config_command(&cli, command)
        }
        Command::User(command) => {
            crate::init_logging("warn", LogFormat::Text);
            let config = load_config(&cli)?;
            block_on(user_command(&config, command))??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Registrations { user, all, json } => {
            crate::init_logging("warn", LogFormat::Text);
            let config = load_config(&cli)?;
            block_on(registrations(&config, user.as_deref(), *all, *json))??;
            Ok(ExitCode::SUCCESS)
        }
        Command::Calls {
            active,
            user,
            limit,
            json,
        } => {
            crate::init_logging("warn", LogFormat::Text);
            let config = load_config(&cli)?;
            let filter = CallFilter {
                active_only: *active,
                user: user.clone(),
                limit: *limit,
            };
            block_on(calls(&config, filter, *json))??;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Loads defaults, the `--config` file and the environment, then applies `--data-dir`.
fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref()).with_context(|| match &cli.config {
        Some(path) => format!("invalid configuration in {}", path.display()),
        None => "invalid configuration".to_owned(),
    })?;
    if let Some(dir) = &cli.data_dir {
        config.server.data_dir.clone_from(dir);
    }
    Ok(config)
}

fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    Ok(runtime.block_on(future))
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Ok(Store::open(&config.server.data_dir).await?)
}

async fn serve(cli: &Cli, config: Config) -> anyhow::Result<()> {
    raise_open_file_limit();
    let store = open_store(&config).await?;
    tracing::info!(
        data_dir = %config.server.data_dir.display(),
        domain = %config.server.domain,
        "confab starting"
    );
    if store.user_count().await? == 0 {
        eprintln!("{}", first_user_hint(cli, &config));
    }
    let stale = store
        .users_without_credentials(&config.server.domain)
        .await?;
    if !stale.is_empty() {
        tracing::warn!(
            users = %stale.join(", "),
            realm = %config.server.domain,
            "users without credentials for this domain cannot register; set their passwords \
             again with `confab user passwd NAME`"
        );
    }
    crate::server::run(config, store).await
}

/// What to tell an operator whose server has no users yet.
fn first_user_hint(cli: &Cli, config: &Config) -> String {
    let mut options = String::new();
    if let Some(path) = &cli.config {
        options.push_str(&format!(" --config {}", shell_word(path)));
    }
    if cli.data_dir.is_some() {
        options.push_str(&format!(
            " --data-dir {}",
            shell_word(&config.server.data_dir)
        ));
    }
    format!(
        "No users yet. Add one (it asks for a password) with:\n\n    confab{options} user add alice \
         --display-name \"Alice\" --extension 1001\n\nthen register a phone as alice@{} (or 1001) \
         with that password.",
        config.server.domain
    )
}

fn shell_word(path: &Path) -> String {
    let s = path.display().to_string();
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._-+:".contains(&b))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn config_command(cli: &Cli, command: &ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Default => {
            print!("{DEFAULT_TOML}");
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Show => {
            let config = load_config(cli)?;
            print!("{}", config.to_toml());
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::Check { file } => {
            let file = file.as_deref().or(cli.config.as_deref());
            let name = file.map_or_else(
                || "defaults and environment".to_owned(),
                |f| f.display().to_string(),
            );
            match Config::load(file) {
                Ok(_) => {
                    println!("{name}: OK");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ ConfigError::Read { .. }) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(EXIT_INVALID_CONFIG))
                }
                Err(e) => {
                    eprintln!("{name}: invalid configuration:");
                    for line in e.lines() {
                        eprintln!("  {line}");
                    }
                    Ok(ExitCode::from(EXIT_INVALID_CONFIG))
                }
            }
        }
    }
}

async fn user_command(config: &Config, command: &UserCommand) -> anyhow::Result<()> {
    let realm = config.server.domain.as_str();
    match command {
        UserCommand::Add {
            name,
            display_name,
            extension,
            password,
        } => {
            // Check the name before asking for a password that would then be thrown away.
            confab_store::validate_username(name)?;
            if let Some(extension) = extension {
                confab_store::validate_extension(extension)?;
            }
            let store = open_store(config).await?;
            // Likewise for the clashes `add_user` would refuse.
            for value in std::iter::once(name).chain(extension) {
                if let Some(owner) = store.find_user(value).await? {
                    return Err(if owner.username == *value {
                        StoreError::UserExists(owner.username)
                    } else {
                        StoreError::ExtensionTaken {
                            extension: value.clone(),
                            owner: owner.username,
                        }
                    }
                    .into());
                }
            }
            let password = read_password(password, name)?;
            let new = NewUser {
                username: name.clone(),
                display_name: display_name.clone(),
                extension: extension.clone(),
                password,
            };
            let user = store.add_user(new, realm).await?;
            let extension = user
                .extension
                .as_deref()
                .map(|e| format!(", extension {e}"))
                .unwrap_or_default();
            println!(
                "added user {} (sip:{}@{realm}{extension})",
                user.username, user.username
            );
        }
        UserCommand::List { json } => {
            let users = open_store(config).await?.list_users().await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else if users.is_empty() {
                println!("no users (add one with `confab user add NAME`)");
            } else {
                let rows = users.iter().map(|u| {
                    vec![
                        u.username.clone(),
                        u.extension.clone().unwrap_or_default(),
                        u.display_name.clone().unwrap_or_default(),
                        format_unix(u.created_at),
                    ]
                });
                print_table(&["USER", "EXTENSION", "DISPLAY NAME", "CREATED"], rows);
            }
        }
        UserCommand::Show { name, json } => {
            let store = open_store(config).await?;
            let user = store
                .find_user(name)
                .await?
                .ok_or_else(|| StoreError::NoSuchUser(name.clone()))?;
            let bindings: Vec<BindingRecord> = store
                .load_bindings()
                .await?
                .into_iter()
                .filter(|b| belongs_to(b, &user) && b.expires_at > unix_now())
                .collect();
            if *json {
                let value = serde_json::json!({
                    "user": user,
                    "aor": format!("sip:{}@{realm}", user.username),
                    "registrations": bindings.iter().map(binding_json).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                show_user(&user, realm, &bindings);
            }
        }
        UserCommand::Passwd { name, password } => {
            let store = open_store(config).await?;
            let user = store
                .find_user(name)
                .await?
                .ok_or_else(|| StoreError::NoSuchUser(name.clone()))?;
            let password = read_password(password, &user.username)?;
            store.set_password(&user.username, &password, realm).await?;
            println!("password of {} changed", user.username);
        }
        UserCommand::Remove { name } => {
            let user = open_store(config).await?.remove_user(name).await?;
            println!("removed user {}", user.username);
        }
        UserCommand::Import { file } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
            } else {
                std::fs::read_to_string(file)
                    .with_context(|| format!("cannot read {}", file.display()))?
            };
            let (users, lines) = parse_user_csv(&text)?;
            let store = open_store(config).await?;
            match store.import_users(&users, realm).await {
                Ok(n) => println!("imported {n} users"),
                Err((Some(i), error)) => {
                    anyhow::bail!("line {}: {error}; nothing was imported", lines[i])
                }
                Err((None, error)) => {
                    return Err(anyhow::Error::new(error).context("nothing was imported"))
                }
            }
        }
    }
    Ok(())
}

/// Parses `confab user import` CSV: the users and, for each, its line number (from 1).
fn parse_user_csv(text: &str) -> anyhow::Result<(Vec<NewUser>, Vec<usize>)> {
    let mut users = Vec::new();
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let fields = csv_fields(line).map_err(|e| anyhow::anyhow!("line {n}: {e}"))?;
        if users.is_empty()
            && lines.is_empty()
            && fields
                .first()
                .is_some_and(|f| f.trim().eq_ignore_ascii_case("username"))
        {
            continue; // a header line
        }
        if !(2..=4).contains(&fields.len()) {
            anyhow::bail!(
                "line {n}: expected username,password[,extension[,display name]], found {} fields",
                fields.len()
            );
        }
        let optional = |k: usize| fields.get(k).filter(|f| !f.trim().is_empty()).cloned();
        users.push(NewUser {
            username: fields[0].trim().to_owned(),
            password: fields[1].clone(),
            extension: optional(2),
            display_name: optional(3),
        });
        lines.push(n);
    }
    Ok((users, lines))
}

/// Splits one CSV line at commas; a field may be double-quoted, with `""` for a quote.
fn csv_fields(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted field"),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("text after a closing quote"),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field);
        }
    }
}

fn show_user(user: &User, realm: &str, bindings: &[BindingRecord]) {
    let dash = || "-".to_owned();
    println!("User:          {}", user.username);
    println!(
        "Display name:  {}",
        user.display_name.clone().unwrap_or_else(dash)
    );
    println!(
        "Extension:     {}",
        user.extension.clone().unwrap_or_else(dash)
    );
    println!("Address:       sip:{}@{realm}", user.username);
    let auth_users = match &user.extension {
        Some(extension) => format!("{} or {extension}", user.username),
        None => user.username.clone(),
    };
    println!("Auth user:     {auth_users} (realm {realm})");
    println!("Created:       {}", format_unix(user.created_at));
    println!("Registrations: {}", bindings.len());
    let now = unix_now();
    for b in bindings {
        println!(
            "  {} via {} from {}, expires in {}{}",
            b.contact,
            b.transport,
            b.source,
            format_secs(b.expires_at - now),
            b.user_agent
                .as_deref()
                .map(|ua| format!(" ({ua})"))
                .unwrap_or_default()
        );
    }
}

/// Whether a binding's AoR names `user` (by user name or extension).
fn belongs_to(binding: &BindingRecord, user: &User) -> bool {
    let part = binding.aor_user();
    part == user.username || Some(part) == user.extension.as_deref()
}

async fn registrations(
    config: &Config,
    user: Option<&str>,
    all: bool,
    json: bool,
) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let filter = match user {
        Some(name) => Some(
            store
                .find_user(name)
                .await?
                .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))?,
        ),
        None => None,
    };
    let now = unix_now();
    let bindings: Vec<BindingRecord> = store
        .load_bindings()
        .await?
        .into_iter()
        .filter(|b| all || b.expires_at > now)
        .filter(|b| filter.as_ref().is_none_or(|u| belongs_to(b, u)))
        .collect();
    if json {
        let list: Vec<_> = bindings.iter().map(binding_json).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if bindings.is_empty() {
        println!("no registrations");
        return Ok(());
    }
    let rows = bindings.iter().map(|b| {
        vec![
            b.aor.clone(),
            b.contact.clone(),
            b.transport.clone(),
            b.source.clone(),
            format_secs(b.expires_at - now),
            b.user_agent.clone().unwrap_or_default(),
            b.instance.clone().unwrap_or_default(),
        ]
    });
    print_table(
        &[
            "AOR",
            "CONTACT",
            "TRANSPORT",
            "SOURCE",
            "EXPIRES IN",
            "USER AGENT",
            "INSTANCE",
        ],
        rows,
    );
    Ok(())
}

/// A binding as JSON for scripts: every stored field plus `expires_in` seconds and `q`.
fn binding_json(b: &BindingRecord) -> serde_json::Value {
    let mut value = serde_json::to_value(b).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        map.insert(
            "expires_in".into(),
            (b.expires_at - unix_now()).max(0).into(),
        );
        map.insert("q".into(), (f64::from(b.q_milli) / 1000.0).into());
    }
    value
}

/// `confab calls`: call records from the store as a table (start in local time) or JSON.
async fn calls(config: &Config, mut filter: CallFilter, json: bool) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    // An extension names its user; anything else (a removed user, an outside caller's number) is
    // matched as given.
    if let Some(name) = &filter.user {
        if let Some(user) = store.find_user(name).await? {
            filter.user = Some(user.username);
        }
    }
    let active_only = filter.active_only;
    let rows = store.list_calls(filter).await?;
    let now_ms = unix_now_ms();
    if json {
        let list: Vec<_> = rows.iter().map(|c| call_json(c, now_ms)).collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!(
            "{}",
            if active_only {
                "no active calls"
            } else {
                "no calls"
            }
        );
        return Ok(());
    }
    let dash = || "-".to_owned();
    let table = rows.iter().map(|c| {
        let callee = match &c.callee_user {
            Some(user) if *user != c.callee => format!("{} ({user})", c.callee),
            _ => c.callee.clone(),
        };
        vec![
            local_iso(c.started_at),
            c.caller.clone(),
            callee,
            c.answered_by.clone().unwrap_or_else(dash),
            call_duration(c, now_ms),
            c.disposition.clone().unwrap_or_else(dash),
            c.final_status.map_or_else(dash, |s| s.to_string()),
        ]
    });
    print_table(
        &[
            "STARTED",
            "CALLER",
            "CALLEE",
            "ANSWERED BY",
            "DURATION",
            "DISPOSITION",
            "STATUS",
        ],
        table,
    );
    Ok(())
}

/// The DURATION column: talk time of an answered call that ended, `ringing`, `active for 1m20s`,
/// or `-` for a call that ended unanswered.
fn call_duration(c: &CallRecordRow, now_ms: i64) -> String {
    match c.state.as_str() {
        "ringing" => "ringing".to_owned(),
        "active" => {
            let since = c.answered_at.unwrap_or(c.started_at);
            format!("active for {}", format_duration_ms(now_ms - since))
        }
        "ended" => c
            .talk_time_ms()
            .map_or_else(|| "-".to_owned(), format_duration_ms),
        other => other.to_owned(),
    }
}

/// `80_500` ms → `1m20s`; `0` → `0s`; hours as `1h02m05s`.
fn format_duration_ms(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// A call record as JSON for scripts: every stored field, `media` as a JSON value rather than
/// text, plus `duration_ms` (answer to end, or to now for a call in progress).
fn call_json(c: &CallRecordRow, now_ms: i64) -> serde_json::Value {
    let mut value = serde_json::to_value(c).unwrap_or(serde_json::Value::Null);
    if let serde_json::Value::Object(map) = &mut value {
        if let Some(media) = c
            .media
            .as_deref()
            .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
        {
            map.insert("media".into(), media);
        }
        let duration = match (c.answered_at, c.ended_at) {
            (Some(answered), Some(ended)) => Some(ended - answered),
            (Some(answered), None) if c.is_active() => Some(now_ms - answered),
            _ => None,
        };
        map.insert("duration_ms".into(), duration.map(|d| d.max(0)).into());
    }
    value
}

/// The password from `--password`, from standard input with `--password-stdin` or when it is not
/// a terminal, or else asked for twice on the terminal without echo.
fn read_password(args: &PasswordArgs, user: &str) -> anyhow::Result<String> {
    if let Some(password) = &args.password {
        return Ok(password.clone());
    }
    let stdin = std::io::stdin();
    if !args.password_stdin && stdin.is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {user}: "))
            .context("cannot read the password from the terminal")?;
        let second = rpassword::prompt_password("Repeat password: ")
            .context("cannot read the password from the terminal")?;
        if first != second {
            bail!("the passwords do not match");
        }
        return Ok(first);
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        bail!("no password on standard input (give it on the first line, or use --password)");
    }
    Ok(password.to_owned())
}

/// Prints left-aligned columns separated by two spaces.
fn print_table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = std::io::stdout().lock();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        // A closed pipe (`| head`) is not an error worth reporting.
        if writeln!(out, "{}", line.trim_end()).is_err() {
            return;
        }
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `3725` → `1h02m05s`; negative → `expired`.
fn format_secs(secs: i64) -> String {
    if secs <= 0 {
        return "expired".to_owned();
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s:02}s"),
        _ => format!("{h}h{m:02}m{s:02}s"),
    }
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS UTC`.
fn format_unix(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (the proleptic Gregorian algorithm of H. Hinnant's
    // `civil_from_days`, in eras of 400 years).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Formats Unix milliseconds as local ISO-8601 time (`$TZ` or the system zone, via jiff),
/// with `Z` for UTC.
fn local_iso(ms: i64) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return ms.to_string();
    };
    let zoned = ts.to_zoned(jiff::tz::TimeZone::system());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_durations() {
        assert_eq!(format_unix(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_unix(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_unix(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_secs(-5), "expired");
        assert_eq!(format_secs(42), "42s");
        assert_eq!(format_secs(125), "2m05s");
        assert_eq!(format_secs(3725), "1h02m05s");
    }

    #[test]
    fn user_import_csv() {
        let text = "username,password\r\n# comment\n\nu1,pw1\n\"u2\",\"p,w\"\"2\",1002,\"Bob, B.\"\nu3,pw3,,\n";
        let (users, lines) = parse_user_csv(text).unwrap();
        assert_eq!(lines, [4, 5, 6]);
        assert_eq!(users[0].username, "u1");
        assert_eq!(users[0].password, "pw1");
        assert_eq!(users[0].extension, None);
        assert_eq!(users[1].password, "p,w\"2");
        assert_eq!(users[1].extension.as_deref(), Some("1002"));
        assert_eq!(users[1].display_name.as_deref(), Some("Bob, B."));
        assert_eq!(
            (users[2].extension.as_ref(), users[2].display_name.as_ref()),
            (None, None)
        );
        let e = parse_user_csv("u1,pw1\nu2\n").unwrap_err().to_string();
        assert!(e.starts_with("line 2: expected"), "{e}");
        let e = parse_user_csv("u1,\"pw1\n").unwrap_err().to_string();
        assert!(e.starts_with("line 1: unterminated"), "{e}");
        assert!(Cli::try_parse_from(["confab", "user", "import", "users.csv"]).is_ok());
    }

    #[test]
    fn command_line_parses() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["confab", "user", "add", "bob", "--data-dir", "/tmp/x"]).unwrap();
        assert_eq!(cli.data_dir.as_deref(), Some(Path::new("/tmp/x")));
        assert!(Cli::try_parse_from([
            "confab",
            "user",
            "add",
            "bob",
            "--password",
            "a",
            "--password-stdin"
        ])
        .is_err());
    }
}

/// Raises the soft limit on open files to the hard limit: every call holds relay sockets (and
/// parked ones wait for reuse), every TCP/TLS/WebSocket phone a connection, and the usual soft
/// default (1,024) is far below what a server needs. Failure only costs capacity.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::debug!(
                from = soft,
                to = limit.rlim_max,
                "raised the open-file limit"
            );
        }
    }
}
