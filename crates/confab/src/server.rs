//! Wires transports, the protocol core and storage into a running server. (Lead engineer: the
//! real body is being written; this stub keeps the binary compiling meanwhile.)

pub async fn run(_config: crate::config::Config, _store: confab_store::Store) -> anyhow::Result<()> {
    anyhow::bail!("server not wired yet")
}
